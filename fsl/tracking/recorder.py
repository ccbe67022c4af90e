"""What each event of a study writes to MLflow: its parent run, one child run per trial, epochs, ends, best trial.

Every write is idempotent: a run is found again by its tags (fsl.run_store) before one is created, an epoch
already logged is not logged again, a run is closed once. So a restarted trial, a resumed study, an action
retried after an outage (fsl.tracking.outage) or a replay from Ray's results (fsl.tracking.sync) adds only what
MLflow lacks. The Tune callback (fsl.tracking.mlflow_callback) maps Tune's events onto these writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from ray.tune.result import AUTO_RESULT_KEYS

from fsl.tracking.run_store import (
    CELL_TAG,
    NODES_TAG,
    ORPHANED_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STUDY_PATH_TAG,
    STUDY_TAG,
    TERMINAL,
    TRIAL_TAG,
    RunStore,
)
from fsl.tracking.summary import StudySummary, error_line
from fsl.train.run_state import DIVERGED

MODEL_URI_TAG = "fsl.model_uri"  # on a run whose best weights are an MLflow Model; on the parent, the best's
REGISTERED_TAG = "fsl.registered_model"  # on the parent: the registered version of its best trial

# What Tune adds to every result (times, host, counters): not the trial's own numbers, so not logged per epoch.
NOT_TRIAL_METRICS = frozenset([*AUTO_RESULT_KEYS, "epoch", "done", "should_checkpoint"])


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Every number a trial reported for an epoch, by its own name: logged on its child run (step = epoch)."""
    return {
        key: float(value)
        for key, value in result.items()
        if key not in NOT_TRIAL_METRICS and isinstance(value, int | float) and not isinstance(value, bool)
    }


def dataset_inputs(datasets: tuple[dict[str, Any], ...]) -> list[DatasetInput]:
    """MLflow's entities for fsl.tracking.datasets' dicts, with each one's mlflow.data.context tag."""
    return [
        DatasetInput(
            Dataset(**{k: v for k, v in d.items() if k != "context"}),
            tags=[InputTag(MLFLOW_DATASET_CONTEXT, d["context"])],
        )
        for d in datasets
    ]


def result_nodes(result: dict) -> list[str]:
    """The Ray node ids a result came from: every rank's node for a Ray Train trial, else the trial's own."""
    nodes = result.get("worker_nodes") or result.get("node_id") or ""
    return list(dict.fromkeys(n for n in str(nodes).split(",") if n and n != "?"))


def child_run_name(config: dict[str, Any], searched: list[str], fallback: str) -> str:
    """A readable name from the searched parameters, e.g. 'lr=3.2e-04 augment=flip head_depth=1'."""
    parts = []
    for name in searched:
        value = config.get(name)
        parts.append(f"{name}={value:.2e}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts) or fallback


@dataclass
class StudyRecord:
    """What a study's runs say about it, fixed when the study starts (Tune pickles it with the study)."""

    tracking_uri: str
    experiment: str
    study_name: str
    study_path: str
    searched: list[str]
    study_params: dict[str, Any]
    study_metrics: dict[str, float]
    metric: str = "val_acc"
    tags: dict[str, str] = field(default_factory=dict)
    trial_tags: tuple[str, ...] = ()  # config keys also set as fsl.<key> tags on each child run
    cell_label: str | None = None  # an ablation's cell name from the trial config, e.g. "{k_shot}-shot"
    datasets: tuple[dict[str, Any], ...] = ()  # the study's data as MLflow datasets (fsl.tracking.datasets)
    # Trial config keys whose every value gets its best trial as a model too (the Office-Home setting, a cell).
    model_groups: tuple[str, ...] = ()
    register_model: str | None = None  # the registered model the best trials become versions of
    study_file: str = ""  # the study's study.yaml (fsl.study.study_file), kept on the parent run


class StudyRecorder:
    """A study's writes to one tracking store, with what this process knows of the runs there.

    With replaying (fsl.tracking.sync), a run is never reopened: a replay cannot know whether a trial still
    runs elsewhere. is_offline tells metric_history not to ask a store that is away.
    """

    def __init__(
        self, record: StudyRecord, replaying: bool = False, is_offline: Callable[[], bool] = lambda: False
    ) -> None:
        self.record = record
        self.replaying = replaying
        self.is_offline = is_offline
        self._store: RunStore | None = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._children: dict[str, str] = {}  # trial id -> child run id
        self._seen: dict[str, dict[int, float]] = {}  # trial id -> {epoch: metric}, as reported to this process
        self.counts = {"children": 0, "epochs": 0, "closed": 0}  # what this process added (a replay reports it)
        # Child runs created without their params yet (a write after create_run failed): logged on the next try.
        self._params_pending: set[str] = set()
        self.forget()

    def forget(self) -> None:
        """Drop what this process believes the store holds: an interrupted write may have changed it, so it is
        read back on the next try. The trial -> run map stays (a run, once created, is that trial's run)."""
        self._last_step: dict[str, int] = {}  # child run id -> last epoch logged
        self._run_status: dict[str, str] = {}  # child run id -> its MLflow status, as last seen or set
        self._nodes: dict[str, list[str]] = {}  # child run id -> the Ray nodes its trial ran on, as in its tag
        # True once this process has listed the parent's children: a trial not among them has none, so a new
        # trial's run is created without a search (whose cost grows with the runs in the store).
        self._all_children_known = False
        # Child runs this process created and wrote to without a failure: what they hold is what it wrote.
        self._fresh: set[str] = set()
        self._store = None  # a new connection

    # --- the study's view used by its summary (fsl.tracking.summary.RunLookup) -----------------------------

    @property
    def searched(self) -> list[str]:
        return self.record.searched

    @property
    def metric(self) -> str:
        return self.record.metric

    @property
    def store(self) -> RunStore:
        if self._store is None:
            self._store = RunStore.at(self.record.tracking_uri)
        return self._store

    @property
    def client(self) -> MlflowClient:
        return self.store.client

    def child_run_id(self, trial_id: str) -> str | None:
        return self._children.get(trial_id)

    def remember(self, trial_id: str, result: dict) -> None:
        """Keep a result's metric for the summary's curves, whether or not the store takes it now."""
        if DIVERGED not in result and self.metric in result and "epoch" in result:
            self._seen.setdefault(trial_id, {})[int(result["epoch"])] = float(result[self.metric])

    def metric_history(self, trial_id: str, key: str | None = None) -> list[tuple[int, float]]:
        """A trial's (epoch, value) history: as reported to this process, else (a trial finished before a
        resume) from MLflow; empty when neither has it."""
        key = key or self.metric
        if key == self.metric and self._seen.get(trial_id):
            return sorted(self._seen[trial_id].items())
        run_id = self._children.get(trial_id)
        if run_id is None or self.is_offline():
            return []
        try:
            return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))
        except Exception:  # the store went away: a summary without this curve rather than none
            return []

    # --- runs -------------------------------------------------------------------------------------------

    def ensure_parent(self) -> str:
        """Find this study's parent run (by its storage path) or create it."""
        if self.parent_run_id is not None:
            return self.parent_run_id
        r = self.record
        self.experiment_id = self.store.experiment_id(r.experiment, r.tracking_uri)
        found = self.store.study_run(self.experiment_id, r.study_path)
        if found is not None:
            self.parent_run_id = found.info.run_id
            if not self.replaying and found.info.status != "RUNNING":
                self.client.update_run(self.parent_run_id, status="RUNNING")  # a resumed study runs again
            return self.parent_run_id
        tags = {ROLE_TAG: "study", STUDY_TAG: r.study_name, STUDY_PATH_TAG: r.study_path, **r.tags}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=r.study_name)
        self._log_inputs(run.info.run_id)
        if r.study_file:
            self.client.log_text(run.info.run_id, r.study_file, "study.yaml")
        now = int(time.time() * 1000)
        self.client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in r.study_metrics.items()],
            params=[Param(k, str(v)) for k, v in r.study_params.items()],
        )
        # Only now: a parent whose params failed to log is found (and completed) on the next try.
        self.parent_run_id = run.info.run_id
        return self.parent_run_id

    def find_child(self, trial_id: str) -> str | None:
        """The child run already logged for this trial (by an earlier process or attempt), if any, with its
        last logged epoch and status read back from MLflow when this process does not know them."""
        run_id = self._children.get(trial_id)
        if run_id is not None and run_id in self._last_step:
            return run_id
        if run_id is None:
            if self._all_children_known:
                return None
            parent = self.ensure_parent()
            run = self.store.trial_run(self.experiment_id or "", parent, trial_id)
            if run is None:
                return None
        else:
            run = self.client.get_run(run_id)
        run_id = run.info.run_id
        self._nodes[run_id] = [n for n in run.data.tags.get(NODES_TAG, "").split(",") if n]
        history = self.client.get_metric_history(run_id, self.metric)
        self._last_step[run_id] = max((m.step for m in history), default=0)
        self._run_status[run_id] = run.info.status
        self._children[trial_id] = run_id
        if not run.data.params:
            self._params_pending.add(run_id)  # an earlier process created it and stopped before its params
        return run_id

    def child_run(self, trial: Any) -> str:
        """The trial's child run: found by its trial id (after a restart or resume) or created."""
        run_id = self.find_child(trial.trial_id)
        if run_id is not None:
            if run_id in self._params_pending:
                self._log_params(run_id, trial)
            return run_id
        r = self.record
        tags = {
            PARENT_TAG: self.ensure_parent(),
            ROLE_TAG: "trial",
            STUDY_TAG: r.study_name,
            TRIAL_TAG: trial.trial_id,
            **r.tags,
            **{f"fsl.{key}": str(trial.config[key]) for key in r.trial_tags if key in trial.config},
            **({CELL_TAG: r.cell_label.format(**trial.config)} if r.cell_label else {}),
        }
        name = child_run_name(trial.config, r.searched, trial.trial_id)
        run_id = self.client.create_run(self.experiment_id or "", tags=tags, run_name=name).info.run_id
        # Known at once: when a later write fails (a locked store) and the action is tried again, this run is
        # found here rather than created a second time.
        self._children[trial.trial_id] = run_id
        self._last_step[run_id] = 0
        self._run_status[run_id] = "RUNNING"
        self._nodes[run_id] = []
        self._fresh.add(run_id)
        self.counts["children"] += 1
        self._params_pending.add(run_id)
        self._log_params(run_id, trial)
        return run_id

    def _log_inputs(self, run_id: str) -> None:
        """The study's datasets as the run's inputs (MLflow's store keeps one input per dataset and run)."""
        if self.record.datasets:
            self.client.log_inputs(run_id, datasets=dataset_inputs(self.record.datasets))

    def _log_params(self, run_id: str, trial: Any) -> None:
        # Inputs first: a run with its params has both (find_child retries a run without params).
        self._log_inputs(run_id)
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(trial.config.items())])
        self._params_pending.discard(run_id)

    # --- one write per event ------------------------------------------------------------------------------

    def start(self, trial: Any) -> None:
        run_id = self.child_run(trial)
        if self._run_status.get(run_id) != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")  # a trial restored by a resumed study
            self._run_status[run_id] = "RUNNING"

    def result(self, trial: Any, result: dict) -> None:
        run_id = self.child_run(trial)
        if DIVERGED in result:
            return  # not an epoch: the notice that the trial is about to fail (error() records why)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= self._last_step.get(run_id, 0):
            return  # already logged before a restart
        now = int(time.time() * 1000)
        metrics = [Metric(k, value, now, step) for k, value in epoch_metrics(result).items()]
        # Where the trial ran, kept as it moves (a lost node, a restart elsewhere): every node, in order.
        known = self._nodes.setdefault(run_id, [])
        new = [node for node in result_nodes(result) if node not in known]
        known.extend(new)
        tags = [RunTag(NODES_TAG, ",".join(known))] if new else []
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self._last_step[run_id] = step
        self.counts["epochs"] += 1

    def complete(self, trial: Any) -> None:
        run_id = self.child_run(trial)
        if self._run_status.get(run_id) == "FINISHED":
            return  # closed by an earlier process
        metric, result = self.metric, trial.last_result or {}
        epochs = int(trial.config.get("epochs", 0))
        stopped_early = bool(result) and int(result.get("epoch", 0)) < epochs
        now = int(time.time() * 1000)
        # An earlier process or attempt may have logged them.
        logged = {} if run_id in self._fresh else self.client.get_run(run_id).data.metrics
        finals = [
            Metric(name, float(result[key]), now, int(result.get("epoch", 0)))
            for name, key in (
                (f"final_best_{metric}", f"best_{metric}"),
                (f"final_best_{metric}_ci95", f"best_{metric}_ci95"),
                ("epochs_run", "epoch"),
            )
            if key in result and name not in logged
        ]
        self.client.log_batch(run_id, metrics=finals, tags=[RunTag("fsl.stopped_early", str(stopped_early).lower())])
        self._log_best_model(run_id, trial, result)
        self.client.set_terminated(run_id, "FINISHED")
        self._run_status[run_id] = "FINISHED"
        self.counts["closed"] += 1

    def error(self, trial: Any) -> None:
        run_id = self.child_run(trial)
        if self._run_status.get(run_id) == "FAILED":
            return
        self.client.set_tag(run_id, "fsl.error", error_line(trial) or "unknown error")
        self.client.set_terminated(run_id, "FAILED")
        self._run_status[run_id] = "FAILED"
        self.counts["closed"] += 1

    def find_children(self, trials: list) -> None:
        """Know every trial's child run, also those of trials finished before a resume (the results table
        names them)."""
        for trial in trials:
            self.find_child(trial.trial_id)

    def finish(self, trials: list, summary: StudySummary) -> None:
        """The parent's share of the study's end: its summary files, best trial and status."""
        parent = self.ensure_parent()
        if not self.replaying:  # a replay cannot know whether a trial still runs elsewhere
            for trial in trials:
                run_id = self.find_child(trial.trial_id)  # also those finished before a resume
                if run_id is not None and trial.status not in ("TERMINATED", "ERROR"):
                    if self._run_status.get(run_id) not in TERMINAL:
                        self.client.set_terminated(run_id, "KILLED")
                        self._run_status[run_id] = "KILLED"
        for path in summary.files:
            self.client.log_artifact(parent, str(path), artifact_path="results")
        run = self.client.get_run(parent)
        logged = run.data
        if summary.best is not None:
            best = summary.best
            now = int(time.time() * 1000)
            keys = (f"best_{self.metric}", f"best_{self.metric}_ci95")
            tags = {"fsl.best_trial_id": best["trial_id"], "fsl.best_run_id": self._children.get(best["trial_id"], "")}
            # The parent also under the children's own keys, so that sorting the runs table by val_acc ranks it.
            values = {key: float(best[key]) for key in keys}
            values |= {self.metric: values[keys[0]], f"{self.metric}_ci95": values[keys[1]]}
            tags |= self._publish_models(summary)
            self.client.log_batch(
                parent,
                # A resumed study (or a replay) that ends with the same best logs nothing again.
                metrics=[Metric(k, v, now, 0) for k, v in values.items() if logged.metrics.get(k) != v],
                tags=[RunTag(k, v) for k, v in tags.items() if logged.tags.get(k) != v],
            )
        if run.info.status != "FINISHED":
            self.client.set_terminated(parent, "FINISHED")

    def _publish_models(self, summary: StudySummary) -> dict[str, str]:
        """The best trial, and the best of each model group's value, as MLflow Models of their runs,
        registered when asked (alias `champion` on the best); the parent's tags that point at them."""
        from fsl.tracking.models import CHAMPION, best_runs, log_best_model, register

        r = self.record
        tags: dict[str, str] = {}
        for run_id, aliases in best_runs(summary.table, r.metric, r.model_groups).items():
            uri = log_best_model(self.client, self.experiment_id or "", run_id)
            if uri is None:
                continue
            self.client.set_tag(run_id, MODEL_URI_TAG, uri)
            if CHAMPION in aliases:
                tags[MODEL_URI_TAG] = uri
            if r.register_model:
                version = register(self.client, r.register_model, uri, run_id, aliases)
                if CHAMPION in aliases:
                    tags[REGISTERED_TAG] = f"models:/{r.register_model}/{version}"
        return tags

    def close_orphaned_children(self, known_trials: set[str]) -> None:
        """After a driver crash, a child run may belong to a trial that Tune's last snapshot never saw (Tune
        reruns it under a new id). An empty one is deleted (MLflow keeps it restorable); one with metrics is
        kept, closed as KILLED and tagged, so nothing logged is lost."""
        parent = self.ensure_parent()
        for run in self.store.trial_runs(self.experiment_id or "", parent):
            trial_id = run.data.tags.get(TRIAL_TAG)
            if trial_id in known_trials:
                self._children.setdefault(trial_id, run.info.run_id)  # its state is read when it is needed
                continue
            if run.info.status != "RUNNING":
                continue
            if run.data.metrics:
                self.client.set_tag(run.info.run_id, ORPHANED_TAG, "true")
                self.client.set_terminated(run.info.run_id, "KILLED")
            else:
                self.client.delete_run(run.info.run_id)
        self._all_children_known = True

    def _log_best_model(self, run_id: str, trial: Any, result: dict) -> None:
        checkpoint = _latest_checkpoint(trial, result)
        if checkpoint is None:
            return
        with checkpoint.as_directory() as directory:
            best_model = Path(directory) / "best_model.pt"
            if best_model.is_file():
                self.client.log_artifact(run_id, str(best_model), artifact_path="checkpoint")


def _latest_checkpoint(trial: Any, result: dict) -> Any:
    """Tune's own checkpoint for in-process trials; for Ray Train trials, the path Train reported."""
    if trial.checkpoint is not None:
        return trial.checkpoint
    path = result.get("checkpoint_path")
    if path:
        from ray.tune import Checkpoint

        return Checkpoint(path, filesystem=trial.storage.storage_filesystem)
    return None
