"""A study read back from MLflow alone: its parent run and one row per trial (as fsl.tracking.recorder logs them).

Nothing here reads Ray's results folder, so a study run on another machine is read from its tracking URI.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fsl.tracking.run_store import ORPHANED_TAG, ROLE_TAG, STUDY_TAG, TRIAL_TAG, RunStore
from fsl.tracking.uri import failure_reason

FSL_TAGS = ("fsl.setting", "fsl.pretraining", "fsl.finetune", "fsl.cell", "fsl.stopped_early", "fsl.error")


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


def find_study(client: Any, experiment: str | None, study: str | None) -> tuple[Any, Any]:
    """The experiment and parent run of a study: by name (the latest of that name), or the latest study in the
    experiment (in any experiment when none is named). A missing one is a ValueError that lists what exists."""
    store = RunStore(client)
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in store.experiments())
            raise ValueError(f"--experiment {experiment}: no such experiment; there are: {', '.join(names) or 'none'}")
        experiments = [found]
    else:
        experiments = store.experiments()
    by_id = {e.experiment_id: e for e in experiments}
    where = f"experiment {experiment!r}" if experiment else "any experiment"
    if not by_id:
        raise ValueError(f"no experiments in this tracking store, so no study to report on in {where}")
    parents = store.studies(list(by_id))
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
    children = RunStore(client).trial_runs(experiment.experiment_id, parent.info.run_id)
    orphaned = [r for r in children if r.data.tags.get(ORPHANED_TAG) == "true"]
    children = [r for r in children if r.data.tags.get(ORPHANED_TAG) != "true"]
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
