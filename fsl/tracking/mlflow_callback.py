"""The one place a study writes to MLflow: a Tune callback running in the study's driver process.

Each Tune event becomes one idempotent write (fsl.tracking.recorder) put on a queue that outlives a tracking
store's outage (fsl.tracking.outage). Workers never open the tracking store, so a SQLite file is safe and a
cluster needs no credentials on workers. What a study could not log before it ended is replayed from Ray's
results by `studies/sync_mlflow.py` (fsl.tracking.sync), which runs this same callback over the saved trials.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ray.tune import Callback

from fsl.tracking.outage import WriteQueue, set_driver_env_defaults
from fsl.tracking.recorder import StudyRecord, StudyRecorder
from fsl.tracking.summary import StudySummary, write_study_summary


class MLflowStudyCallback(Callback):
    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        study_name: str,
        study_path: str,
        searched: list[str],
        study_params: dict[str, Any],
        study_metrics: dict[str, float],
        results_dir: str,
        metric: str = "val_acc",
        tags: dict[str, str] | None = None,
        trial_tags: tuple[str, ...] = (),
        cell_label: str | None = None,
        datasets: tuple[dict[str, Any], ...] = (),
        model_groups: tuple[str, ...] = (),
        register_model: str | None = None,
        study_file: str = "",
    ) -> None:
        self.record = StudyRecord(
            tracking_uri=tracking_uri,
            experiment=experiment,
            study_name=study_name,
            study_path=study_path,
            searched=list(searched),
            study_params=dict(study_params),
            study_metrics=dict(study_metrics),
            metric=metric,
            tags=dict(tags or {}),
            trial_tags=tuple(trial_tags),
            cell_label=cell_label,
            datasets=tuple(datasets),
            model_groups=tuple(model_groups),
            register_model=register_model,
            study_file=study_file,
        )
        self.results_dir = results_dir
        self._start()

    def _start(self, replaying: bool = False) -> None:
        """The runtime parts, rebuilt in every process (Tune pickles the callback with the study)."""
        self.queue = WriteQueue(self.record.tracking_uri, self.record.study_path, on_offline=self._forget)
        self.runs = StudyRecorder(self.record, replaying, is_offline=lambda: self.queue.offline)
        self._reconciled = False

    def _forget(self) -> None:
        self.runs.forget()

    def __getstate__(self) -> dict[str, Any]:
        return {"record": self.record, "results_dir": self.results_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "record" not in state:  # saved by a version that kept the record's fields on the callback itself
            names = {f.name for f in dataclasses.fields(StudyRecord)}
            state = {"record": StudyRecord(**{k: v for k, v in state.items() if k in names}), **state}
        self.record, self.results_dir = state["record"], state["results_dir"]
        self._start()

    @property
    def pending(self) -> int:
        """Tracking actions not yet done (the store did not answer)."""
        return self.queue.pending

    # --- Tune hooks -------------------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        set_driver_env_defaults()
        self.queue.submit(self.runs.ensure_parent)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._reconciled:
            self._reconciled = True
            known = {trial.trial_id for trial in trials}
            self.queue.submit(lambda: self.runs.close_orphaned_children(known))
        else:
            self.queue.drain()  # catches up as soon as the store answers again, without waiting for an event

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.queue.submit(lambda: self.runs.start(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        result = dict(result)  # as it is now: the queue may run it later
        self.runs.remember(trial.trial_id, result)
        self.queue.submit(lambda: self.runs.result(trial, result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.queue.submit(lambda: self.runs.complete(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.queue.submit(lambda: self.runs.error(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.queue.submit(lambda: self.runs.find_children(trials), force=True)
        summary = write_study_summary(trials, self.runs, Path(self.results_dir))
        self.queue.submit(lambda: self.runs.finish(trials, summary), force=True)
        self.queue.warn_if_left()

    # --- replay (fsl.tracking.sync) ---------------------------------------------------------------------

    def start_replay(self, tracking_uri: str | None = None) -> None:
        """From here on, only add what MLflow lacks (optionally in another tracking store); never reopen a run."""
        if tracking_uri:
            self.record = dataclasses.replace(self.record, tracking_uri=tracking_uri)
        self._start(replaying=True)
        self.queue.with_lock_retry(self.runs.ensure_parent)

    def replay_trial(self, trial: Any, results: list[dict]) -> None:
        """Log what MLflow lacks of one saved trial: its epochs, then its end (finished or failed)."""
        for result in results:
            self.runs.remember(trial.trial_id, result)
            self.queue.with_lock_retry(lambda result=result: self.runs.result(trial, result))
        if trial.status == "TERMINATED":
            self.queue.with_lock_retry(lambda: self.runs.complete(trial))
        elif trial.status == "ERROR":
            self.queue.with_lock_retry(lambda: self.runs.error(trial))

    def replay_end(self, trials: list) -> StudySummary:
        summary = write_study_summary(trials, self.runs, Path(self.results_dir))
        self.queue.with_lock_retry(lambda: self.runs.finish(trials, summary))
        return summary
