"""The tracking server stops during a study: the study finishes with every result kept by Ray, and
studies/sync_mlflow.py replays what MLflow missed once the server is back; a second replay changes nothing.
A server back while the study still runs is caught up by the study itself.

The study's trials are held at chosen epoch reports (tests/trial_holds.py) while the test stops or starts the
server, so each step happens while the study provably has trials left, however fast or slow the machine is."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_study_argv
from mlflow import MlflowClient
from mlflow_server import start_mlflow_server
from trial_holds import GUARD_S, TrialHolds

from fsl.tracking.uri import sync_command

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parent.parent
SAMPLES, EPOCHS = 3, 2


def _study_argv(data: Path, tmp: Path, url: str, study: str, holds: TrialHolds) -> list[str]:
    """The study, in a process of its own, one trial at a time, every trial its EPOCHS epochs (no early stop):
    report N is trial (N - 1) // EPOCHS + 1."""
    argv = tiny_study_argv(data, tmp, "outage", study)
    argv[argv.index("--tracking-uri") + 1] = url
    return [
        *holds.argv(),
        *argv,
        *f"--num-samples {SAMPLES} --epochs {EPOCHS} --episodes-per-epoch 4 --grace-period {EPOCHS}".split(),
        *"--max-concurrent 1 --num-cpus 2".split(),
    ]


def _runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("outage")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _children(client: MlflowClient) -> list:
    return [r for r in _runs(client) if r.data.tags.get("fsl.role") == "trial"]


def _wait_for(condition, timeout_s: float, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the study ended before {what}:\n{log.read_text()[-3000:]}"
        try:
            if condition():
                return
        except Exception:  # the store is being created
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def _ended(process: subprocess.Popen, log: Path):  # noqa: ANN202
    """For TrialHolds.wait: why waiting is pointless (the study ended), or None."""
    return lambda: None if process.poll() is None else f"the study ended:\n{log.read_text()[-3000:]}"


def _launch(argv: list[str], cwd: Path, out) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, "RAY_DEDUP_LOGS": "0"}
    )


def _wait_for_a_finished_run(client: MlflowClient, study: subprocess.Popen, log: Path) -> None:
    finished = lambda: any(r.info.status == "FINISHED" for r in _children(client))  # noqa: E731
    _wait_for(finished, GUARD_S, "a trial's run to finish in MLflow", study, log)


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[tuple[str, int | None]]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [(item.path, item.file_size)]
    return found


def _store_state(client: MlflowClient) -> dict:
    """Everything a replay could change: each run's status, end time, params, tags, every metric's history
    (timestamps included) and its artifacts."""
    state = {}
    for run in _runs(client):
        run_id = run.info.run_id
        histories = {
            key: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))
            for key in run.data.metrics
        }
        state[run_id] = (
            run.info.status,
            run.info.end_time,
            run.data.params,
            run.data.tags,
            histories,
            _artifacts(client, run_id),
            sorted((i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs),
        )
    experiments = sorted({run.info.experiment_id for run in _runs(client)})
    state["logged models"] = sorted((m.model_id, m.source_run_id) for m in client.search_logged_models(experiments))
    return state


def _sync(study: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "studies" / "sync_mlflow.py"), str(study)],
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )


def _check_complete(client: MlflowClient, study: Path) -> None:
    """One finished child per trial with every epoch once, the parent finished with its summary and best."""
    runs = _runs(client)
    parents = [r for r in runs if r.data.tags.get("fsl.role") == "study"]
    children = [r for r in runs if r.data.tags.get("fsl.role") == "trial"]
    assert len(parents) == 1
    parent = parents[0]
    table = pd.read_csv(study / "results.csv")
    assert len(children) == len(table) and {c.data.tags["fsl.trial_id"] for c in children} == set(table["trial_id"])
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        for key in ("val_acc", "train_loss", "val_acc_ci95"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert steps == list(range(1, EPOCHS + 1)), key
        assert {"final_best_val_acc", "best_epoch", "epochs_run"} <= set(child.data.metrics)
        assert child.data.params["lr"]
        assert [path for path, _ in _artifacts(client, child.info.run_id)] == ["checkpoint/best_model.pt"]
    # The results table names each trial's run, and the parent holds the summary and the best trial.
    assert set(table["mlflow_run_id"]) == {c.info.run_id for c in children}
    assert parent.info.status == "FINISHED"
    best = table.iloc[0]
    assert parent.data.tags["fsl.best_trial_id"] == best["trial_id"]
    assert parent.data.metrics["best_val_acc"] == pytest.approx(best["best_val_acc"])
    logged = {path for path, _ in _artifacts(client, parent.info.run_id)}
    assert {"results/results.csv", "results/results.md", "results/val_acc.png", "study.yaml"} <= logged
    # Each run has the study's three datasets once, and only the best trial's run has a model, once.
    for run in runs:
        assert len(run.inputs.dataset_inputs) == 3, run.info.run_id
    models = client.search_logged_models([parent.info.experiment_id])
    assert [m.source_run_id for m in models] == [best["mlflow_run_id"]]
    assert parent.data.tags["fsl.model_uri"] == f"models:/{models[0].model_id}"


def test_a_stopped_server_is_replayed_by_sync_mlflow_once(tiny_hw4_master: Path, tmp_path: Path):
    server = start_mlflow_server(tmp_path / "server")
    port = int(server.url.rsplit(":", 1)[1])
    client = MlflowClient(server.url)
    log = tmp_path / "study.log"
    second_trial = EPOCHS + 1  # its first report
    holds = TrialHolds(tmp_path / "holds", [second_trial])
    with log.open("w") as out:
        study = _launch(_study_argv(tiny_hw4_master, tmp_path, server.url, "outage", holds), tmp_path, out)
        try:
            holds.wait(second_trial, failed=_ended(study, log))
            _wait_for_a_finished_run(client, study, log)
            server.stop()  # the tracking server goes away mid-study: two trials are still to report
            holds.release(second_trial)
            assert study.wait(timeout=GUARD_S) == 0, log.read_text()[-3000:]
        finally:
            holds.release_all()
            if study.poll() is None:
                study.kill()
    output = log.read_text()
    assert f"warning: MLflow at {server.url} failed" in output
    study_path = tmp_path / "results" / "outage"
    assert f"run: {sync_command(str(study_path), server.url)}" in output
    table = pd.read_csv(study_path / "results.csv")
    assert len(table) == SAMPLES and (table["status"] == "TERMINATED").all()  # Ray kept every trial

    server = start_mlflow_server(tmp_path / "server", port=port)  # back, on the same store
    try:
        missed = [c for c in _children(client) if c.info.status != "FINISHED"]
        assert len(_children(client)) < SAMPLES or missed, "the outage should have left something unlogged"

        first = _sync(study_path)
        assert first.returncode == 0, first.stderr[-3000:]
        assert first.stdout.startswith(f"Synced study 'outage' ({SAMPLES} trials)"), first.stdout
        _check_complete(client, study_path)
        state = _store_state(client)

        second = _sync(study_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert second.stdout.startswith(f"MLflow at {server.url} already had study 'outage'"), second.stdout
        assert _store_state(client) == state  # a second replay changes nothing
    finally:
        server.stop()


def test_a_server_back_before_the_study_ends_is_caught_up_by_the_study(tiny_hw4_master: Path, tmp_path: Path):
    server = start_mlflow_server(tmp_path / "server")
    port = int(server.url.rsplit(":", 1)[1])
    client = MlflowClient(server.url)
    study_path = tmp_path / "results" / "back"
    log = tmp_path / "study.log"
    # The second trial is held at its first report until the server is stopped, and at its second one until the
    # server answers again: results come in while the server is away, and the study is still running when it is back.
    first_epoch, second_epoch = EPOCHS + 1, EPOCHS + 2
    holds = TrialHolds(tmp_path / "holds", [first_epoch, second_epoch])
    with log.open("w") as out:
        study = _launch(_study_argv(tiny_hw4_master, tmp_path, server.url, "back", holds), tmp_path, out)
        try:
            holds.wait(first_epoch, failed=_ended(study, log))
            _wait_for_a_finished_run(client, study, log)
            server.stop()
            holds.release(first_epoch)  # its first epoch is reported while the server is away
            holds.wait(second_epoch, failed=_ended(study, log))
            _wait_for(lambda: "warning: MLflow at" in log.read_text(), GUARD_S, "the study to notice", study, log)
            server = start_mlflow_server(tmp_path / "server", port=port)
            assert study.poll() is None and holds.is_held(second_epoch)  # the study has trials left to run
            holds.release(second_epoch)
            assert study.wait(timeout=GUARD_S) == 0, log.read_text()[-3000:]

            output = log.read_text()
            assert f"MLflow at {server.url} answers again after" in output
            assert sync_command(str(study_path), server.url) not in output  # nothing was left to replay
            _check_complete(client, study_path)
            first = _sync(study_path)
            assert first.returncode == 0 and "already had study 'back'" in first.stdout, first.stdout + first.stderr
        finally:
            holds.release_all()
            if study.poll() is None:
                study.kill()
            server.stop()


def test_sync_of_a_folder_that_is_no_study_is_one_line(tmp_path: Path):
    run = _sync(tmp_path)
    assert run.returncode == 2
    assert (
        run.stderr.strip()
        == f"error: {tmp_path}: not a study folder (no tuner.pkl); give the folder <storage>/<study name>"
    )
