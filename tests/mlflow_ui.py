"""Drive the MLflow UI in Debian's headless Chromium (scripts/setup-browser.sh installs it): start a real
`mlflow server`, open an experiment's runs table, the compare-runs view and the Models pages, and check what
they show.

The checks raise AssertionError naming what is missing, so a test fails on a study whose trials are not
nested under the study's run, lack a param, a dataset input or a source tag, whose parent lacks its metric, or
whose registered model lacks its alias. They read the page as MLflow 3's UI renders it: an ag-grid runs table
(one row per run, `row-id` = run id, one cell per column, `col-id` = ``params.`lr` `` or
``attributes.`Dataset` ``), nested runs grouped under their parent behind an expander, param, metric and
attribute columns chosen in the "Columns" selector, the compare view's tables of params and metrics, one
column per run, and the registered models' tables (`#/models`, `#/models/<name>`).
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_server import MlflowServer, free_port, start_mlflow_server  # noqa: F401  (the tests import them here)
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1600, 1000)
WAIT_S = 30.0
# What a table cell shows for a value the run does not have.
EMPTY_CELLS = {"", "-"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def browser_available() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


# --- the browser --------------------------------------------------------------------------------------------


def open_chromium(window: tuple[int, int] = WINDOW) -> WebDriver:
    """Headless Debian Chromium through its own chromedriver: both paths are given, so Selenium Manager (which
    would download a driver) never runs; SE_OFFLINE keeps it offline should it run anyway."""
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in CI and containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={window[0]},{window[1]}",
        "--lang=en-US",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def save_screenshot(driver: WebDriver, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"Chromium could not write the screenshot {path}")
    return path


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > len(PNG_MAGIC) and path.read_bytes()[:8] == PNG_MAGIC


def _wait(driver: WebDriver, condition, what: str, timeout_s: float = WAIT_S):
    """WebDriverWait that fails with an AssertionError saying what the page did not show."""
    try:
        return WebDriverWait(driver, timeout_s, ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        raise AssertionError(f"{what} (waited {timeout_s:.0f} s on {driver.current_url})") from None


# --- the experiment page: the runs table --------------------------------------------------------------------


def experiment_url(base_url: str, experiment_id: str) -> str:
    return f"{base_url}/#/experiments/{experiment_id}/runs"


def compare_url(base_url: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    runs = urllib.parse.quote(json.dumps(list(run_ids)))
    experiments = urllib.parse.quote(json.dumps([experiment_id]))
    return f"{base_url}/#/compare-runs?runs={runs}&experiments={experiments}"


RUN_NAME = "attributes.`Run Name`"


def param_column(name: str) -> str:
    return f"params.`{name}`"


def metric_column(name: str) -> str:
    return f"metrics.`{name}`"


def _row_cell(driver: WebDriver, run_id: str, column: str) -> WebElement | None:
    cells = driver.find_elements(By.CSS_SELECTOR, f"[role=row][row-id='{run_id}'] [role=gridcell][col-id='{column}']")
    return cells[0] if cells else None


def _run_link(driver: WebDriver, run_id: str) -> WebElement | None:
    cell = _row_cell(driver, run_id, RUN_NAME)
    if cell is None:
        return None
    links = cell.find_elements(By.CSS_SELECTOR, f"a[href$='/runs/{run_id}']")
    return links[0] if links else None


def _close_assistant(driver: WebDriver) -> None:
    """MLflow 3 opens its assistant panel beside the table on a first visit; it only takes room."""
    for button in driver.find_elements(By.CSS_SELECTOR, "[data-component-id='mlflow.assistant.chat_panel.close']"):
        if button.is_displayed():
            button.click()


def _column_selector_nodes(driver: WebDriver) -> list[tuple[str, str, WebElement]]:
    """The column selector's tree as (group, name, node): groups are Attributes, Metrics (n), Parameters (n)."""
    tree = driver.find_element(By.CSS_SELECTOR, "[data-testid=column-selector-tree]")
    nodes, group = [], ""
    for node in tree.find_elements(By.CSS_SELECTOR, ".du-bois-light-tree-treenode"):
        if node.get_attribute("aria-hidden") == "true":  # the tree's hidden measuring node
            continue
        text = node.text.strip()
        if node.find_elements(By.CSS_SELECTOR, ".du-bois-light-tree-switcher_open, .du-bois-light-tree-switcher_close"):
            group = text.split(" (")[0]
        else:
            nodes.append((group, text, node))
    return nodes


def choose_columns(driver: WebDriver, show: dict[str, Iterable[str]], hide: Iterable[str] = ()) -> None:
    """Tick columns in the runs table's "Columns" selector, as a person would: show = {"Parameters": [...],
    "Metrics": [...]}; hide = attribute columns to untick (room for the others)."""
    _wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=column-selection-dropdown]"),
        "the runs table has no Columns selector",
    )[0].click()
    search = _wait(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, "[role=dialog] input[placeholder='Search columns']"),
        "the Columns selector did not open",
    )
    wanted = [(group, name, True) for group, names in show.items() for name in names]
    wanted += [("Attributes", name, False) for name in hide]
    for group, name, on in wanted:
        search.send_keys(Keys.CONTROL, "a")
        search.send_keys(name)

        def node_for(d: WebDriver, group: str = group, name: str = name) -> WebElement | None:
            found = [node for g, text, node in _column_selector_nodes(d) if g == group and text == name]
            return found[0] if found else None

        node = _wait(driver, node_for, f"the Columns selector lists no {group[:-1].lower()} '{name}'")
        checked = "checkbox-checked" in (node.get_attribute("class") or "")
        if checked != on:
            node.find_element(By.CSS_SELECTOR, ".du-bois-light-tree-checkbox").click()
            _wait(
                driver,
                lambda d, n=node_for, on=on: ("checkbox-checked" in (n(d).get_attribute("class") or "")) == on,
                f"the Columns selector did not {'tick' if on else 'untick'} '{name}'",
            )
    search.send_keys(Keys.ESCAPE)
    _wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-testid=column-selector-tree]"), "close")


def _header(driver: WebDriver, column: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f"[role=columnheader][col-id='{column}']")


def _cells_in_view(driver: WebDriver, run_ids: Sequence[str], columns: Sequence[str]) -> bool:
    """Whether every run has its cell in each of the columns whose header is rendered: ag-grid renders a column's
    header and then, on a later animation frame, its cells."""
    shown = [column for column in columns if _header(driver, column)]
    return all(_row_cell(driver, run_id, column) is not None for column in shown for run_id in run_ids)


def _cell_texts(
    driver: WebDriver,
    run_ids: Sequence[str],
    columns: Sequence[str],
    read: Callable[[WebElement, str], Any] = lambda cell, column: cell.text.strip(),
) -> dict[tuple[str, str], Any]:
    """The text of each (run, column) cell (or what read(cell, column) makes of it). ag-grid renders only the
    columns in view, so the table is scrolled sideways until every cell has been seen (or the end is reached);
    at each position the cells of the columns in view are waited for (and read again when redrawn meanwhile)."""
    texts: dict[tuple[str, str], Any] = {}
    scroller = driver.find_elements(By.CSS_SELECTOR, ".ag-body-horizontal-scroll-viewport")
    body = driver.find_elements(By.CSS_SELECTOR, ".ag-center-cols-viewport")
    position = 0

    def scrolled(d: WebDriver) -> bool:
        """The grid's body has followed its scroll bar (and so has drawn the columns now in view)."""
        if not scroller or not body:
            return True
        return d.execute_script("return arguments[0].scrollLeft == arguments[1].scrollLeft", scroller[0], body[0])

    while True:
        _wait(
            driver,
            lambda d: scrolled(d) and _cells_in_view(d, run_ids, columns),
            f"the runs table does not render the cells of the columns in view (scrolled to {position} px)",
        )
        redrawn = False
        for run_id in run_ids:
            for column in columns:
                if (run_id, column) not in texts and (cell := _row_cell(driver, run_id, column)) is not None:
                    try:
                        texts[run_id, column] = read(cell, column)
                    except StaleElementReferenceException:  # ag-grid redrew the cell meanwhile: read it again
                        redrawn = True
        if redrawn:
            continue
        if len(texts) == len(run_ids) * len(columns) or not scroller:
            break
        width, scroll_width = driver.execute_script(
            "return [arguments[0].clientWidth, arguments[0].scrollWidth]", scroller[0]
        )
        if position + width >= scroll_width:
            break
        position += max(width // 2, 100)
        driver.execute_script("arguments[0].scrollLeft = arguments[1]", scroller[0], position)
    if position:
        driver.execute_script("arguments[0].scrollLeft = 0", scroller[0])
    return texts


@dataclass
class RunsTable:
    """What the runs table showed: each run's name, each child's cell text per column, and each run's name's
    distance from the left edge in px (the nesting indent)."""

    names: dict[str, str]
    cells: dict[str, dict[str, str]]
    indent: dict[str, float]


def open_runs_table(
    driver: WebDriver,
    base_url: str,
    experiment_id: str,
    parent_id: str,
    params: Sequence[str],
    metrics: Sequence[str],
    attributes: Sequence[str] = (),
    hide: Sequence[str] = ("Dataset", "Source", "Models"),
    widen_names: bool = True,
) -> None:
    """Open the experiment's runs table with the given param, metric and attribute columns ticked, and the
    attribute columns in hide unticked (by default the Dataset, Source and Models columns, for room); widen
    the Run Name column unless told not to (the UI keeps a column's width for the next visit)."""
    driver.get(experiment_url(base_url, experiment_id))
    _wait(driver, lambda d: _run_link(d, parent_id), f"the runs table does not show the parent run {parent_id}")
    _close_assistant(driver)
    choose_columns(driver, {"Attributes": attributes, "Parameters": params, "Metrics": metrics}, hide=hide)
    if widen_names:
        widen_column(driver, RUN_NAME, 300)  # trial names are long: "lr=2.29e-03 augment=none head_depth=3 ..."


def scroll_to_column(driver: WebDriver, column: str) -> None:
    """Scroll the runs table sideways until the column is the first one in view after the pinned ones (run
    name, created), e.g. for a screenshot: as in _cell_texts, half a view at a time until its header is drawn."""
    scroller = driver.find_elements(By.CSS_SELECTOR, ".ag-body-horizontal-scroll-viewport")
    body = driver.find_elements(By.CSS_SELECTOR, ".ag-center-cols-viewport")
    if not scroller or not body:
        return
    position = 0

    def scrolled_to(d: WebDriver, position: int) -> bool:
        d.execute_script("arguments[0].scrollLeft = arguments[1]", scroller[0], position)
        return d.execute_script("return arguments[0].scrollLeft == arguments[1].scrollLeft", scroller[0], body[0])

    while True:
        _wait(driver, lambda d, p=position: scrolled_to(d, p), f"the runs table did not scroll to {position} px")
        headers = _header(driver, column)
        if headers:
            # A header's style.left is its offset in the scrolled part of the table.
            left = driver.execute_script("return parseFloat(arguments[0].style.left) || 0", headers[0])
            _wait(driver, lambda d, p=int(left): scrolled_to(d, p), f"the runs table did not scroll to {column}")
            return
        width, scroll_width = driver.execute_script(
            "return [arguments[0].clientWidth, arguments[0].scrollWidth]", scroller[0]
        )
        if position + width >= scroll_width:
            raise AssertionError(f"the runs table has no column {column}")
        position += max(width // 2, 100)


def widen_column(driver: WebDriver, column: str, by_px: int) -> None:
    """Drag the column header's resize handle, as a person would."""
    headers = driver.find_elements(By.CSS_SELECTOR, f"[role=columnheader][col-id='{column}']")
    handles = headers[0].find_elements(By.CSS_SELECTOR, ".ag-header-cell-resize") if headers else []
    if handles and handles[0].is_displayed():
        ActionChains(driver).move_to_element(headers[0]).click_and_hold(handles[0]).move_by_offset(
            by_px, 0
        ).release().perform()


def expand_run(driver: WebDriver, parent_id: str, child_ids: Sequence[str]) -> None:
    """Open the parent's group of child runs (unless it is open), and wait for the children to be listed."""

    def expander(d: WebDriver) -> list[WebElement]:
        cell = _row_cell(d, parent_id, RUN_NAME)
        return cell.find_elements(By.TAG_NAME, "button") if cell is not None else []

    # The parent's row shows an expander, or (runs that are not nested) the children are rows of their own: either
    # way the table has drawn the runs, and whether the parent has an expander is known.
    listed = lambda d: all(_run_link(d, child) for child in child_ids)  # noqa: E731
    _wait(driver, lambda d: expander(d) or listed(d), "the runs table shows neither children nor an expander")
    buttons = expander(driver)
    if not buttons:
        raise AssertionError(
            f"the parent run {parent_id} has no expander in the runs table: no child runs are nested under it"
        )
    if not all(_run_link(driver, child) for child in child_ids):
        buttons[0].click()
    missing = lambda d: [child for child in child_ids if _run_link(d, child) is None]  # noqa: E731
    try:
        _wait(driver, lambda d: not missing(d), "")
    except AssertionError:
        raise AssertionError(
            f"after expanding the parent run {parent_id}, the runs table does not list its child runs {missing(driver)}"
        ) from None


def check_experiment_page(
    driver: WebDriver,
    base_url: str,
    experiment_id: str,
    parent_id: str,
    child_ids: Sequence[str],
    params: Sequence[str] = ("lr", "head_depth", "augment"),
    metrics: Sequence[str] = ("val_acc",),
) -> RunsTable:
    """The experiment's runs table shows the parent run with every child nested under it (listed after the
    parent is expanded, indented below it), and every child's params and metrics in their columns.
    Returns what it read, for the caller to compare with MLflow's API."""
    open_runs_table(driver, base_url, experiment_id, parent_id, params, metrics)
    expand_run(driver, parent_id, child_ids)
    rows = [row.get_attribute("row-id") for row in driver.find_elements(By.CSS_SELECTOR, "[role=row][row-id]")]
    order = list(dict.fromkeys(rows))
    links = {run_id: _run_link(driver, run_id) for run_id in (parent_id, *child_ids)}
    names = {run_id: link.get_attribute("textContent").strip() for run_id, link in links.items()}
    indent = {run_id: link.location["x"] for run_id, link in links.items()}
    for child in child_ids:
        if order.index(child) < order.index(parent_id):
            raise AssertionError(f"the child run {child} is listed above its parent run {parent_id}")
        if indent[child] <= indent[parent_id]:
            raise AssertionError(
                f"the child run {child} is not indented under the parent run {parent_id} "
                f"(run name at x={indent[child]}, the parent's at x={indent[parent_id]})"
            )
    columns = [param_column(p) for p in params] + [metric_column(m) for m in metrics]
    for column in columns:
        _wait(
            driver,
            lambda d, c=column: _header(d, c) or _cell_texts(d, child_ids[:1], [c]),
            f"the runs table has no column {column}",
        )
    texts = _cell_texts(driver, child_ids, columns)
    missing = [
        f"{run_id}: {column}"
        for run_id in child_ids
        for column in columns
        if texts.get((run_id, column), "") in EMPTY_CELLS
    ]
    if missing:
        raise AssertionError("the runs table shows no value for " + "; ".join(missing))
    cells = {run_id: {column: texts[run_id, column] for column in columns} for run_id in child_ids}
    return RunsTable(names=names, cells=cells, indent=indent)


# --- the runs table's attribute columns: datasets, source, version, models ------------------------------------

DATASET, SOURCE, VERSION, MODELS = (f"attributes.`{name}`" for name in ("Dataset", "Source", "Version", "Models"))


@dataclass
class DatasetCell:
    """A run's Dataset cell: each of the run's dataset inputs as the cell labels it, "name (digest)", and its
    context tag (training, evaluation), in the cell's order. The cell holds them all but shows only those that
    fit the column, then "…" and a "+N" button for the others (more = N)."""

    datasets: list[str]
    contexts: list[str]
    more: int

    @property
    def shown(self) -> list[str]:
        """The datasets the cell shows before its "+N" button."""
        return self.datasets[: len(self.datasets) - self.more]


def _dataset_cell(cell: WebElement) -> DatasetCell:
    buttons = cell.find_elements(By.CSS_SELECTOR, "[data-testid=open-dataset-drawer]")  # a dataset: opens its drawer
    contexts = []
    for button in buttons:
        # The label (a span titled with it) is followed by the context's tag.
        tag = button.find_elements(By.XPATH, "./ancestor::*[@title][1]/following-sibling::*[@role='status'][1]")
        contexts.append(_text(tag[0]) if tag else "")
    # The "+N" button opens a popover listing the datasets left out.
    badges = [_text(b) for b in cell.find_elements(By.CSS_SELECTOR, "button[aria-haspopup=dialog]")]
    more = next((int(badge[1:]) for badge in badges if re.fullmatch(r"\+\d+", badge)), 0)
    return DatasetCell(datasets=[_text(b) for b in buttons], contexts=contexts, more=more)


def _read_attribute_cell(cell: WebElement, column: str) -> Any:
    if column == DATASET:
        return _dataset_cell(cell)
    if column == MODELS:  # a run's logged and registered models, each a link (#/models/<name>/versions/<n>)
        return [a.get_dom_attribute("href") or "" for a in cell.find_elements(By.CSS_SELECTOR, "a[href]")]
    return _text(cell)  # textContent: also a cell partly scrolled out of the grid's view


@dataclass
class RunColumns:
    """What the runs table's attribute and metric columns showed for each run (the parent and its children):
    its Dataset cell, its Source (mlflow.source.name) and Version (mlflow.source.git.commit, shortened), the
    links of its Models cell and the text of each metric column (col-id -> text)."""

    datasets: dict[str, DatasetCell]
    source: dict[str, str]
    version: dict[str, str]
    models: dict[str, list[str]]
    metrics: dict[str, dict[str, str]]


def read_run_columns(
    driver: WebDriver,
    base_url: str,
    experiment_id: str,
    parent_id: str,
    child_ids: Sequence[str],
    metrics: Sequence[str] = ("val_acc",),
) -> RunColumns:
    """Open the runs table with its Dataset, Source, Models and Version columns and the given metric columns,
    expand the parent run, and read those cells of the parent and its children. A column that never renders
    for a run raises AssertionError; an empty cell is read as such (the check_* functions below judge it)."""
    open_runs_table(
        driver,
        base_url,
        experiment_id,
        parent_id,
        params=(),
        metrics=metrics,
        attributes=("Dataset", "Source", "Models", "Version"),
        hide=(),
        widen_names=False,
    )
    expand_run(driver, parent_id, child_ids)
    run_ids = [parent_id, *child_ids]
    columns = [DATASET, SOURCE, VERSION, MODELS, *(metric_column(m) for m in metrics)]
    cells = _cell_texts(driver, run_ids, columns, read=_read_attribute_cell)
    unread = [f"{run_id}: {column}" for run_id in run_ids for column in columns if (run_id, column) not in cells]
    if unread:
        raise AssertionError("the runs table renders no cell for " + "; ".join(unread))
    return RunColumns(
        datasets={run_id: cells[run_id, DATASET] for run_id in run_ids},
        source={run_id: cells[run_id, SOURCE] for run_id in run_ids},
        version={run_id: cells[run_id, VERSION] for run_id in run_ids},
        models={run_id: cells[run_id, MODELS] for run_id in run_ids},
        metrics={run_id: {metric_column(m): cells[run_id, metric_column(m)] for m in metrics} for run_id in run_ids},
    )


def check_dataset_column(table: RunColumns, run_ids: Sequence[str]) -> None:
    """Each run's Dataset cell shows a dataset (and its "+N" button no more than the others it holds)."""
    problems = []
    for run_id in run_ids:
        cell = table.datasets[run_id]
        if not cell.datasets:
            problems.append(f"no dataset for {run_id}")
        elif not cell.shown:
            problems.append(f"no dataset in view for {run_id} (+{cell.more} of {cell.datasets})")
    if problems:
        raise AssertionError("the runs table's Dataset column shows " + "; ".join(problems))


def check_source_columns(table: RunColumns, run_ids: Sequence[str]) -> None:
    """Each run's Source cell (mlflow.source.name) and Version cell (mlflow.source.git.commit) are filled."""
    problems = [
        f"no {what} for {run_id}"
        for run_id in run_ids
        for what, shown in (("source", table.source[run_id]), ("version", table.version[run_id]))
        if shown in EMPTY_CELLS
    ]
    if problems:
        raise AssertionError("the runs table's Source and Version columns show " + "; ".join(problems))


def check_run_metrics(table: RunColumns, run_id: str, metrics: Sequence[str]) -> None:
    """The run's row shows a value in each of these metric columns (a parent: the study's best)."""
    missing = [metric_column(m) for m in metrics if table.metrics[run_id].get(metric_column(m), "") in EMPTY_CELLS]
    if missing:
        raise AssertionError(f"the runs table shows no value for {run_id}: " + ", ".join(missing))


# --- the compare-runs view ----------------------------------------------------------------------------------


def _text(element: WebElement) -> str:
    """The element's text, also when it is scrolled out of its box (Selenium's .text is then empty)."""
    return (element.get_attribute("textContent") or "").strip()


def _compare_section(driver: WebDriver, section: str) -> WebElement | None:
    """The compare view's collapsible section with this title (Run details, Parameters, Metrics, Tags)."""
    found = driver.find_elements(
        By.XPATH,
        "//div[contains(@class,'collapse-item')]"
        f"[./div[contains(@class,'collapse-header')][normalize-space(.)='{section}']]",
    )
    return found[0] if found else None


def _compare_params(driver: WebDriver) -> dict[str, list[str]]:
    """The compare view's Parameters table: name -> one value per run."""
    section = _compare_section(driver, "Parameters")
    rows: dict[str, list[str]] = {}
    for row in section.find_elements(By.CSS_SELECTOR, "table tbody tr") if section is not None else []:
        names = row.find_elements(By.CSS_SELECTOR, "th")
        if names:
            rows[_text(names[0])] = [_text(td) for td in row.find_elements(By.CSS_SELECTOR, "td")]
    return rows


def _compare_metric(driver: WebDriver, name: str) -> list[str] | None:
    """The compare view's Metrics row of this metric: one value per run (None when it has no row). The
    section is two virtualised grids, names and values, of 45 px rows at the same offsets; the values grid
    is scrolled to the row so that it is rendered (and shown on a screenshot)."""
    section = _compare_section(driver, "Metrics")
    grids = section.find_elements(By.CSS_SELECTOR, ".ReactVirtualized__Grid") if section is not None else []
    if len(grids) < 2:
        return None
    links = [a for a in grids[0].find_elements(By.CSS_SELECTOR, "a[title='Plot chart']") if _text(a) == name]
    if not links:
        return None
    top = driver.execute_script("return arguments[0].parentElement.style.top", links[0])
    driver.execute_script("arguments[0].scrollTop = parseFloat(arguments[1])", grids[1], top)
    cells = _wait(
        driver,
        lambda d: grids[1].find_elements(By.XPATH, f".//div[contains(@style, 'top: {top};')]"),
        f"the compare view shows no values of the metric {name}",
    )
    cells.sort(key=lambda cell: float(driver.execute_script("return parseFloat(arguments[0].style.left)", cell)))
    return [_text(cell) for cell in cells]


@dataclass
class CompareView:
    run_ids: list[str]
    params: dict[str, list[str]]
    metrics: dict[str, list[str]]


def check_compare_page(
    driver: WebDriver,
    base_url: str,
    experiment_id: str,
    run_ids: Sequence[str],
    params: Sequence[str] = ("lr", "head_depth", "augment"),
    metrics: Sequence[str] = ("val_acc",),
) -> CompareView:
    """The compare-runs view of these runs loads: one column per run (by run id, in order), a value of each
    param for every run, and a row for each metric."""
    driver.get(compare_url(base_url, experiment_id, run_ids))
    title = f"Comparing {len(run_ids)} Runs"
    _wait(
        driver,
        lambda d: d.find_elements(
            By.XPATH, f"//*[self::h1 or self::h2 or self::span][starts-with(normalize-space(.), '{title}')]"
        ),
        f"the compare view does not say '{title}'",
    )
    shown = _wait(
        driver,
        lambda d: (
            [
                _text(a)
                for a in d.find_elements(By.CSS_SELECTOR, "table.mlflow-compare-run-table thead a[href*='/runs/']")
            ]
            or None
        ),
        "the compare view lists no run ids",
    )
    if shown != list(run_ids):
        raise AssertionError(f"the compare view shows the runs {shown}, not {list(run_ids)}")
    _wait(driver, _compare_params, "the compare view shows no Parameters table")
    table = _compare_params(driver)
    problems = []
    for name in params:
        values = table.get(name)
        if values is None:
            problems.append(f"param {name} has no row")
        elif len(values) != len(run_ids) or any(v in EMPTY_CELLS for v in values):
            empty = [run for run, v in zip(run_ids, values, strict=False) if v in EMPTY_CELLS]
            problems.append(f"param {name} has no value for {empty or 'some runs'} (row {values})")
    _wait(driver, lambda d: _compare_section(d, "Metrics"), "the compare view shows no Metrics section")
    shown_metrics = {}
    for name in metrics:
        values = _compare_metric(driver, name)
        if values is None:
            problems.append(f"metric {name} has no row")
        elif len(values) != len(run_ids) or any(v in EMPTY_CELLS for v in values):
            problems.append(f"metric {name} has no value for some runs (row {values})")
        shown_metrics[name] = values
    if problems:
        raise AssertionError("the compare view of " + ", ".join(run_ids) + ": " + "; ".join(problems))
    # Bring the runs' names and params into view (the page opens on its plots), for a screenshot.
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", _compare_section(driver, "Run details"))
    return CompareView(run_ids=shown, params={name: table[name] for name in params}, metrics=shown_metrics)


# --- the Models pages: registered models, their versions and aliases -----------------------------------------


def models_url(base_url: str) -> str:
    return f"{base_url}/#/models"


def model_url(base_url: str, name: str) -> str:
    return f"{base_url}/#/models/{urllib.parse.quote(name)}"


def _close_dialogs(driver: WebDriver) -> None:
    """MLflow 3 greets the Models page with a modal about its new registry UI; it hides the page."""
    close = "[role=dialog] button[aria-label=Close]"
    for button in driver.find_elements(By.CSS_SELECTOR, close):
        if button.is_displayed():
            button.click()
    _wait(
        driver,  # the dialog's root (the dialog and its mask, which fades out) is hidden
        lambda d: not any(e.is_displayed() for e in d.find_elements(By.XPATH, "//*[@role='dialog']/..")),
        "the Models page's dialog did not close",
    )


def _cells_by_header(row: WebElement) -> dict[str, WebElement]:
    """The row's cells by the text of their column's header (the tables are role=table grids of divs)."""
    table = row.find_element(By.XPATH, "./ancestor::*[@role='table'][1]")
    headers = [_text(h) for h in table.find_elements(By.CSS_SELECTOR, "[role=columnheader]")]
    return dict(zip(headers, row.find_elements(By.CSS_SELECTOR, "[role=cell]"), strict=False))


def _alias_tags(element: WebElement) -> list[str]:
    """The alias tags in the element ("@ champion"), by the alias each is titled with."""
    return [tag.get_attribute("title") or "" for tag in element.find_elements(By.CSS_SELECTOR, "[role=status][title]")]


def _version_of(link: WebElement) -> str:
    """The version number a link to #/models/<name>/versions/<number> points to."""
    return (link.get_dom_attribute("href") or "").rsplit("/versions/", 1)[-1]


@dataclass
class RegisteredModelView:
    """What the Models pages showed of a registered model: on the list (#/models), its "Latest version" cell
    and its "Aliased versions" (alias -> version number); on its own page (#/models/<name>), the aliases of
    each listed version (version number -> aliases)."""

    name: str
    latest: str
    aliased: dict[str, str]
    versions: dict[str, list[str]]


def check_registered_model(
    driver: WebDriver, base_url: str, name: str, version: str, alias: str, screenshots: Path | None = None
) -> RegisteredModelView:
    """The Models page lists the registered model `name` with `alias` on `version`, and the model's own page
    lists that version with the alias. screenshots: a folder for a screenshot of each page (registered-models.png,
    registered-model.png)."""
    problems = []
    href = f"#/models/{urllib.parse.quote(name)}"
    driver.get(models_url(base_url))
    row = _wait(
        driver,
        lambda d: (
            d.find_elements(By.XPATH, f"//*[@data-testid='model-list-table']//*[@role='row'][.//a[@href='{href}']]")
            or [None]
        )[0],
        f"the Models page does not list the registered model {name}",
    )
    cells = _cells_by_header(row)
    latest = _text(cells["Latest version"]) if "Latest version" in cells else ""
    links = cells["Aliased versions"].find_elements(By.CSS_SELECTOR, "a[href]") if "Aliased versions" in cells else []
    aliased = {tag: _version_of(link) for link in links for tag in _alias_tags(link)}  # "@ champion: Version 1"
    if aliased.get(alias) != version:
        problems.append(f"the Models page shows no alias {alias} on version {version} (aliased versions: {aliased})")
    _close_dialogs(driver)
    _close_assistant(driver)
    if screenshots is not None:
        save_screenshot(driver, screenshots / "registered-models.png")

    driver.get(model_url(base_url, name))
    version_href = f"{href}/versions/{version}"

    def version_row(d: WebDriver) -> WebElement | None:
        # The model's own details (created time) come with the registered model and so with its aliases.
        loaded = [e for e in d.find_elements(By.CSS_SELECTOR, "[data-testid=descriptions-item-content]") if _text(e)]
        rows = d.find_elements(By.XPATH, f"//*[@role='row'][.//a[@href='{version_href}']]")
        return rows[0] if loaded and rows else None

    row = _wait(driver, version_row, f"the page of the registered model {name} does not list version {version}")
    _close_assistant(driver)
    versions = {}
    for each in driver.find_elements(By.XPATH, f"//*[@role='row'][.//a[starts-with(@href, '{href}/versions/')]]"):
        cells = _cells_by_header(each)
        link = each.find_element(By.CSS_SELECTOR, f"a[href^='{href}/versions/']")
        versions[_version_of(link)] = _alias_tags(cells["Aliases"]) if "Aliases" in cells else []
    if alias not in versions.get(version, []):
        problems.append(f"its page shows no alias {alias} on version {version} (aliases: {versions})")
    if screenshots is not None:
        save_screenshot(driver, screenshots / "registered-model.png")
    if problems:
        raise AssertionError(f"the registered model {name}: " + "; ".join(problems))
    return RegisteredModelView(name=name, latest=latest, aliased=aliased, versions=versions)
