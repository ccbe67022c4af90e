"""Replay a study's saved results into MLflow: what a study could not log while its tracking store was away.

Ray keeps every trial's reported results (`result.json`), its status and checkpoints in the study's folder, and
the study's MLflow callback (with its tracking URI, experiment, names and tags) in `tuner.pkl`. The replay runs
that same callback over the saved trials; each of its actions adds only what MLflow lacks (a child run found by
its trial id, epochs after the last one logged, a run closed only once), so replaying twice changes nothing.
No Ray is started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsl.tracking.mlflow_callback import MLflowStudyCallback
from fsl.tracking.outage import set_driver_env_defaults
from fsl.tracking.uri import failure_reason

TUNER_STATE = "tuner.pkl"
FINAL = ("TERMINATED", "ERROR")


@dataclass(frozen=True)
class SyncReport:
    study_name: str
    tracking_uri: str
    trials: int
    children_created: int
    epochs_logged: int
    runs_closed: int
    study_finished: bool  # every trial ended, so the parent got the summary and was closed

    @property
    def changed(self) -> bool:
        return bool(self.children_created or self.epochs_logged or self.runs_closed)


def _filesystem(study_path: str) -> tuple[Any, str]:
    import pyarrow.fs

    if "://" in study_path:
        return pyarrow.fs.FileSystem.from_uri(study_path)
    return pyarrow.fs.LocalFileSystem(), str(Path(study_path).expanduser().resolve())


def load_study_callback(study_path: str) -> MLflowStudyCallback:
    """The MLflow callback the study ran with, as Tune saved it with the study."""
    import ray.cloudpickle

    fs, path = _filesystem(study_path)
    try:
        with fs.open_input_file(f"{path}/{TUNER_STATE}") as f:
            state = ray.cloudpickle.loads(f.readall())
    except (FileNotFoundError, OSError):
        raise ValueError(
            f"{study_path}: not a study folder (no {TUNER_STATE}); give the folder <storage>/<study name>"
        ) from None
    for callback in state["_run_config"].callbacks or ():
        if isinstance(callback, MLflowStudyCallback):
            return callback
    raise ValueError(f"{study_path}: this study was run without MLflow tracking")


def saved_results(trial: Any) -> list[dict[str, Any]]:
    """Every result the trial reported, in order, from its result.json in the study's storage."""
    fs = trial.storage.storage_filesystem
    path = f"{trial.storage.trial_fs_path}/result.json"
    try:
        with fs.open_input_stream(path) as f:
            text = f.readall().decode()
    except (FileNotFoundError, OSError):
        return []  # never reported
    results = []
    for line in text.splitlines():
        if line.strip():
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash: what follows it was never complete either
    return results


def sync_study(study_path: str, tracking_uri: str | None = None) -> SyncReport:
    """Bring MLflow up to date with the study saved at study_path (optionally into another tracking store)."""
    from ray.tune import ExperimentAnalysis

    set_driver_env_defaults()
    callback = load_study_callback(study_path)
    try:
        callback.start_replay(tracking_uri)
    except Exception as err:  # MLflow raises many types for a store that does not answer
        raise ValueError(f"MLflow at {callback.record.tracking_uri} failed: {failure_reason(err)}") from None
    trials = ExperimentAnalysis(study_path).trials
    for trial in trials:
        callback.replay_trial(trial, saved_results(trial))
    finished = all(trial.status in FINAL for trial in trials)
    if finished:
        callback.replay_end(trials)
    counts = callback.runs.counts
    return SyncReport(
        study_name=callback.record.study_name,
        tracking_uri=callback.record.tracking_uri,
        trials=len(trials),
        children_created=counts["children"],
        epochs_logged=counts["epochs"],
        runs_closed=counts["closed"],
        study_finished=finished,
    )
