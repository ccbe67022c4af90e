"""--resume after the study's driver was killed: the study finishes with exactly the requested trials, finished
trials are not rerun, and MLflow has exactly one child per trial with each epoch logged once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import tiny_study_argv

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 4


def _children(uri: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["resume"])
    except Exception:  # the store is being created
        return pd.DataFrame()
    if runs.empty or "tags.fsl.role" not in runs:
        return pd.DataFrame()
    return runs[runs["tags.fsl.role"] == "trial"]


def test_resume_after_the_driver_is_killed(tiny_hw4_master: Path, tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = [
        sys.executable,
        str(ROOT / "studies" / "protonet_search.py"),
        *tiny_study_argv(tiny_hw4_master, tmp_path, "resume", "interrupted"),
        *f"--num-samples {SAMPLES} --epochs 3 --episodes-per-epoch 40 --grace-period 3".split(),
        *"--max-concurrent 1 --num-cpus 2".split(),
    ]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 240
        finished = running = pd.DataFrame()
        while time.monotonic() < deadline and first.poll() is None:
            children = _children(uri)
            if not children.empty and "metrics.val_acc" in children:
                finished = children[children["status"] == "FINISHED"]
                running = children[(children["status"] == "RUNNING") & children["metrics.val_acc"].notna()]
                if len(finished) >= 2 and len(running) == 1:
                    break  # two trials done, a third one mid-way (an epoch logged, more to come)
            time.sleep(0.2)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert len(finished) >= 2 and len(running) == 1
        os.kill(first.pid, signal.SIGKILL)  # the driver dies mid-study
        first.wait()
        os.killpg(first.pid, signal.SIGKILL)  # and the local Ray it started
    client = mlflow.MlflowClient(uri)
    histories = {run_id: len(client.get_metric_history(run_id, "val_acc")) for run_id in finished["run_id"]}
    interrupted_run = running["run_id"].iloc[0]
    interrupted_trial = running["tags.fsl.trial_id"].iloc[0]

    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    children = _children(uri)
    assert len(children) == SAMPLES and children["tags.fsl.trial_id"].nunique() == SAMPLES
    assert (children["status"] == "FINISHED").all()
    for run_id in children["run_id"]:
        steps = [m.step for m in client.get_metric_history(run_id, "val_acc")]
        assert steps == list(range(1, len(steps) + 1)), steps  # each epoch once
    for run_id, count in histories.items():  # finished trials were not rerun
        assert len(client.get_metric_history(run_id, "val_acc")) == count
    # The trial that was running continued in its own child run, from its checkpoint, to its last epoch.
    assert interrupted_run in set(children["run_id"])
    assert [m.step for m in client.get_metric_history(interrupted_run, "val_acc")] == [1, 2, 3]
    results = (tmp_path / "results" / "interrupted" / f"trial-{interrupted_trial}" / "result.json").read_text()
    assert [json.loads(line)["epoch"] for line in results.splitlines()] == [1, 2, 3]  # no epoch trained twice
    table = pd.read_csv(tmp_path / "results" / "interrupted" / "results.csv")
    assert len(table) == SAMPLES and set(table["mlflow_run_id"]) == set(children["run_id"])
