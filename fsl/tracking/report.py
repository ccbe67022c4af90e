"""A study's report rebuilt from its MLflow runs alone (the parent run and one child per trial, as
fsl.tracking.mlflow_callback logs them): best trials, optimisation history, learning curves, Optuna's
hyperparameter importance, accuracy against learning rate per augmentation, and the settings A-E table.

Nothing here reads Ray's results folder, so a study run on another machine is reported from its tracking URI.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsl.tracking.mlflow_callback import PARENT_TAG, ROLE_TAG, STUDY_TAG, TRIAL_TAG, _quote
from fsl.tracking.settings_table import SETTINGS_PNG, plot_settings, settings_markdown, settings_table
from fsl.tracking.summary import draw_curves, markdown_table
from fsl.tracking.uri import failure_reason

REPORT_MD, TRIALS_CSV = "report.md", "trials.csv"
HISTORY_PNG, CURVES_PNG, IMPORTANCE_PNG, LR_AUGMENT_PNG = "history.png", "curves.png", "importance.png", "lr.png"
# Every file a report may write: a rerun removes those of an earlier run first, so none is stale.
REPORT_FILES = (REPORT_MD, TRIALS_CSV, HISTORY_PNG, CURVES_PNG, IMPORTANCE_PNG, LR_AUGMENT_PNG, SETTINGS_PNG)
ARTIFACT_DIR = "report"
AUGMENT_PARAMS = ("augment", "augment_strength")  # ProtoNet's policy names, BYOL's strength
LOG_SPAN = 100.0  # values spanning two decades or more are read on a log scale
FSL_TAGS = ("fsl.setting", "fsl.pretraining", "fsl.finetune", "fsl.cell", "fsl.stopped_early", "fsl.error")


# --- reading a study from MLflow ----------------------------------------------------------------------------


@dataclass
class StudyRuns:
    """A study as MLflow holds it: the parent run and one row per trial (best first)."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    parent_id: str
    study_name: str
    parent_status: str
    parent_params: dict[str, str]
    parent_metrics: dict[str, float]
    parent_tags: dict[str, str]
    metric: str
    trials: pd.DataFrame  # run_id, trial_id, run_name, status, start_order, best_<metric>(_ci95), params.*, tags.*
    histories: dict[str, list[tuple[int, float]]]  # run id -> (epoch, metric)
    shown: list[str]  # the parameters that tell trials apart (those in the child run names)
    left_out: int = 0  # child runs of trials that Tune reran under another id (tag fsl.orphaned)

    @property
    def value_key(self) -> str:
        return f"best_{self.metric}"

    @property
    def ci_key(self) -> str:
        return f"best_{self.metric}_ci95"

    @property
    def space(self) -> dict[str, str]:
        return parse_search_space(self.parent_params.get("search_space"), self.parent_params.get("grid"))


def existing_tracking_uri(flag: str | None) -> str:
    """The tracking URI as the studies resolve it (--tracking-uri, $MLFLOW_TRACKING_URI, ./mlflow.db), where a
    SQLite file must already exist: MLflow would otherwise create an empty store and find nothing in it."""
    from fsl.tracking.uri import resolve_tracking_uri

    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri or uri.startswith("sqlite:///"):
        source = "--tracking-uri" if flag else "MLFLOW_TRACKING_URI" if uri else "the default tracking URI"
        path = Path(uri.split("sqlite:///", 1)[1]).expanduser() if uri else Path.cwd() / "mlflow.db"
        if not path.is_file():
            raise ValueError(f"{source} {uri or 'sqlite:///' + str(path)}: no MLflow database at {path.resolve()}")
    return resolve_tracking_uri(flag)


def check_reachable(client: Any, uri: str) -> None:
    """One cheap request, so that an unreachable server or an unreadable store is one clear error."""
    try:
        client.search_experiments(max_results=1)
    except Exception as err:  # MLflow raises several types for a refused connection, a timeout, a bad database
        raise ValueError(f"tracking URI {uri}: cannot read it ({failure_reason(err)})") from None


def _all_runs(client: Any, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiments(client: Any) -> list[Any]:
    experiments, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        experiments.extend(page)
        token = page.token
        if not token:
            return experiments


def find_study(client: Any, experiment: str | None, study: str | None) -> tuple[Any, Any]:
    """The experiment and parent run of a study: by name (the latest of that name), or the latest study in the
    experiment (in any experiment when none is named). A missing one is a ValueError that lists what exists."""
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in _experiments(client))
            raise ValueError(f"--experiment {experiment}: no such experiment; there are: {', '.join(names) or 'none'}")
        experiments = [found]
    else:
        experiments = _experiments(client)
    by_id = {e.experiment_id: e for e in experiments}
    where = f"experiment {experiment!r}" if experiment else "any experiment"
    if not by_id:
        raise ValueError(f"no experiments in this tracking store, so no study to report on in {where}")
    role = f"tags.`{ROLE_TAG}` = 'study'"
    parents = _all_runs(client, list(by_id), role, order_by=["attributes.start_time DESC"])
    if study is not None:
        chosen = [r for r in parents if study in (r.data.tags.get(STUDY_TAG), r.info.run_name, r.info.run_id)]
        if not chosen:
            names = list(dict.fromkeys(r.data.tags.get(STUDY_TAG, r.info.run_name) for r in parents))
            listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ValueError(f"--study {study}: no such study in {where}; the studies there: {listed or 'none'}")
        parents = chosen
    if not parents:
        raise ValueError(f"no study in {where} (no run tagged {ROLE_TAG}=study)")
    parent = parents[0]
    return by_id[parent.info.experiment_id], parent


def parse_values(values: Sequence[str | None]) -> list[Any]:
    """MLflow params are strings: read a column back as bools, ints or floats when all its values are, else
    leave it as text. Missing values stay None."""
    present = [v for v in values if v is not None]
    if present and all(v in ("True", "False") for v in present):
        return [None if v is None else v == "True" for v in values]
    if present and all(re.fullmatch(r"[+-]?\d+", v) for v in present):
        return [None if v is None else int(v) for v in values]
    try:
        return [None if v is None else float(v) for v in values]
    except ValueError:
        return list(values)


def study_metric(child_metric_keys: Sequence[str], parent_metric_keys: Sequence[str]) -> str | None:
    """The study's objective, as the callback names it: children's final_best_<metric>, else the parent's
    best_<metric> or untrained_<metric>, else the children's per-epoch best_<metric>. The most common wins."""
    patterns = (
        (child_metric_keys, r"final_best_(.+)"),
        (parent_metric_keys, r"best_(.+)"),
        (parent_metric_keys, r"untrained_(.+)"),
        (child_metric_keys, r"best_(.+)"),
    )
    for keys, pattern in patterns:
        found = [m.group(1) for key in keys if (m := re.fullmatch(pattern, key)) and not key.endswith("_ci95")]
        if found:
            return pd.Series(found).value_counts().index[0]
    return None


def parse_search_space(search_space: str | None, grid: str | None = None) -> dict[str, str]:
    """The parent's search_space and grid params ('lr=[0.0001, 0.03] (log); augment={none, flip}') as
    {name: description}; 'none (fixed)' is empty."""
    space = {}
    for text in (search_space, grid):
        for part in (text or "").split("; "):
            name, sep, description = part.partition("=")
            if sep and re.fullmatch(r"\w+", name.strip()):
                space[name.strip()] = description.strip()
    return space


def names_in_run_names(run_names: Sequence[str]) -> list[str]:
    """The searched names of child runs named 'lr=1.00e-03 augment=none ...', in order of first appearance."""
    names: dict[str, None] = {}
    for run_name in run_names:
        for token in (run_name or "").split():
            name, sep, _ = token.partition("=")
            if sep and re.fullmatch(r"\w+", name):
                names[name] = None
    return list(names)


def _best_step(history: list[tuple[int, float]]) -> int | None:
    finite = [(step, value) for step, value in history if math.isfinite(value)]
    return max(finite, key=lambda sv: (sv[1], -sv[0]))[0] if finite else None


def read_study(client: Any, experiment: Any, parent: Any, tracking_uri: str, metric: str | None = None) -> StudyRuns:
    """Every child run of the parent (by tag mlflow.parentRunId) as one row per trial, best first."""
    filter_string = f"tags.`{PARENT_TAG}` = {_quote(parent.info.run_id)}"
    children = _all_runs(client, [experiment.experiment_id], filter_string)
    orphaned = [r for r in children if r.data.tags.get("fsl.orphaned") == "true"]
    children = [r for r in children if r.data.tags.get("fsl.orphaned") != "true"]
    keys = [key for r in children for key in r.data.metrics]
    metric = metric or study_metric(keys, list(parent.data.metrics)) or "val_acc"
    value_key, ci_key = f"best_{metric}", f"best_{metric}_ci95"

    histories: dict[str, list[tuple[int, float]]] = {}
    rows = []
    for run in sorted(children, key=lambda r: (r.info.start_time or 0, r.data.tags.get(TRIAL_TAG, ""))):
        run_id, metrics, tags = run.info.run_id, run.data.metrics, run.data.tags
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))
        histories[run_id] = history
        best_step = metrics.get("best_epoch", _best_step(history))
        value = metrics.get(f"final_best_{metric}", metrics.get(value_key))
        if value is None and best_step is not None:
            value = dict(history).get(int(best_step))
        ci95 = metrics.get(f"final_best_{metric}_ci95")
        if ci95 is None and best_step is not None:
            # A trial that never completed (the study was interrupted): the interval at its best epoch.
            ci_history = dict((m.step, m.value) for m in client.get_metric_history(run_id, f"{metric}_ci95"))
            ci95 = ci_history.get(int(best_step))
        rows.append(
            {
                "start_order": len(rows) + 1,
                "trial_id": tags.get(TRIAL_TAG, run_id[:8]),
                "run_name": run.info.run_name,
                "status": run.info.status,
                "stopped_early": tags.get("fsl.stopped_early") == "true",
                value_key: float("nan") if value is None else float(value),
                ci_key: float("nan") if ci95 is None else float(ci95),
                "best_epoch": None if best_step is None else int(best_step),
                "epochs_run": int(metrics.get("epochs_run", max((s for s, _ in history), default=0))),
                "run_id": run_id,
                **{f"tags.{tag}": tags[tag] for tag in FSL_TAGS if tag in tags},
                **{f"params.{name}": text for name, text in run.data.params.items()},
            }
        )
    trials = pd.DataFrame(rows)
    for column in [c for c in trials.columns if c.startswith("params.")]:
        trials[column] = pd.Series(
            parse_values(trials[column].where(trials[column].notna(), None).tolist()), dtype=object
        )
    if not trials.empty:
        # A failed trial (e.g. diverged after some good epochs) is listed, but never ranked above one that finished.
        trials["_failed"] = trials["status"] == "FAILED"
        trials = trials.sort_values(
            ["_failed", value_key, "start_order"], ascending=[True, False, True], na_position="last"
        )
        trials = trials.drop(columns="_failed").reset_index(drop=True)
    shown = [
        n for n in names_in_run_names(trials.get("run_name", pd.Series(dtype=str)).tolist()) if f"params.{n}" in trials
    ]
    return StudyRuns(
        tracking_uri=tracking_uri,
        experiment_name=experiment.name,
        experiment_id=experiment.experiment_id,
        parent_id=parent.info.run_id,
        study_name=parent.data.tags.get(STUDY_TAG, parent.info.run_name),
        parent_status=parent.info.status,
        parent_params=dict(parent.data.params),
        parent_metrics=dict(parent.data.metrics),
        parent_tags=dict(parent.data.tags),
        metric=metric,
        trials=trials,
        histories=histories,
        shown=shown,
        left_out=len(orphaned),
    )


# --- pure pieces ------------------------------------------------------------------------------------------------


def running_best(values: Sequence[float]) -> list[float]:
    """The best (highest) value so far after each trial; NaN until the first finite value."""
    best, out = float("nan"), []
    for value in values:
        if value is not None and math.isfinite(value) and not (best >= value):
            best = float(value)
        out.append(best)
    return out


def infer_distribution(values: Sequence[Any], log: bool = False) -> Any:
    """An Optuna distribution for the values a parameter took: numbers -> Int/FloatDistribution over the observed
    range (log scale when `log`, or when the values span two decades or more); strings and bools ->
    CategoricalDistribution. None when the parameter did not vary."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distinct = list(dict.fromkeys(v for v in values if v is not None))
    if len(distinct) < 2:
        return None
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct)
    if not numeric:
        return CategoricalDistribution(tuple(sorted(distinct, key=str)))
    low, high = min(distinct), max(distinct)
    log = (log or (low > 0 and high / low >= LOG_SPAN)) and low > 0
    if all(isinstance(v, int) for v in distinct):
        return IntDistribution(int(low), int(high), log=log and low >= 1)
    return FloatDistribution(float(low), float(high), log=log)


@dataclass
class Importance:
    importances: dict[str, float]  # best first; empty when they could not be computed
    distributions: dict[str, Any]
    n_trials: int
    evaluator: str
    note: str = ""  # why nothing was computed, or what to keep in mind


def importance_params(runs: StudyRuns) -> list[str]:
    """The searched parameters (search space and grid, as the parent records them; else those named in the child
    runs), and an ablation's cell key, that exist as params."""
    names = list(runs.space) or list(runs.shown)
    key = cell_key(runs)
    if key is not None and key not in names:
        names.insert(0, key)
    return [n for n in names if f"params.{n}" in runs.trials]


def cell_key(runs: StudyRuns) -> str | None:
    """The parameter that defines an ablation's cells (tag fsl.cell): the first one named in the child runs that
    is the same within every cell and differs between cells."""
    trials = runs.trials
    if "tags.fsl.cell" not in trials or trials["tags.fsl.cell"].nunique() < 2:
        return None
    for name in runs.shown:
        values = trials[f"params.{name}"].astype(str)
        if values.groupby(trials["tags.fsl.cell"]).nunique().eq(1).all() and values.nunique() > 1:
            return name
    return None


def param_importances(
    trials: pd.DataFrame, names: Sequence[str], value_key: str, space: dict[str, str] | None = None, seed: int = 0
) -> Importance:
    """Optuna's fANOVA importance (seeded) over an in-memory study rebuilt from the scored trials."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    evaluator = f"fANOVA (optuna {optuna.__version__}, seed {seed})"
    space = space or {}
    scored = trials[np.isfinite(trials[value_key].astype(float))] if not trials.empty else trials
    if len(scored) < 2:
        return Importance(
            {}, {}, len(scored), evaluator, f"needs at least 2 scored trials; this study has {len(scored)}"
        )
    distributions = {}
    for name in names:
        column = f"params.{name}"
        values = scored[column].tolist() if column in scored else []
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            continue  # a parameter some trials lack (a study resumed with other code) cannot be compared
        distribution = infer_distribution(values, log=space.get(name, "").endswith("(log)"))
        if distribution is not None:
            distributions[name] = distribution
    if not distributions:
        return Importance({}, {}, len(scored), evaluator, "no searched parameter took more than one value")
    values = scored[value_key].astype(float)
    if values.nunique() < 2:
        return Importance({}, distributions, len(scored), evaluator, "every scored trial has the same score")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" on every report
    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={name: _optuna_value(row[f"params.{name}"]) for name in distributions},
                distributions=distributions,
                value=float(row[value_key]),
            )
            for _, row in scored.iterrows()
        ]
    )
    try:
        result = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    except (RuntimeError, ValueError) as err:
        return Importance({}, distributions, len(scored), evaluator, f"Optuna could not compute it ({err})")
    return Importance({k: float(v) for k, v in result.items()}, distributions, len(scored), evaluator)


def _optuna_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def format_value(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.3g}" if math.isfinite(value) else "-"
    return "-" if value is None else str(value)


def describe_distribution(distribution: Any) -> str:
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return "categorical {" + ", ".join(map(str, distribution.choices)) + "}"
    kind = "int" if type(distribution).__name__.startswith("Int") else "float"
    return f"{kind} [{distribution.low:g}, {distribution.high:g}]" + (" log" if distribution.log else "")


def _epoch_text(epoch: Any) -> str:
    return "-" if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)) else str(int(epoch))


def status_text(row: pd.Series) -> str:
    status = str(row["status"]).lower()
    if row.get("stopped_early"):
        status += ", stopped early"
    error = row.get("tags.fsl.error")
    if isinstance(error, str) and error:
        status += f": {error[:80]}"
    return status


def best_trials_table(runs: StudyRuns) -> pd.DataFrame:
    """Every trial, best first: rank, start order, the searched values, the best metric ± ci95, epochs, status."""
    rows = []
    for rank, (_, row) in enumerate(runs.trials.iterrows(), start=1):
        value, ci95 = row[runs.value_key], row[runs.ci_key]
        score = "-" if not math.isfinite(value) else f"{value:.4f}" + (f" ± {ci95:.4f}" if math.isfinite(ci95) else "")
        epochs = row.get("params.epochs")
        rows.append(
            {
                "rank": rank,
                "trial": row["trial_id"],
                "start #": row["start_order"],
                **{name: format_value(row.get(f"params.{name}")) for name in runs.shown},
                runs.metric: score,
                "best epoch": _epoch_text(row["best_epoch"]),
                "epochs": f"{row['epochs_run']}/{epochs}" if epochs is not None else str(row["epochs_run"]),
                "status": status_text(row),
                "run id": row["run_id"],
            }
        )
    return pd.DataFrame(rows)


def cell_table(runs: StudyRuns) -> pd.DataFrame:
    """One row per fsl.cell: its number of trials and its best trial."""
    if "tags.fsl.cell" not in runs.trials:
        return pd.DataFrame()
    rows = []
    for cell, trials in runs.trials.dropna(subset=["tags.fsl.cell"]).groupby("tags.fsl.cell", sort=True):
        best = trials.iloc[0]  # trials are sorted best first
        value, ci95 = best[runs.value_key], best[runs.ci_key]
        rows.append(
            {
                "cell": cell,
                "trials": len(trials),
                runs.metric: "-" if not math.isfinite(value) else f"{value:.4f} ± {ci95:.4f}",
                "best trial": best["trial_id"],
                **{name: format_value(best.get(f"params.{name}")) for name in runs.shown if name != "cell"},
            }
        )
    return pd.DataFrame(rows)


def settings_results(runs: StudyRuns) -> pd.DataFrame:
    """The trials in the shape fsl.tracking.settings_table reads (setting, pretraining, finetune, best first)."""
    trials = runs.trials
    if "tags.fsl.setting" not in trials:
        return pd.DataFrame()
    frame = trials.dropna(subset=["tags.fsl.setting"])

    def column(name: str) -> pd.Series:
        for key in (f"tags.fsl.{name}", f"params.{name}"):
            if key in frame:
                return frame[key]
        return pd.Series(["?"] * len(frame), index=frame.index)

    return pd.DataFrame(
        {
            "setting": frame["tags.fsl.setting"],
            "pretraining": column("pretraining"),
            "finetune": column("finetune"),
            runs.value_key: frame[runs.value_key],
            runs.ci_key: frame[runs.ci_key],
            "trial_id": frame["trial_id"],
        }
    )


def lr_augment_column(runs: StudyRuns) -> str | None:
    return next((f"params.{n}" for n in AUGMENT_PARAMS if f"params.{n}" in runs.trials), None)


# --- figures --------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(runs: StudyRuns, path: Path) -> Path:
    """Each trial's best metric in start order, and the best so far."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    trials = runs.trials.sort_values("start_order")
    order, values = trials["start_order"].to_numpy(), trials[runs.value_key].astype(float).to_numpy()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter(order, values, s=28, color="#4c72b0", zorder=3, label=f"trial's best {runs.metric}")
    ax.step(order, running_best(values), where="post", color="#dd8452", linewidth=2, label="best so far")
    baseline = runs.parent_metrics.get(f"untrained_{runs.metric}")
    if baseline is not None:
        ax.axhline(baseline, color="#9e9e9e", linestyle="--", linewidth=1, label="untrained model")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (in start order)")
    ax.set_ylabel(runs.metric)
    ax.set_title(f"Optimisation history of {runs.study_name}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(runs: StudyRuns, path: Path) -> Path:
    """The metric per epoch of every trial, the best one bold."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.2))
    trials = runs.trials
    best = trials["trial_id"].iloc[0] if math.isfinite(trials[runs.value_key].iloc[0]) else None
    draw_curves(ax, [(r.trial_id, runs.histories.get(r.run_id, [])) for r in trials.itertuples()], best)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(runs.metric)
    ax.set_title(f"{runs.metric} per epoch of every trial (early-stopped trials end early)", fontsize=10)
    ax.grid(alpha=0.3)
    if best is not None:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_importance(importance: Importance, path: Path) -> Path:
    plt = _pyplot()
    names = list(importance.importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.4))
    ax.barh(names, [importance.importances[n] for n in names], color="#4c72b0")
    ax.set_xlabel("importance (sums to 1)")
    ax.set_title(f"Hyperparameter importance: {importance.evaluator}, {importance.n_trials} trials", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lr_augment(runs: StudyRuns, augment: str, path: Path) -> Path:
    """The best metric against lr (log axis), one colour per augmentation (a colour scale for a strength)."""
    plt = _pyplot()
    trials = runs.trials[np.isfinite(runs.trials[runs.value_key].astype(float))]
    name = augment.removeprefix("params.")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    values = trials[augment]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        points = ax.scatter(trials["params.lr"], trials[runs.value_key], c=values.astype(float), cmap="viridis", s=36)
        fig.colorbar(points, ax=ax, label=name)
    else:
        for value in sorted(values.dropna().unique(), key=str):
            chosen = trials[values == value]
            ax.scatter(chosen["params.lr"], chosen[runs.value_key], s=36, label=f"{name}={value}")
        ax.legend(fontsize=8, loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("lr (log scale)")
    ax.set_ylabel(f"best {runs.metric}")
    ax.set_title(f"best {runs.metric} against learning rate, by {name}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the report -----------------------------------------------------------------------------------------------


@dataclass
class Report:
    path: Path
    files: list[Path] = field(default_factory=list)  # report.md first, then the CSV and the figures


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _table_markdown(table: pd.DataFrame) -> str:
    return markdown_table(table.map(lambda v: _escape(v) if isinstance(v, str) else v))


def write_report(runs: StudyRuns, out: Path, seed: int = 0) -> Report:
    """report.md with its figures beside it, and trials.csv (every trial's row as read from MLflow)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    files: list[Path] = []
    trials, metric = runs.trials, runs.metric
    lines = [f"# Study report: {runs.study_name}", ""]
    lines += _header(runs)

    lines += ["", "## Best trials", ""]
    if trials.empty:
        lines.append("The study has no trial runs.")
    else:
        trials.to_csv(out / TRIALS_CSV, index=False)
        files.append(out / TRIALS_CSV)
        lines.append(
            f"Every trial, best first, scored by its best epoch's `{metric}` (± the 95% interval of that epoch). "
            f"All columns as read from MLflow: [{TRIALS_CSV}]({TRIALS_CSV})."
        )
        lines += ["", _table_markdown(best_trials_table(runs)).rstrip()]

    scored = trials[np.isfinite(trials[runs.value_key].astype(float))] if not trials.empty else trials
    lines += ["", "## Optimisation history", ""]
    if scored.empty:
        lines.append("No trial reported a score, so there is no history to draw.")
    else:
        files.append(plot_history(runs, out / HISTORY_PNG))
        first_best = int(scored["start_order"].iloc[0])
        lines.append(
            f"Each trial's best `{metric}` in the order the trials started, and the best so far. The best "
            f"({scored[runs.value_key].iloc[0]:.4f}) came from trial {first_best} of {len(trials)}."
        )
        lines += ["", f"![Optimisation history]({HISTORY_PNG})", ""]
        files.append(plot_curves(runs, out / CURVES_PNG))
        lines += [f"![{metric} per epoch]({CURVES_PNG})"]

    lines += ["", "## Hyperparameter importance", ""]
    importance = param_importances(trials, importance_params(runs), runs.value_key, runs.space, seed)
    if not importance.importances:
        lines.append(f"Not computed: {importance.note}.")
    else:
        files.append(plot_importance(importance, out / IMPORTANCE_PNG))
        text = (
            f"{importance.evaluator} of each searched parameter for `{metric}`, over the {importance.n_trials} "
            "scored trials rebuilt as an Optuna study (each scored by its best epoch)."
        )
        if trials["stopped_early"].any():
            text += " Trials stopped early by ASHA count with their shorter training."
        if importance.n_trials < 20:
            text += f" With {importance.n_trials} trials this is a rough guide."
        lines.append(text)
        table = pd.DataFrame(
            [
                {
                    "parameter": n,
                    "importance": f"{v:.3f}",
                    "distribution": describe_distribution(importance.distributions[n]),
                }
                for n, v in importance.importances.items()
            ]
        )
        lines += ["", _table_markdown(table).rstrip(), "", f"![Hyperparameter importance]({IMPORTANCE_PNG})"]

    lines += ["", "## Accuracy against learning rate per augmentation", ""]
    lines.append(_lr_augment_section(runs, scored, out, files))

    settings = settings_results(runs)
    if not settings.empty:
        table = settings_table(settings.sort_values(runs.value_key, ascending=False, na_position="last"), metric)
        lines += ["", "## Settings A–E", ""]
        if table.empty:
            lines.append("No setting has a scored trial yet.")
        else:
            files.append(plot_settings(table, out / SETTINGS_PNG, metric))
            lines += [settings_markdown(table, metric).rstrip(), "", f"![Settings]({SETTINGS_PNG})"]

    cells = cell_table(runs)
    if not cells.empty:
        lines += ["", "## Best trial per cell", "", _table_markdown(cells).rstrip()]
        lines += _ablation_section(runs)

    (out / REPORT_MD).write_text("\n".join(lines) + "\n")
    return Report(out / REPORT_MD, [out / REPORT_MD, *files])


def _ablation_section(runs: StudyRuns) -> list[str]:
    """The ablation's own table (each cell's best model on the shared report episodes, paired differences), as
    the study logged it on its parent run; the per-cell table above is the search's selection scores."""
    import tempfile

    import mlflow

    try:
        with tempfile.TemporaryDirectory() as folder:
            path = mlflow.artifacts.download_artifacts(
                f"runs:/{runs.parent_id}/results/ablation.md", dst_path=folder, tracking_uri=runs.tracking_uri
            )
            text = Path(path).read_text()
    except Exception:  # an ablation that has not finished has no table yet
        return ["", "The ablation's table on its report episodes is not on the parent run (not finished?)."]
    return ["", "## The ablation's table (report episodes, paired differences)", "", text.rstrip()]


def _header(runs: StudyRuns) -> list[str]:
    trials, metric = runs.trials, runs.metric
    p, tags = runs.parent_params, runs.parent_tags
    lines = [
        f"- Tracking URI `{runs.tracking_uri}`, experiment `{runs.experiment_name}` ({runs.experiment_id}), "
        f"parent run `{runs.parent_id}` ({runs.parent_status.lower()})",
        f"- Metric `{metric}`, maximised" + (f", measured on {p['evaluation']}" if "evaluation" in p else ""),
    ]
    baseline = runs.parent_metrics.get(f"untrained_{metric}")
    if baseline is not None:
        ci = runs.parent_metrics.get(f"untrained_{metric}_ci95")
        lines.append(f"- Untrained model on the same data: {baseline:.4f}" + (f" ± {ci:.4f}" if ci is not None else ""))
    if "search_space" in p:
        lines.append(
            f"- Search space: {_escape(p['search_space'])}" + (f"; grid {_escape(p['grid'])}" if "grid" in p else "")
        )
    provenance = [f"data `{p.get('data', tags.get('fsl.dataset'))}`"] if "data" in p or "fsl.dataset" in tags else []
    provenance += [
        f"{label} `{tags[tag]}`"
        for label, tag in (("hash", "fsl.dataset_hash"), ("code", "fsl.code_version"), ("hardware", "fsl.hardware"))
        if tag in tags
    ]
    if provenance:
        lines.append("- " + ", ".join(provenance))
    if not trials.empty:
        counts = trials["status"].str.lower().value_counts().sort_index().to_dict()
        stopped = int(trials["stopped_early"].sum())
        text = f"- Trials: {len(trials)} ({', '.join(f'{v} {k}' for k, v in counts.items())}"
        text += f"; {stopped} stopped early)" if stopped else ")"
        lines.append(text)
    if runs.left_out:
        lines.append(
            f"- Left out: {runs.left_out} run(s) tagged fsl.orphaned (trials that Tune reran under another id "
            "after a crash; their rerun is in the table)"
        )
    return lines


def _lr_augment_section(runs: StudyRuns, scored: pd.DataFrame, out: Path, files: list[Path]) -> str:
    augment = lr_augment_column(runs)
    if "params.lr" not in runs.trials or augment is None:
        missing = " and ".join(
            n for n, present in (("lr", "params.lr" in runs.trials), ("augment", augment)) if not present
        )
        return f"Skipped: the trials have no {missing} parameter."
    if scored.empty:
        return "Skipped: no trial reported a score."
    lrs = scored["params.lr"]
    if lrs.nunique() < 2:
        return f"Skipped: every scored trial used lr {format_value(lrs.iloc[0])}."
    files.append(plot_lr_augment(runs, augment, out / LR_AUGMENT_PNG))
    return (
        f"Each trial's best `{runs.metric}` against its learning rate, coloured by "
        f"`{augment.removeprefix('params.')}`.\n\n![{runs.metric} against lr]({LR_AUGMENT_PNG})"
    )


def log_report(client: Any, parent_id: str, report: Report) -> None:
    """The report's files on the parent run under report/ (a rerun overwrites the same paths)."""
    for path in report.files:
        client.log_artifact(parent_id, str(path), artifact_path=ARTIFACT_DIR)
