"""Many trials at once: a 60-trial study of tiny trials ends with 60 MLflow children, each with all its
metrics, while another process holds the SQLite store's write lock longer than MLflow waits for it (so MLflow
raises "database is locked" and the study retries)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_study_argv
from mlflow import MlflowClient

from fsl.tracking.mlflow_callback import EPOCH_METRICS
from studies.protonet_search import main

pytestmark = pytest.mark.ray

TRIALS, EPOCHS = 60, 2
# Longer than the busy timeout MLflow sets on its SQLite sessions (20 s) by enough that a write the study tries
# in the first 25 s of the hold fails rather than waits.
HOLD_S = 45.0


class LockHolder(threading.Thread):
    """Another writer on the tracking database: once the study has logged `after_runs` runs (so it is logging
    steadily), takes SQLite's exclusive lock for HOLD_S."""

    def __init__(self, database: Path, after_runs: int) -> None:
        super().__init__(daemon=True)
        self.database, self.after_runs = database, after_runs
        self.held = 0
        self.stop = threading.Event()

    def runs_logged(self) -> int:
        try:
            with sqlite3.connect(self.database, timeout=60) as connection:
                return connection.execute("SELECT count(*) FROM runs").fetchone()[0]
        except sqlite3.Error:  # not created yet
            return 0

    def run(self) -> None:
        while self.runs_logged() < self.after_runs:
            if self.stop.wait(0.5):
                return
        connection = sqlite3.connect(self.database, timeout=60)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            self.held += 1
            self.stop.wait(HOLD_S)
            connection.rollback()
        finally:
            connection.close()


def test_sixty_trials_all_logged_while_the_store_is_locked(local_ray, tiny_hw4_master: Path, tmp_path: Path, capsys):
    database = tmp_path / "mlflow.db"
    holder = LockHolder(database, after_runs=6)
    holder.start()
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "many", "many")
    argv += f"--num-samples {TRIALS} --epochs {EPOCHS} --episodes-per-epoch 2 --grace-period {EPOCHS}".split()
    try:
        assert main(argv) == 0
    finally:
        holder.stop.set()
        holder.join(timeout=HOLD_S + 10)
    err = capsys.readouterr().err
    assert holder.held == 1
    assert "is locked by another process; retrying" in err  # the fault really reached the study

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
        reported = [key for key in EPOCH_METRICS if key in results[0]]
        assert {"train_loss", "val_acc", "val_acc_ci95", "best_val_acc"} <= set(reported)
        for key in reported:
            logged = [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, key)]
            assert logged == [(r["epoch"], pytest.approx(r[key])) for r in results], key
        assert {"final_best_val_acc", "best_epoch", "epochs_run"} <= set(child.data.metrics)
        assert {"lr", "augment", "head_depth", "epochs"} <= set(child.data.params)
    table = pd.read_csv(study / "results.csv")
    assert len(table) == TRIALS and set(table["mlflow_run_id"]) == {c.info.run_id for c in children}
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
