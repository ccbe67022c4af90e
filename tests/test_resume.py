"""--resume after the study's driver was killed: the study finishes with exactly the requested trials, finished
trials are not rerun, MLflow has exactly one child per trial with each epoch logged once, and the Optuna sampler
continues with the finished trials as its history."""

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from conftest import assert_quiet, tiny_study_argv
from trial_holds import GUARD_S, TrialHolds

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parent.parent
SAMPLES, EPOCHS = 4, 3


def _children(uri: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["resume"])
    except Exception:  # the store is being created
        return pd.DataFrame()
    if runs.empty or "tags.fsl.role" not in runs:
        return pd.DataFrame()
    return runs[runs["tags.fsl.role"] == "trial"]


def _snapshot_has_a_checkpoint(study: Path, trial_id: str) -> bool:
    """Whether the study's saved state (what --resume restores, read with Tune's own reader) knows the trial and
    a checkpoint of it."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(str(study)).trials
    except Exception:  # not written yet
        return False
    return any(trial.trial_id == trial_id and trial.checkpoint is not None for trial in trials)


def test_resume_after_the_driver_is_killed(tiny_hw4_master: Path, tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    study = tmp_path / "results" / "interrupted"
    flags = [
        *tiny_study_argv(tiny_hw4_master, tmp_path, "resume", "interrupted"),
        *f"--num-samples {SAMPLES} --epochs {EPOCHS} --episodes-per-epoch 4 --grace-period {EPOCHS}".split(),
        *"--max-concurrent 1 --num-cpus 2".split(),
    ]
    # One trial at a time, none stopped early: the third trial is held before it reports its second epoch, so the
    # driver is killed with two trials done, a third one mid-way (an epoch logged, more to come), one to suggest.
    interrupted_report = 2 * EPOCHS + 2
    holds = TrialHolds(tmp_path / "holds", [interrupted_report])
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(
            [*holds.argv(), *flags], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, start_new_session=True
        )
        try:
            ended = lambda: None if first.poll() is None else log_path.read_text()[-3000:]  # noqa: E731
            holds.wait(interrupted_report, failed=ended)
            # The driver is not held: it logs the third trial's first epoch and saves the study's state with that
            # epoch's checkpoint (Tune does so after each checkpoint).
            deadline = time.monotonic() + GUARD_S
            while True:
                assert first.poll() is None, log_path.read_text()[-3000:]
                children = _children(uri)
                finished = running = pd.DataFrame()
                if not children.empty and "metrics.val_acc" in children:
                    finished = children[children["status"] == "FINISHED"]
                    running = children[(children["status"] == "RUNNING") & children["metrics.val_acc"].notna()]
                if (
                    len(finished) == 2
                    and len(running) == 1
                    and _snapshot_has_a_checkpoint(study, running["tags.fsl.trial_id"].iloc[0])
                ):
                    break
                assert time.monotonic() < deadline, f"guard: {children.to_dict('records')}"
                time.sleep(0.2)
        finally:
            if first.poll() is None:
                os.kill(first.pid, signal.SIGKILL)  # the driver dies mid-study
            first.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGKILL)  # and the local Ray it started, with the held trial
    # The study's Optuna storage as the killed driver left it, for the sampler checks at the end.
    at_kill = tmp_path / "optuna-at-kill.db"
    shutil.copyfile(study / "optuna.db", at_kill)
    client = mlflow.MlflowClient(uri)
    histories = {run_id: len(client.get_metric_history(run_id, "val_acc")) for run_id in finished["run_id"]}
    interrupted_run = running["run_id"].iloc[0]
    interrupted_trial = running["tags.fsl.trial_id"].iloc[0]
    # The study's saved state had the checkpoint of the last epoch MLflow logged: the resumed trial goes on from there.
    logged_before_kill = max(m.step for m in client.get_metric_history(interrupted_run, "val_acc"))
    assert logged_before_kill == 1

    resumed = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "protonet_search.py"), *flags, "--resume"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=GUARD_S,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert_quiet(resumed.stdout + resumed.stderr)  # the study's own lines, from a real command, no chatter
    assert "Best trial" in resumed.stdout

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
    results = (study / f"trial-{interrupted_trial}" / "result.json").read_text()
    rows = [json.loads(line) for line in results.splitlines()]
    # Tune keeps result.json on the driver and copies it to storage with its snapshot (every second here), so the
    # rows of the last second before the kill can be missing from it (MLflow has them: checked above). What must
    # hold: no epoch twice, and the resumed driver's first epoch is the one after the checkpoint, not epoch 1 again.
    epochs = [row["epoch"] for row in rows]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3, epochs
    resumed_rows = [row["epoch"] for row in rows if row["pid"] != rows[0]["pid"]] or epochs
    assert resumed_rows[0] == logged_before_kill + 1, (rows, logged_before_kill)
    table = pd.read_csv(study / "results.csv")
    assert len(table) == SAMPLES and set(table["mlflow_run_id"]) == set(children["run_id"])

    # The Optuna sampler went on from where it was. Its trials are in the study's Optuna storage (optuna.db beside
    # it), and Tune saves the searcher (OptunaSearch.save: its __dict__, the storage by its URL) with every study
    # snapshot, one file per driver session: the killed driver's last one, and the resumed driver's, which
    # reconnected to the same storage.
    def stored(path: Path, **kwargs) -> optuna.Study:
        return optuna.load_study(study_name="interrupted", storage=f"sqlite:///{path}", **kwargs)

    trials = stored(study / "optuna.db").trials
    assert len(trials) == SAMPLES and all(t.state.name == "COMPLETE" for t in trials)  # none twice, none left open
    states = sorted(study.glob("searcher-state-*.pkl"))  # by session start
    assert len(states) == 2
    final_state = pickle.loads(states[1].read_bytes())
    numbers = {trial_id: ot_trial.number for trial_id, ot_trial in final_state["_ot_trials"].items()}
    assert set(numbers) == set(children["tags.fsl.trial_id"])
    # Every trial's params and value (its last epoch's val_acc) in the storage are those MLflow has for it.
    by_trial = children.set_index("tags.fsl.trial_id")
    for trial_id, number in numbers.items():
        frozen = trials[number]
        assert frozen.value == pytest.approx(by_trial.loc[trial_id, "metrics.val_acc"])
        assert {k: str(v) for k, v in frozen.params.items()} == {
            k: by_trial.loc[trial_id, f"params.{k}"] for k in frozen.params
        }
    # It is the killed driver's study, continued: the two finished trials (with the values logged before the
    # kill) and the interrupted one, then the trial suggested after the resume, which had them as its history.
    # A fresh searcher would have lost them and suggested the first (enqueued) point again.
    before = stored(at_kill).trials
    finished_numbers = sorted(numbers[t] for t in finished["tags.fsl.trial_id"])
    assert [t.state.name for t in before] == ["COMPLETE" if n in finished_numbers else "RUNNING" for n in range(3)]
    assert [t.params for t in before] == [t.params for t in trials[:3]]
    assert [t.datetime_start for t in before] == [t.datetime_start for t in trials[:3]]
    for trial_id, value in zip(finished["tags.fsl.trial_id"], finished["metrics.val_acc"], strict=True):
        assert before[numbers[trial_id]].value == pytest.approx(value)
    (new,) = [trials[numbers[t]] for t in numbers if t not in {*finished["tags.fsl.trial_id"], interrupted_trial}]
    assert new.number == SAMPLES - 1
    assert all(trials[n].datetime_complete < new.datetime_start for n in finished_numbers)
    assert new.params != trials[0].params
    # Replayed from the killed driver's snapshot: its sampler, on the storage as it was at the kill and told the
    # interrupted trial's result, suggests exactly the trial the resumed study ran; with no history, another.
    replay = pickle.loads(states[0].read_bytes())
    interrupted_number = numbers[interrupted_trial]
    at_kill_study = stored(at_kill, sampler=replay["_sampler"])
    at_kill_study.tell(interrupted_number, trials[interrupted_number].value)
    assert at_kill_study.ask(fixed_distributions=replay["_space"]).params == new.params
    no_history = pickle.loads(states[0].read_bytes())
    # (A storage of its own: the sampler remembers the study id it served, 1 in a new SQLite storage.)
    blank = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'blank.db'}", direction="maximize", sampler=no_history["_sampler"]
    )
    assert blank.ask(fixed_distributions=no_history["_space"]).params != new.params
