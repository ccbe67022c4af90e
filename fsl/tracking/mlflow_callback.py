"""The one place a study writes to MLflow: a Tune callback running in the study's driver process.

One parent run per study (run name = study name) and one child run per trial (tag mlflow.parentRunId).
Workers never open the tracking store, so a SQLite file is safe and a cluster needs no credentials on
workers. Runs are found again by tags (fsl.study_path, fsl.trial_id), and an epoch already logged is not
logged again, so a restarted trial or a resumed study writes into the same runs without duplicates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray.tune import Callback

from fsl.tracking.summary import error_line, write_study_summary
from fsl.tracking.uri import artifact_location_for
from fsl.train.run_state import DIVERGED

# Logged per epoch (step = epoch) on every child run, those a trial reports: the same names in every study.
EPOCH_METRICS = (
    "train_loss",
    "train_acc",
    "val_acc",
    "val_acc_ci95",
    "best_val_acc",
    "byol_loss",
    "z_std",
    "tau",
    "probe_acc",
    "probe_acc_ci95",
    "best_probe_acc",
    "current_lr",
    "epoch_time_s",
    "images_per_s",
)
ROLE_TAG, STUDY_TAG, STUDY_PATH_TAG, TRIAL_TAG = "fsl.role", "fsl.study", "fsl.study_path", "fsl.trial_id"
PARENT_TAG = "mlflow.parentRunId"
CELL_TAG = "fsl.cell"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def child_run_name(config: dict[str, Any], searched: list[str], fallback: str) -> str:
    """A readable name from the searched parameters, e.g. 'lr=3.2e-04 augment=flip head_depth=1'."""
    parts = []
    for name in searched:
        value = config.get(name)
        parts.append(f"{name}={value:.2e}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts) or fallback


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
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.study_name = study_name
        self.study_path = study_path
        self.searched = list(searched)
        self.study_params = dict(study_params)
        self.study_metrics = dict(study_metrics)
        self.results_dir = results_dir
        self.metric = metric
        self.tags = dict(tags or {})
        self.trial_tags = tuple(trial_tags)
        self.cell_label = cell_label  # an ablation's cell name from the trial config, e.g. "{k_shot}-shot"
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._children: dict[str, str] = {}
        self._last_step: dict[str, int] = {}
        self._reconciled = False

    # Tune pickles the callback with the experiment; the client and run caches are rebuilt after a restore.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_client", "experiment_id", "parent_run_id", "_children", "_last_step", "_reconciled"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("cell_label", None)  # a study snapshotted by a version without ablations
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    # --- runs -------------------------------------------------------------------------------------------

    def ensure_parent(self) -> str:
        """Find this study's parent run (by its storage path) or create it."""
        if self.parent_run_id is not None:
            return self.parent_run_id
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(
                self.experiment, artifact_location=artifact_location_for(self.tracking_uri, self.experiment)
            )
        else:
            self.experiment_id = experiment.experiment_id
        found = find_study_run(self.client, self.experiment_id, self.study_path)
        if found is not None:
            self.parent_run_id = found
            self.client.update_run(self.parent_run_id, status="RUNNING")
            return self.parent_run_id
        tags = {ROLE_TAG: "study", STUDY_TAG: self.study_name, STUDY_PATH_TAG: self.study_path, **self.tags}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=self.study_name)
        self.parent_run_id = run.info.run_id
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.parent_run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in self.study_metrics.items()],
            params=[Param(k, str(v)) for k, v in self.study_params.items()],
        )
        return self.parent_run_id

    def _find_child(self, trial_id: str) -> str | None:
        """The child run already logged for this trial (by an earlier process or attempt), if any."""
        if trial_id in self._children:
            return self._children[trial_id]
        parent = self.ensure_parent()
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT_TAG}` = {_quote(parent)} and tags.`{TRIAL_TAG}` = {_quote(trial_id)}",
            max_results=1,
        )
        if not found:
            return None
        run_id = found[0].info.run_id
        history = self.client.get_metric_history(run_id, self.metric)
        self._last_step[run_id] = max((m.step for m in history), default=0)
        self._children[trial_id] = run_id
        return run_id

    def child_run(self, trial: Any) -> str:
        """The trial's child run: found by its trial id (after a restart or resume) or created."""
        run_id = self._find_child(trial.trial_id)
        if run_id is not None:
            return run_id
        tags = {
            PARENT_TAG: self.ensure_parent(),
            ROLE_TAG: "trial",
            STUDY_TAG: self.study_name,
            TRIAL_TAG: trial.trial_id,
            **self.tags,
            **{f"fsl.{key}": str(trial.config[key]) for key in self.trial_tags if key in trial.config},
            **({CELL_TAG: self.cell_label.format(**trial.config)} if self.cell_label else {}),
        }
        name = child_run_name(trial.config, self.searched, trial.trial_id)
        run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(trial.config.items())])
        self._last_step[run_id] = 0
        self._children[trial.trial_id] = run_id
        return run_id

    # --- Tune hooks -------------------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        self.ensure_parent()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._reconciled:
            self._reconciled = True
            self.close_orphaned_children({trial.trial_id for trial in trials})

    def close_orphaned_children(self, known_trials: set[str]) -> None:
        """After a driver crash, a child run may belong to a trial that Tune's last snapshot never saw (Tune
        reruns it under a new id). An empty one is deleted (MLflow keeps it restorable); one with metrics is
        kept, closed as KILLED and tagged, so nothing logged is lost."""
        parent = self.ensure_parent()
        for run in self._runs_with_parent(parent):
            if run.data.tags.get(TRIAL_TAG) in known_trials or run.info.status != "RUNNING":
                continue
            if run.data.metrics:
                self.client.set_tag(run.info.run_id, "fsl.orphaned", "true")
                self.client.set_terminated(run.info.run_id, "KILLED")
            else:
                self.client.delete_run(run.info.run_id)

    def _runs_with_parent(self, parent: str) -> list[Any]:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], f"tags.`{PARENT_TAG}` = {_quote(parent)}", max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.child_run(trial)
        self.client.update_run(run_id, status="RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self.child_run(trial)
        if DIVERGED in result:
            return  # not an epoch: the notice that the trial is about to fail (on_trial_error records why)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= self._last_step.get(run_id, 0):
            return  # already logged before a restart
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(result[k]), now, step) for k in EPOCH_METRICS if k in result]
        self.client.log_batch(run_id, metrics=metrics)
        self._last_step[run_id] = step

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.child_run(trial)
        result = trial.last_result or {}
        epochs = int(trial.config.get("epochs", 0))
        stopped_early = bool(result) and int(result.get("epoch", 0)) < epochs
        now = int(time.time() * 1000)
        finals = [
            Metric(name, float(result[key]), now, int(result.get("epoch", 0)))
            for name, key in (
                (f"final_best_{self.metric}", f"best_{self.metric}"),
                (f"final_best_{self.metric}_ci95", f"best_{self.metric}_ci95"),
                ("best_epoch", "best_epoch"),
                ("epochs_run", "epoch"),
            )
            if key in result
        ]
        self.client.log_batch(run_id, metrics=finals, tags=[RunTag("fsl.stopped_early", str(stopped_early).lower())])
        self._log_best_model(run_id, trial, result)
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.child_run(trial)
        self.client.set_tag(run_id, "fsl.error", error_line(trial) or "unknown error")
        self.client.set_terminated(run_id, "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        parent = self.ensure_parent()
        for trial in trials:
            run_id = self._find_child(trial.trial_id)  # also those finished before a resume, for the summary
            if run_id is not None and trial.status not in ("TERMINATED", "ERROR"):
                self.client.set_terminated(run_id, "KILLED")
        summary = write_study_summary(trials, self, Path(self.results_dir))
        for path in summary.files:
            self.client.log_artifact(parent, str(path), artifact_path="results")
        if summary.best is not None:
            best = summary.best
            now = int(time.time() * 1000)
            logged = self.client.get_run(parent).data.metrics
            keys = (f"best_{self.metric}", f"best_{self.metric}_ci95")
            finals = {key: best[key] for key in keys}
            self.client.log_batch(
                parent,
                # A resumed study that ends with the same best logs nothing again.
                metrics=[Metric(k, float(v), now, 0) for k, v in finals.items() if logged.get(k) != float(v)],
                tags=[
                    RunTag("fsl.best_trial_id", best["trial_id"]),
                    RunTag("fsl.best_run_id", self._children.get(best["trial_id"], "")),
                ],
            )
        self.client.set_terminated(parent, "FINISHED")

    # --- helpers ----------------------------------------------------------------------------------------

    def _log_best_model(self, run_id: str, trial: Any, result: dict) -> None:
        checkpoint = _latest_checkpoint(trial, result)
        if checkpoint is None:
            return
        with checkpoint.as_directory() as directory:
            best_model = Path(directory) / "best_model.pt"
            if best_model.is_file():
                self.client.log_artifact(run_id, str(best_model), artifact_path="checkpoint")

    def metric_history(self, trial_id: str, key: str | None = None) -> list[tuple[int, float]]:
        run_id = self._children.get(trial_id)
        key = key or self.metric
        if run_id is None:
            return []
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))

    def child_run_id(self, trial_id: str) -> str | None:
        return self._children.get(trial_id)


def find_study_run(client: MlflowClient, experiment_id: str, study_path: str) -> str | None:
    """The parent run of the study stored at study_path, if there is one."""
    found = client.search_runs(
        [experiment_id],
        f"tags.`{STUDY_PATH_TAG}` = {_quote(study_path)} and tags.`{ROLE_TAG}` = 'study'",
        max_results=1,
    )
    return found[0].info.run_id if found else None


def _latest_checkpoint(trial: Any, result: dict) -> Any:
    """Tune's own checkpoint for in-process trials; for Ray Train trials, the path Train reported."""
    from ray.tune import Checkpoint

    if trial.checkpoint is not None:
        return trial.checkpoint
    path = result.get("checkpoint_path")
    if path:
        return Checkpoint(path, filesystem=trial.storage.storage_filesystem)
    return None
