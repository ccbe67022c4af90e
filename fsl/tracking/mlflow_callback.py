"""The one place a study writes to MLflow: a Tune callback running in the study's driver process.

One parent run per study (run name = study name) and one child run per trial (tag mlflow.parentRunId).
Workers never open the tracking store, so a SQLite file is safe and a cluster needs no credentials on
workers. Runs are found again by tags (fsl.study_path, fsl.trial_id), and an epoch already logged is not
logged again, so a restarted trial or a resumed study writes into the same runs without duplicates.

The store may fail while a study runs. Every hook becomes an action in a queue, run in order: a SQLite store
locked by another process is retried, and a store that does not answer (a stopped server) leaves the actions
queued while the study goes on; they are retried every RETRY_S seconds and once more at the end. What is
still missing then is replayed from Ray's results by `studies/sync_mlflow.py` (fsl.tracking.sync), which runs
this same callback over the study's saved trials: every action is idempotent, so a replay adds only what MLflow
lacks.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from fsl.tracking.summary import StudySummary, error_line, write_study_summary
from fsl.tracking.uri import artifact_location_for, failure_reason, tracking_server_problem
from fsl.train.run_state import DIVERGED

# What Tune adds to every result (times, host, counters): not the trial's own numbers, so not logged per epoch.
NOT_TRIAL_METRICS = frozenset([*AUTO_RESULT_KEYS, "epoch", "done", "should_checkpoint"])


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Every number a trial reported for an epoch, by its own name: logged on its child run (step = epoch)."""
    return {
        key: float(value)
        for key, value in result.items()
        if key not in NOT_TRIAL_METRICS and isinstance(value, int | float) and not isinstance(value, bool)
    }


ROLE_TAG, STUDY_TAG, STUDY_PATH_TAG, TRIAL_TAG = "fsl.role", "fsl.study", "fsl.study_path", "fsl.trial_id"
PARENT_TAG = "mlflow.parentRunId"
CELL_TAG = "fsl.cell"
NODES_TAG = "fsl.nodes"  # the Ray node ids a trial ran on, comma-separated, in the order it reached them
TERMINAL = ("FINISHED", "FAILED", "KILLED")

RETRY_S = 15.0  # how often a study retries a tracking store that stopped answering
LOCK_WAIT_S = 300.0  # how long one action waits for a SQLite store locked by another process
# Set in the study's driver unless the user set them. MLflow's HTTP client retries a failed request 7 times
# over about 4 minutes; the driver would stall that long on the first request to a stopped server, so it
# retries the queue itself instead. MLflow also prints a "View run" link per finished run on a tracking
# server, dozens of lines that would bury the progress; the study prints the UI link once at its end.
DRIVER_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def set_driver_env_defaults() -> None:
    for key, value in DRIVER_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_locked(err: BaseException) -> bool:
    """SQLite's answer while another connection holds the write lock (e.g. an `mlflow ui` on the same file)."""
    return "database is locked" in str(err)


class _DropLockedErrors(logging.Filter):
    """MLflow logs each failed SQLite query with its traceback before raising it; a lock the study waits out
    would print a page per retry."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


logging.getLogger("mlflow.store.db.utils").addFilter(_DropLockedErrors())


def sync_command(study_path: str, tracking_uri: str) -> str:
    return f"python studies/sync_mlflow.py {study_path} --tracking-uri {tracking_uri}"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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

    # Rebuilt in every process (Tune pickles the callback with the experiment; a replay unpickles it).
    _RUNTIME = (
        "_client",
        "experiment_id",
        "parent_run_id",
        "_children",
        "_last_step",
        "_run_status",
        "_nodes",
        "_all_children_known",
        "_fresh",
        "_params_pending",
        "_reconciled",
        "_queue",
        "_offline_since",
        "_last_attempt",
        "_lock_warned",
        "_seen",
        "replaying",
        "counts",
    )

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._children: dict[str, str] = {}  # trial id -> child run id
        self._last_step: dict[str, int] = {}  # child run id -> last epoch logged
        self._run_status: dict[str, str] = {}  # child run id -> its MLflow status, as last seen or set
        self._nodes: dict[str, list[str]] = {}  # child run id -> the Ray nodes its trial ran on, as in its tag
        # True once this process has listed the parent's children: a trial not among them has none, so a new
        # trial's run is created without a search (whose cost grows with the runs in the store).
        self._all_children_known = False
        # Child runs this process created and wrote to without a failure: what they hold is what it wrote.
        self._fresh: set[str] = set()
        # Child runs created without their params yet (a write after create_run failed): logged on the next try.
        self._params_pending: set[str] = set()
        self._reconciled = False
        self._queue: deque[Callable[[], None]] = deque()  # tracking actions not yet done
        self._offline_since: float | None = None
        self._last_attempt = 0.0
        self._lock_warned = False
        self._seen: dict[str, dict[int, float]] = {}  # trial id -> {epoch: metric}, as reported to this process
        self.replaying = False  # run by fsl.tracking.sync: only add what is missing, never reopen a run
        self.counts = {"children": 0, "epochs": 0, "closed": 0}  # what this process added (a replay reports it)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in self._RUNTIME:
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
            if not self.replaying and self.client.get_run(found).info.status != "RUNNING":
                self.client.update_run(found, status="RUNNING")  # a resumed study runs again
            return found
        tags = {ROLE_TAG: "study", STUDY_TAG: self.study_name, STUDY_PATH_TAG: self.study_path, **self.tags}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=self.study_name)
        now = int(time.time() * 1000)
        self.client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in self.study_metrics.items()],
            params=[Param(k, str(v)) for k, v in self.study_params.items()],
        )
        # Only now: a parent whose params failed to log is found (and completed) on the next try.
        self.parent_run_id = run.info.run_id
        return self.parent_run_id

    def _find_child(self, trial_id: str) -> str | None:
        """The child run already logged for this trial (by an earlier process or attempt), if any, with its
        last logged epoch and status read back from MLflow when this process does not know them."""
        run_id = self._children.get(trial_id)
        if run_id is not None and run_id in self._last_step:
            return run_id
        if run_id is None:
            if self._all_children_known:
                return None
            parent = self.ensure_parent()
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`{PARENT_TAG}` = {_quote(parent)} and tags.`{TRIAL_TAG}` = {_quote(trial_id)}",
                max_results=1,
            )
            if not found:
                return None
            run = found[0]
        else:
            run = self.client.get_run(run_id)
        run_id, status = run.info.run_id, run.info.status
        self._nodes[run_id] = [n for n in run.data.tags.get(NODES_TAG, "").split(",") if n]
        history = self.client.get_metric_history(run_id, self.metric)
        self._last_step[run_id] = max((m.step for m in history), default=0)
        self._run_status[run_id] = status
        self._children[trial_id] = run_id
        if not run.data.params:
            self._params_pending.add(run_id)  # an earlier process created it and stopped before its params
        return run_id

    def child_run(self, trial: Any) -> str:
        """The trial's child run: found by its trial id (after a restart or resume) or created."""
        run_id = self._find_child(trial.trial_id)
        if run_id is not None:
            if run_id in self._params_pending:
                self._log_params(run_id, trial)
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

    def _log_params(self, run_id: str, trial: Any) -> None:
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(trial.config.items())])
        self._params_pending.discard(run_id)

    # --- what each Tune event writes (idempotent: a retry or a replay adds only what is missing) ------

    def _start(self, trial: Any) -> None:
        run_id = self.child_run(trial)
        if self._run_status.get(run_id) != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")  # a trial restored by a resumed study
            self._run_status[run_id] = "RUNNING"

    def _result(self, trial: Any, result: dict) -> None:
        run_id = self.child_run(trial)
        if DIVERGED in result:
            return  # not an epoch: the notice that the trial is about to fail (_error records why)
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

    def _complete(self, trial: Any) -> None:
        run_id = self.child_run(trial)
        if self._run_status.get(run_id) == "FINISHED":
            return  # closed by an earlier process
        result = trial.last_result or {}
        epochs = int(trial.config.get("epochs", 0))
        stopped_early = bool(result) and int(result.get("epoch", 0)) < epochs
        now = int(time.time() * 1000)
        # An earlier process or attempt may have logged them.
        logged = {} if run_id in self._fresh else self.client.get_run(run_id).data.metrics
        finals = [
            Metric(name, float(result[key]), now, int(result.get("epoch", 0)))
            for name, key in (
                (f"final_best_{self.metric}", f"best_{self.metric}"),
                (f"final_best_{self.metric}_ci95", f"best_{self.metric}_ci95"),
                ("epochs_run", "epoch"),
            )
            if key in result and name not in logged
        ]
        self.client.log_batch(run_id, metrics=finals, tags=[RunTag("fsl.stopped_early", str(stopped_early).lower())])
        self._log_best_model(run_id, trial, result)
        self.client.set_terminated(run_id, "FINISHED")
        self._run_status[run_id] = "FINISHED"
        self.counts["closed"] += 1

    def _error(self, trial: Any) -> None:
        run_id = self.child_run(trial)
        if self._run_status.get(run_id) == "FAILED":
            return
        self.client.set_tag(run_id, "fsl.error", error_line(trial) or "unknown error")
        self.client.set_terminated(run_id, "FAILED")
        self._run_status[run_id] = "FAILED"
        self.counts["closed"] += 1

    def _finish(self, trials: list, summary: StudySummary) -> None:
        """The parent's share of the study's end: its summary files, best trial and status."""
        parent = self.ensure_parent()
        if not self.replaying:  # a replay cannot know whether a trial still runs elsewhere
            for trial in trials:
                run_id = self._find_child(trial.trial_id)  # also those finished before a resume
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
            self.client.log_batch(
                parent,
                # A resumed study (or a replay) that ends with the same best logs nothing again.
                metrics=[Metric(k, float(best[k]), now, 0) for k in keys if logged.metrics.get(k) != float(best[k])],
                tags=[RunTag(k, v) for k, v in tags.items() if logged.tags.get(k) != v],
            )
        if run.info.status != "FINISHED":
            self.client.set_terminated(parent, "FINISHED")

    # --- the queue: actions run in order, retried while the store is locked or away --------------------

    def _submit(self, action: Callable[[], None], force: bool = False) -> None:
        self._queue.append(action)
        self._drain(force)

    def _drain(self, force: bool = False) -> bool:
        """Run the queued actions in order; True when none is left. While the store is away, tries again
        only every RETRY_S seconds (or when forced, at the study's end)."""
        if not self._queue:
            return True
        if self._offline_since is not None:
            if not force and time.monotonic() - self._last_attempt < RETRY_S:
                return False
            self._last_attempt = time.monotonic()
            # A quick look first: MLflow's own request retries are slow.
            if tracking_server_problem(self.tracking_uri, timeout_s=3) is not None:
                return False
        while self._queue:
            try:
                self.with_lock_retry(self._queue[0])
            except Exception as err:  # MLflow raises many types for a store that is away
                self._went_offline(err)
                return False
            self._queue.popleft()
        if self._offline_since is not None:
            away = time.monotonic() - self._offline_since
            print(f"MLflow at {self.tracking_uri} answers again after {away:.0f} s: caught up", flush=True)
            self._offline_since = None
        return True

    def with_lock_retry(self, action: Callable[[], Any]) -> Any:
        """Run one action; while SQLite says the database is locked, wait and run it again."""
        deadline, delay = time.monotonic() + LOCK_WAIT_S, 0.2
        while True:
            try:
                return action()
            except Exception as err:
                if not is_locked(err) or time.monotonic() > deadline:
                    raise
                if not self._lock_warned:
                    self._lock_warned = True
                    print(
                        f"warning: MLflow store {self.tracking_uri} is locked by another process; "
                        f"retrying for up to {LOCK_WAIT_S:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(delay)
                delay = min(2 * delay, 5.0)

    def _went_offline(self, err: BaseException) -> None:
        self._last_attempt = time.monotonic()
        # What an interrupted action may have written is read back from MLflow on the next try.
        self._last_step.clear()
        self._run_status.clear()
        self._nodes.clear()
        self._fresh.clear()
        self._all_children_known = False  # an interrupted action may have created a run
        self._client = None
        if self._offline_since is None:
            self._offline_since = time.monotonic()
            print(
                f"warning: MLflow at {self.tracking_uri} failed ({failure_reason(err)}); the study goes on and keeps "
                f"every result in {self.study_path}; tracking retries every {RETRY_S:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    @property
    def pending(self) -> int:
        """Tracking actions not yet done (the store did not answer)."""
        return len(self._queue)

    # --- Tune hooks -------------------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        set_driver_env_defaults()
        self._submit(self.ensure_parent)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._reconciled:
            self._reconciled = True
            known = {trial.trial_id for trial in trials}
            self._submit(lambda: self.close_orphaned_children(known))
        elif self._queue:
            self._drain()  # catches up as soon as the store answers again, without waiting for an event

    def close_orphaned_children(self, known_trials: set[str]) -> None:
        """After a driver crash, a child run may belong to a trial that Tune's last snapshot never saw (Tune
        reruns it under a new id). An empty one is deleted (MLflow keeps it restorable); one with metrics is
        kept, closed as KILLED and tagged, so nothing logged is lost."""
        parent = self.ensure_parent()
        for run in self._runs_with_parent(parent):
            trial_id = run.data.tags.get(TRIAL_TAG)
            if trial_id in known_trials:
                self._children.setdefault(trial_id, run.info.run_id)  # its state is read when it is needed
                continue
            if run.info.status != "RUNNING":
                continue
            if run.data.metrics:
                self.client.set_tag(run.info.run_id, "fsl.orphaned", "true")
                self.client.set_terminated(run.info.run_id, "KILLED")
            else:
                self.client.delete_run(run.info.run_id)
        self._all_children_known = True

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
        self._submit(lambda: self._start(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        result = dict(result)  # as it is now: the queue may run it later
        self._remember(trial.trial_id, result)
        self._submit(lambda: self._result(trial, result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(lambda: self._complete(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(lambda: self._error(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # The results table names every trial's child run: also those of trials finished before a resume,
        # which this process has not logged to.
        self._submit(lambda: [self._find_child(trial.trial_id) for trial in trials], force=True)
        summary = write_study_summary(trials, self, Path(self.results_dir))
        self._submit(lambda: self._finish(trials, summary), force=True)
        if self._queue:
            print(
                f"warning: MLflow at {self.tracking_uri} did not answer; {len(self._queue)} tracking actions are "
                f"not done. Every result is kept in {self.study_path}; once MLflow answers, run: "
                f"{sync_command(self.study_path, self.tracking_uri)}",
                file=sys.stderr,
                flush=True,
            )

    # --- replay (fsl.tracking.sync) ---------------------------------------------------------------------

    def replay_trial(self, trial: Any, results: list[dict]) -> None:
        """Log what MLflow lacks of one saved trial: its epochs, then its end (finished or failed)."""
        for result in results:
            self._remember(trial.trial_id, result)
            self.with_lock_retry(lambda result=result: self._result(trial, result))
        if trial.status == "TERMINATED":
            self.with_lock_retry(lambda: self._complete(trial))
        elif trial.status == "ERROR":
            self.with_lock_retry(lambda: self._error(trial))

    def replay_end(self, trials: list) -> StudySummary:
        summary = write_study_summary(trials, self, Path(self.results_dir))
        self.with_lock_retry(lambda: self._finish(trials, summary))
        return summary

    def _remember(self, trial_id: str, result: dict) -> None:
        if DIVERGED not in result and self.metric in result and "epoch" in result:
            self._seen.setdefault(trial_id, {})[int(result["epoch"])] = float(result[self.metric])

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
        """A trial's (epoch, value) history: as reported to this process, else (a trial finished before a
        resume) from MLflow; empty when neither has it."""
        key = key or self.metric
        if key == self.metric and self._seen.get(trial_id):
            return sorted(self._seen[trial_id].items())
        run_id = self._children.get(trial_id)
        if run_id is None or self._offline_since is not None:
            return []
        try:
            return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))
        except Exception:  # the store went away: a summary without this curve rather than none
            return []

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
