"""The MLflow UI in a real browser (issue 4): a real `mlflow server` on 127.0.0.1, a tiny real ProtoNet study
logged to it over HTTP, and headless Chromium checking what a person reading the results sees: the study's
run with its trials nested under it, their lr / head_depth / augment params and val_acc metric, and the
compare view of two trials. Runs that are not nested, or lack a param, make the same checks fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import tiny_study_argv
from mlflow import MlflowClient
from mlflow_ui import (
    browser_available,
    check_compare_page,
    check_experiment_page,
    is_png,
    metric_column,
    open_chromium,
    param_column,
    save_screenshot,
    start_mlflow_server,
)

pytestmark = [pytest.mark.ray, pytest.mark.browser]

PARAMS = ("lr", "head_depth", "augment")
METRICS = ("val_acc",)

if not browser_available():
    message = "Debian's chromium and chromium-driver are not installed (bash scripts/setup-browser.sh)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)  # CI installs them: a missing browser is a broken setup there
    pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def driver():
    driver = open_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def study(local_ray, tiny_hw4_master: Path, tmp_path_factory, server):
    """A 2-trial study of 2 epochs on the tiny data, logged to the server; its runs as MLflow's API has them."""
    from fsl.commands.protonet_search import main

    tmp = tmp_path_factory.mktemp("study")
    argv = tiny_study_argv(tiny_hw4_master, tmp, "browser-protonet", "browser-study")
    argv[argv.index("--tracking-uri") + 1] = server.url
    argv += "--num-samples 2 --epochs 2 --episodes-per-epoch 2 --grace-period 2 --max-concurrent 1".split()
    assert main(argv) == 0
    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name("browser-protonet")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("fsl.role") == "study")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    return {"experiment_id": experiment.experiment_id, "parent": parent, "children": children}


def test_experiment_page_shows_the_trials_nested_under_the_study_with_params_and_metric(
    server, driver, study, tmp_path
):
    parent, children = study["parent"], study["children"]
    child_ids = [c.info.run_id for c in children]
    table = check_experiment_page(
        driver, server.url, study["experiment_id"], parent.info.run_id, child_ids, PARAMS, METRICS
    )
    assert table.names[parent.info.run_id] == parent.info.run_name == "browser-study"
    for child in children:
        shown = table.cells[child.info.run_id]
        assert table.names[child.info.run_id] == child.info.run_name
        for name in PARAMS:
            assert shown[param_column(name)] == child.data.params[name], name
        for name in METRICS:
            assert float(shown[metric_column(name)]) == pytest.approx(child.data.metrics[name], abs=1e-3), name
    screenshot = save_screenshot(driver, tmp_path / "experiment-runs.png")
    assert is_png(screenshot)


def test_compare_view_of_two_trials_loads_with_their_params(server, driver, study, tmp_path):
    children = study["children"]
    run_ids = [c.info.run_id for c in children]
    view = check_compare_page(driver, server.url, study["experiment_id"], run_ids, PARAMS, METRICS)
    for name in PARAMS:
        assert view.params[name] == [c.data.params[name] for c in children], name
    for name in METRICS:  # shown to 3 significant digits
        shown = [float(value) for value in view.metrics[name]]
        assert shown == pytest.approx([c.data.metrics[name] for c in children], rel=2e-3), name
    screenshot = save_screenshot(driver, tmp_path / "compare-runs.png")
    assert is_png(screenshot)


# --- the checks fail on a study that the UI would show wrongly ------------------------------------------------


def _log_study(client: MlflowClient, experiment: str, nested: bool, drop: dict[int, str] | None = None):
    """A parent run and two children with the trial params and a val_acc history; nested=False leaves out
    the children's mlflow.parentRunId tag, drop={i: param} leaves a param out of child i."""
    experiment_id = client.create_experiment(experiment)
    parent = client.create_run(experiment_id, run_name="broken-study", tags={"fsl.role": "study"}).info.run_id
    child_ids = []
    for i, (lr, head_depth, augment) in enumerate([("0.001", "0", "none"), ("0.0032", "2", "flip")]):
        tags = {"fsl.role": "trial", **({"mlflow.parentRunId": parent} if nested else {})}
        run_id = client.create_run(experiment_id, run_name=f"trial-{i}", tags=tags).info.run_id
        for name, value in {"lr": lr, "head_depth": head_depth, "augment": augment}.items():
            if (drop or {}).get(i) != name:
                client.log_param(run_id, name, value)
        for step in (1, 2):
            client.log_metric(run_id, "val_acc", 0.5 + 0.1 * i + 0.01 * step, step=step)
        client.set_terminated(run_id)
        child_ids.append(run_id)
    client.set_terminated(parent)
    return experiment_id, parent, child_ids


def test_checks_fail_when_the_children_are_not_nested_under_the_parent(server, driver):
    experiment_id, parent, child_ids = _log_study(MlflowClient(server.url), "not-nested", nested=False)
    with pytest.raises(AssertionError, match=f"parent run {parent} has no expander"):
        check_experiment_page(driver, server.url, experiment_id, parent, child_ids, PARAMS, METRICS)


def test_checks_fail_when_a_child_lacks_a_param(server, driver):
    experiment_id, parent, child_ids = _log_study(
        MlflowClient(server.url), "missing-param", nested=True, drop={1: "head_depth"}
    )
    with pytest.raises(AssertionError, match=rf"no value for {child_ids[1]}: params.`head_depth`$"):
        check_experiment_page(driver, server.url, experiment_id, parent, child_ids, PARAMS, METRICS)
    with pytest.raises(AssertionError, match=rf"param head_depth has no value for \['{child_ids[1]}'\]"):
        check_compare_page(driver, server.url, experiment_id, child_ids, PARAMS, METRICS)
