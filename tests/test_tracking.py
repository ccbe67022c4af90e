"""The MLflow callback against a real SQLite store: parent/child runs, no duplicates on restarts, clean-up of
children whose trial Tune never saved, and the tracking URI rules."""

import pickle
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from fsl.tracking.mlflow_callback import MLflowStudyCallback
from fsl.tracking.recorder import child_run_name, result_nodes
from fsl.tracking.uri import artifact_location_for, resolve_tracking_uri


def _callback(tmp_path: Path, study_path: str = "/studies/s1") -> MLflowStudyCallback:
    return MLflowStudyCallback(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="unit", study_name="s1", study_path=study_path,
        searched=["lr", "distance"], study_params={"num_samples": 3}, study_metrics={"untrained_val_acc": 0.3},
        results_dir=str(tmp_path / "summary"),
    )  # fmt: skip


def _trial(trial_id: str, **config) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"lr": 0.001, "distance": "cosine", "epochs": 3, **config})


def test_children_are_found_again_and_epochs_are_logged_once(tmp_path: Path):
    callback = _callback(tmp_path)
    callback.setup()
    trial = _trial("t1")
    callback.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc": 0.5 + epoch / 10, "train_loss": 1.0})

    # A new driver process (a resumed study): same parent, same child, epochs 1-2 not logged again.
    again = _callback(tmp_path)
    again.setup()
    assert again.runs.parent_run_id == callback.runs.parent_run_id
    assert again.runs.child_run(trial) == callback.runs.child_run(trial)
    for epoch in (1, 2, 3):
        again.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc": 0.9, "train_loss": 0.5})
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    history = client.get_metric_history(callback.runs.child_run(trial), "val_acc")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 0.6), (2, 0.7), (3, 0.9)]
    run = client.get_run(callback.runs.child_run(trial))
    assert run.data.params["lr"] == "0.001" and run.data.tags["mlflow.parentRunId"] == callback.runs.parent_run_id
    assert run.info.run_name == "lr=1.00e-03 distance=cosine"
    parent = client.get_run(callback.runs.parent_run_id)
    assert parent.info.run_name == "s1" and parent.data.params["num_samples"] == "3"
    assert parent.data.metrics["untrained_val_acc"] == pytest.approx(0.3)


def test_another_study_gets_its_own_parent(tmp_path: Path):
    first, second = _callback(tmp_path, "/studies/a"), _callback(tmp_path, "/studies/b")
    assert first.runs.ensure_parent() != second.runs.ensure_parent()


def test_children_of_trials_tune_never_saved_are_closed(tmp_path: Path):
    callback = _callback(tmp_path)
    callback.setup()
    known, empty, logged = _trial("known"), _trial("lost-empty"), _trial("lost-logged")
    for trial in (known, empty, logged):
        callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], logged, {"epoch": 1, "val_acc": 0.4})
    ids = {t.trial_id: callback.runs.child_run(t) for t in (known, empty, logged)}

    resumed = _callback(tmp_path)
    resumed.setup()
    resumed.on_step_begin(0, [known])
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(ids["known"]).info.status == "RUNNING"
    assert client.get_run(ids["lost-empty"]).info.lifecycle_stage == "deleted"
    lost = client.get_run(ids["lost-logged"])
    assert lost.info.status == "KILLED" and lost.data.tags["fsl.orphaned"] == "true"
    assert lost.data.metrics["val_acc"] == pytest.approx(0.4)  # what was logged is kept


def test_after_listing_the_children_a_known_trial_goes_on_in_its_run_and_a_new_one_gets_its_own(tmp_path: Path):
    first = _callback(tmp_path)
    first.setup()
    old, new = _trial("old"), _trial("new")
    first.on_trial_start(0, [], old)
    first.on_trial_result(0, [], old, {"epoch": 1, "val_acc": 0.4})

    # A resumed driver lists the parent's children once (at its first step) and works from that list.
    resumed = _callback(tmp_path)
    resumed.setup()
    resumed.on_step_begin(0, [old, new])
    resumed.on_trial_start(0, [], old)
    resumed.on_trial_start(0, [], new)
    for epoch in (1, 2):
        resumed.on_trial_result(0, [], old, {"epoch": epoch, "val_acc": 0.5, "best_val_acc": 0.5})
    resumed.on_trial_result(0, [], new, {"epoch": 1, "val_acc": 0.6, "best_val_acc": 0.6})
    for trial in (old, new):
        trial.last_result, trial.checkpoint = {"epoch": 2, "best_val_acc": 0.5}, None
        resumed.on_trial_complete(0, [], trial)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("unit").experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{resumed.runs.parent_run_id}'")
    by_trial = {run.data.tags["fsl.trial_id"]: run for run in children}
    assert sorted(by_trial) == ["new", "old"] and len(children) == 2
    assert by_trial["old"].info.run_id == first.runs.child_run(old)
    assert [m.step for m in client.get_metric_history(by_trial["old"].info.run_id, "val_acc")] == [1, 2]
    for run in children:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "final_best_val_acc")) == 1


def test_run_names():
    assert child_run_name({"lr": 0.00032, "augment": "flip"}, ["lr", "augment"], "t") == "lr=3.20e-04 augment=flip"
    assert child_run_name({}, [], "trial_1") == "trial_1"


def test_tracking_uri_rules(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, cwd=tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db").startswith("sqlite:////")  # made absolute
    with pytest.raises(ValueError, match=r"--tracking-uri='file:///tmp/mlruns': expected a URI"):
        resolve_tracking_uri("file:///tmp/mlruns")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    with pytest.raises(ValueError, match=r"MLFLOW_TRACKING_URI='./mlruns'"):
        resolve_tracking_uri(None)
    assert (
        artifact_location_for(f"sqlite:///{tmp_path}/m.db", "my exp") == (tmp_path / "mlartifacts" / "my_exp").as_uri()
    )
    assert artifact_location_for("http://host:5000", "x") is None


def test_the_ui_link_points_at_the_tracking_server_or_the_local_ui():
    from fsl.tracking.uri import open_ui_line, runs_page

    assert runs_page("http://10.0.0.5:5077/", "3") == "http://10.0.0.5:5077/#/experiments/3/runs"
    assert open_ui_line("http://10.0.0.5:5077", "3") == "  open the UI: http://10.0.0.5:5077/#/experiments/3/runs"
    line = open_ui_line("sqlite:////tmp/x/mlflow.db", "1")
    assert "ui --backend-store-uri sqlite:////tmp/x/mlflow.db --port 5000" in line
    assert line.endswith("then http://127.0.0.1:5000/#/experiments/1/runs")
    # --ui-port: 5000 is taken by AirPlay on macOS.
    line = open_ui_line("sqlite:////tmp/x/mlflow.db", "1", 5077)
    assert "--port 5077  then http://127.0.0.1:5077/#/experiments/1/runs" in line


def test_the_nodes_of_a_result_are_every_rank_s_node_once_in_order():
    assert result_nodes({"node_id": "aa"}) == ["aa"]
    assert result_nodes({"node_id": "aa", "worker_nodes": "bb,aa,bb,?"}) == ["bb", "aa"]  # a DDP trial's ranks
    assert result_nodes({}) == []


def test_a_trial_run_keeps_every_node_it_ran_on_across_driver_processes(tmp_path: Path):
    callback = _callback(tmp_path)
    callback.setup()
    trial = _trial("t1")
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {"epoch": 1, "val_acc": 0.5, "node_id": "node-a"})
    callback.on_trial_result(0, [], trial, {"epoch": 2, "val_acc": 0.6, "node_id": "node-a"})
    # A resumed study's new driver: the trial continues on another node.
    again = _callback(tmp_path)
    again.setup()
    again.on_trial_result(0, [], trial, {"epoch": 3, "val_acc": 0.7, "node_id": "node-b"})
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(callback.runs.child_run(trial))
    assert run.data.tags["fsl.nodes"] == "node-a,node-b"


def test_a_lock_after_a_child_run_is_created_does_not_create_it_twice(tmp_path: Path):
    """Another process locks the SQLite store between a trial's create_run and its params: the callback waits,
    tries again, and finds the run it created (a second create_run was the bug that gave 61 runs for 60)."""
    callback = _callback(tmp_path)
    callback.setup()
    trial = _trial("t1")
    callback.on_step_begin(0, [trial])  # the study's first step lists the children: a new trial is created unsearched
    client = callback.runs.client
    other = sqlite3.connect(tmp_path / "mlflow.db", timeout=30, isolation_level=None, check_same_thread=False)
    create_run = client.create_run

    def create_then_lock(*args, **kwargs):
        run = create_run(*args, **kwargs)
        other.execute("BEGIN EXCLUSIVE")  # the other process takes the store before the params are written
        threading.Thread(target=release_when_seen, daemon=True).start()
        return run

    def release_when_seen() -> None:
        deadline = time.monotonic() + 120
        while not callback.queue.lock_warned and time.monotonic() < deadline:  # the callback met the lock
            time.sleep(0.05)
        other.execute("ROLLBACK")

    client.create_run = create_then_lock
    callback.on_trial_start(0, [], trial)
    client.create_run = create_run
    assert callback.queue.lock_warned
    runs = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(
        [callback.runs.experiment_id], f"tags.`mlflow.parentRunId` = '{callback.runs.parent_run_id}'"
    )
    assert len(runs) == 1 and runs[0].data.params["lr"] == "0.001"


def test_a_callback_pickled_before_the_recorder_split_still_loads_and_finds_its_runs(tmp_path: Path):
    """Tune saved the callback's own fields (tuner.pkl) before they moved into a StudyRecord: a sync of such a
    study unpickles that state and writes into the same parent run."""
    callback = _callback(tmp_path)
    callback.setup()
    old_state = {
        **{name: getattr(callback.record, name) for name in ("tracking_uri", "experiment", "study_name", "searched")},
        **{name: getattr(callback.record, name) for name in ("study_path", "study_params", "study_metrics", "metric")},
        "results_dir": callback.results_dir,
        "tags": {},
        "trial_tags": (),  # no cell_label: older still
    }
    restored = MLflowStudyCallback.__new__(MLflowStudyCallback)
    restored.__setstate__(old_state)
    assert restored.record == callback.record and restored.results_dir == callback.results_dir
    assert restored.runs.ensure_parent() == callback.runs.parent_run_id
    assert pickle.loads(pickle.dumps(restored)).record == callback.record
