"""Many trials at once: a 60-trial study of tiny trials ends with 60 MLflow children, each with all its
metrics, while another connection holds the SQLite store's write lock longer than MLflow waits for it (so MLflow
raises "database is locked" and the study retries)."""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
from pathlib import Path
from typing import TextIO

import pandas as pd
import pytest
from conftest import tiny_study_argv
from mlflow import MlflowClient
from trial_holds import GUARD_S, TrialHolds

from fsl.tracking.recorder import epoch_metrics

pytestmark = pytest.mark.ray

TRIALS, EPOCHS = 60, 2
LOCK_WARNING = "is locked by another process; retrying"


class StderrWatch:
    """sys.stderr as the study writes to it, with an event set when a line contains `text`."""

    def __init__(self, stream: TextIO, text: str) -> None:
        self.stream, self.text, self.seen = stream, text, threading.Event()

    def write(self, data: str) -> int:
        if self.text in data:
            self.seen.set()
        return self.stream.write(data)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.stream, name)


class LockHolder(threading.Thread):
    """Another writer on the tracking database: while a trial is held before one of its reports (so the study has
    that report, and more, still to log), takes SQLite's exclusive lock, releases the trial, and keeps the lock
    until the study has said that it waits for it (which a write does after the busy timeout MLflow sets on its
    SQLite sessions, 20 s)."""

    def __init__(self, database: Path, holds: TrialHolds, report: int, study_waits: threading.Event) -> None:
        super().__init__(daemon=True)
        self.database, self.holds, self.report, self.study_waits = database, holds, report, study_waits
        self.held = 0
        self.error: BaseException | None = None
        self.study_ended = threading.Event()

    def run(self) -> None:
        try:
            self.holds.wait(self.report, failed=lambda: "the study ended" if self.study_ended.is_set() else None)
            connection = sqlite3.connect(self.database, timeout=60)
            try:
                connection.execute("BEGIN EXCLUSIVE")
                self.held += 1
                self.holds.release(self.report)
                if not self.study_waits.wait(GUARD_S):
                    raise AssertionError(f"guard: the study did not report the lock within {GUARD_S:.0f} s")
                connection.rollback()
            finally:
                connection.close()
        except BaseException as err:  # reported by the test, after the study ends
            self.error = err
        finally:
            self.holds.release_all()


def test_sixty_trials_all_logged_while_the_store_is_locked(
    local_ray, tiny_hw4_master: Path, tmp_path: Path, capsys, monkeypatch
):
    database = tmp_path / "mlflow.db"
    report = 12  # by then the study logs steadily: a few trials have started, run and ended
    holds = TrialHolds(tmp_path / "holds", [report])
    stderr = StderrWatch(sys.stderr, LOCK_WARNING)
    monkeypatch.setattr(sys, "stderr", stderr)
    holder = LockHolder(database, holds, report, stderr.seen)
    holder.start()
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "many", "many")
    argv += f"--num-samples {TRIALS} --epochs {EPOCHS} --episodes-per-epoch 2 --grace-period {EPOCHS}".split()
    try:
        assert holds.run(argv) == 0
    finally:
        holder.study_ended.set()
        holder.join(timeout=GUARD_S + 10)
    if holder.error is not None:
        raise holder.error
    err = capsys.readouterr().err
    assert holder.held == 1
    assert LOCK_WARNING in err  # the fault really reached the study

    client = MlflowClient(f"sqlite:///{database}")
    experiment = client.get_experiment_by_name("many")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("fsl.role") == "study"]
    children = [r for r in runs if r.data.tags.get("fsl.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == TRIALS and len({c.data.tags["fsl.trial_id"] for c in children}) == TRIALS
    study = tmp_path / "results" / "many"
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        # Every metric of every epoch the trial reported to Tune is in MLflow, once, with its value.
        lines = (study / f"trial-{child.data.tags['fsl.trial_id']}" / "result.json").read_text().splitlines()
        results = [json.loads(line) for line in lines]
        assert [r["epoch"] for r in results] == [1, 2]
        reported = list(epoch_metrics(results[0]))
        assert {"train_loss", "val_acc", "val_acc_ci95", "best_val_acc", "local_steps"} <= set(reported)
        finals = {"final_best_val_acc", "final_best_val_acc_ci95", "epochs_run"}
        assert set(reported) == set(child.data.metrics) - finals
        for key in reported:
            logged = [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, key)]
            assert logged == [(r["epoch"], pytest.approx(r[key])) for r in results], key
        assert finals | {"best_epoch"} <= set(child.data.metrics)
        assert {"lr", "augment", "head_depth", "epochs"} <= set(child.data.params)
    table = pd.read_csv(study / "results.csv")
    assert len(table) == TRIALS and set(table["mlflow_run_id"]) == {c.info.run_id for c in children}
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
