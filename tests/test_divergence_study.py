"""A study in which one trial diverges: a real local Ray, Tune + Optuna + ASHA, a real SQLite MLflow store.

The diverging trial has Adam at lr 1e30, whose first step blows the weights up: its second episode's loss is
NaN. It must fail at that step, once (no retry by Tune), with the reason in Tune's error file and in its MLflow
child run, while the other trials finish and the study's best comes from them.
"""

import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import tiny_study_argv
from mlflow import MlflowClient

from fsl.commands.protonet_search import main

pytestmark = pytest.mark.ray

BAD_LR = 1e30
REASON = f"TrainingDiverged: train_loss became nan at epoch 1 step 2 (lr={BAD_LR})"
FIXED = "--param augment=none --param head_depth=0 --param distance=euclidean --param train_way=5"


@pytest.fixture(scope="module")
def study(local_ray, tiny_hw4_master: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three trials, one at a time, over lr in {0.001, 1e30}: the first is the paper's lr (0.001); with this
    seed Optuna draws 1e30 for one of the other two."""
    tmp = tmp_path_factory.mktemp("diverge")
    argv = tiny_study_argv(tiny_hw4_master, tmp, "test-diverge", "diverge") + [
        *"--num-samples 3 --epochs 2 --episodes-per-epoch 3 --max-concurrent 1 --seed 0".split(),
        *f"--param lr=0.001,{BAD_LR:g}".split(),
        *FIXED.split(),
    ]
    with redirect_stdout(io.StringIO()) as out:
        code = main(argv)
    return {
        "code": code,
        "out": out.getvalue(),
        "tmp": tmp,
        "uri": f"sqlite:///{tmp}/mlflow.db",
        "dir": tmp / "results" / "diverge",
    }


def _trial_dirs(study: dict) -> dict[str, Path]:
    """Tune's trial folders by the trial's lr."""
    dirs = {}
    for folder in study["dir"].glob("trial-*"):
        config = json.loads((folder / "params.json").read_text())
        dirs.setdefault(config["lr"], []).append(folder)
    return dirs


def test_the_study_finishes_and_says_what_failed(study):
    assert study["code"] == 0  # a trial failed, but the study has a best trial
    dirs = _trial_dirs(study)
    assert len(dirs[BAD_LR]) == 1 and len(dirs[0.001]) == 2, dirs
    bad_id = dirs[BAD_LR][0].name.removeprefix("trial-")
    out = study["out"]
    assert f"trial {bad_id}: {REASON}; the trial fails (a retry would diverge again)" in out
    assert f"trial {bad_id}: FAILED: {REASON}" in out
    assert "Trials: 3 (2 terminated, 1 error" in out
    assert f"Failed: 1 trial (not counted for the best)\n  {bad_id}: {REASON}\n" in out
    assert f"Best trial {bad_id}" not in out and "Best trial " in out


def test_the_diverged_trial_failed_once_with_the_reason_in_tune(study):
    (folder,) = _trial_dirs(study)[BAD_LR]
    error = (folder / "error.txt").read_text()
    assert REASON in error
    assert error.count("Failure #") == 1  # not retried
    # It stopped at the bad step of epoch 1: no epoch was ever reported, only the divergence notice.
    results = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
    assert [r.get("diverged") for r in results] == [REASON]
    assert results[0]["epoch"] == 0 and math.isnan(results[0]["val_acc"])
    assert not list(folder.glob("checkpoint_*"))


def test_the_diverged_trial_is_failed_in_mlflow_and_the_best_is_a_finished_trial(study):
    mlflow.set_tracking_uri(study["uri"])
    runs = mlflow.search_runs(experiment_names=["test-diverge"])
    parent = runs[runs["tags.fsl.role"] == "study"].iloc[0]
    children = runs[runs["tags.fsl.role"] == "trial"]
    assert len(children) == 3 and parent["status"] == "FINISHED"
    bad = children[children["params.lr"].astype(float) == BAD_LR]
    good = children[children["params.lr"].astype(float) != BAD_LR]
    assert len(bad) == 1 and bad.iloc[0]["status"] == "FAILED"
    assert bad.iloc[0]["tags.fsl.error"] == REASON
    client = MlflowClient(study["uri"])
    for key in ("train_loss", "val_acc", "best_val_acc"):
        assert client.get_metric_history(bad.iloc[0]["run_id"], key) == []  # no epoch was logged
    assert (good["status"] == "FINISHED").all()
    assert math.isfinite(parent["metrics.best_val_acc"])
    assert parent["metrics.best_val_acc"] == pytest.approx(good["metrics.final_best_val_acc"].max())
    assert parent["tags.fsl.best_run_id"] in set(good["run_id"])


def test_the_results_table_ranks_the_failed_trial_last_with_its_reason(study):
    table = pd.read_csv(study["dir"] / "results.csv")
    assert list(table["status"]) == ["TERMINATED", "TERMINATED", "ERROR"]
    assert table["lr"].iloc[-1] == BAD_LR and table["error"].iloc[-1] == REASON
    assert table["error"].iloc[:2].isna().all()
    assert table["best_val_acc"].iloc[:2].notna().all()


def test_a_diverged_ddp_trial_fails_once_without_a_retry_by_train_or_tune(
    local_ray, tiny_hw4_master: Path, tmp_path: Path
):
    """Two DDP workers on Ray Train: both ranks stop at the same bad step (they share the verdict) and report the
    notice, the Train run ends without Train's retry (a worker error would be retried and reach Tune as a
    TrainingFailedError, not as TrainingDiverged), and the Tune trial fails once with the reason."""
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "test-diverge-ddp", "diverge-ddp") + [
        *"--num-samples 1 --epochs 2 --episodes-per-epoch 4 --workers-per-trial 2".split(),
        *f"--param lr={BAD_LR:g}".split(),
        *FIXED.split(),
    ]
    with redirect_stdout(io.StringIO()) as out:
        assert main(argv) == 1  # no trial finished
    reason = f"TrainingDiverged: train_loss became nan at epoch 1 step 2 on rank 0 (lr={BAD_LR})"
    (folder,) = (tmp_path / "results" / "diverge-ddp").glob("trial-*")
    error = (folder / "error.txt").read_text()
    assert error.count("Failure #") == 1
    assert error.rstrip().splitlines()[-1] == f"fsl.train.run_state.{reason}"
    results = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
    assert [r.get("diverged") for r in results] == [reason] and results[0]["ranks_reporting"] == 2
    assert (
        f"Failed: 1 trial (not counted for the best)\n  {folder.name.removeprefix('trial-')}: {reason}\n"
        in out.getvalue()
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["test-diverge-ddp"])
    child = runs[runs["tags.fsl.role"] == "trial"].iloc[0]
    assert child["status"] == "FAILED" and child["tags.fsl.error"] == reason
