"""A Ray Train worker of a 2-worker DDP trial is killed (SIGKILL) with an epoch trained and not yet reported: Ray
Train replaces the worker group and the new one continues from the last checkpoint, so the study still succeeds,
every epoch is trained and reported once, and the trial's one MLflow child run has each epoch once. The worker is
held at that point (tests/trial_holds.py) until it is killed."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import tiny_study_argv
from ray._private import state as gcs_state
from trial_holds import GUARD_S, TrialHolds

pytestmark = pytest.mark.ray

FIXED = "--param lr=0.002 --param augment=flip --param head_depth=1 --param distance=cosine --param train_way=5"
EPOCHS = 3
SECOND_EPOCH = 2  # report 2 of the study's one trial
WORKER_CLASS = "RayTrainWorker"


def _train_workers(state: str | None = None) -> list[dict]:
    """Ray Train's worker actors, from the GCS actor table that Ray's State API lists. `ray.util.state.list_actors`
    itself needs a dashboard, which this test's Ray does not run (and its default address, 127.0.0.1:8265, may be
    another Ray's on a shared machine)."""
    actors = gcs_state.actors(actor_state_name=state).values()
    return [actor for actor in actors if actor["ActorClassName"] == WORKER_CLASS]


class HeldWorkerKiller(threading.Thread):
    """Once rank 0 is held before it reports the second epoch (the first one logged in MLflow, the second one
    trained), kills it: the trial still has epochs to go, however fast the machine."""

    def __init__(self, holds: TrialHolds, uri: str) -> None:
        super().__init__(daemon=True)
        self.holds, self.uri = holds, uri
        self.killed: dict = {}
        self.error: BaseException | None = None
        self.study_ended = threading.Event()

    def run(self) -> None:
        try:
            pid = self.holds.wait(SECOND_EPOCH, failed=lambda: "the study ended" if self.study_ended.is_set() else None)
            client = mlflow.MlflowClient(self.uri)
            experiment = client.get_experiment_by_name("worker-failure")
            (run,) = client.search_runs([experiment.experiment_id], "tags.`fsl.role` = 'trial'")
            deadline = time.monotonic() + GUARD_S
            while not (logged := [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]):
                assert time.monotonic() < deadline, "guard: the first epoch never reached MLflow"
                time.sleep(0.1)
            (victim,) = [actor for actor in _train_workers("ALIVE") if actor["Pid"] == pid]
            self.killed.update(pid=pid, actor_id=victim["ActorID"], epochs_logged=len(logged))
            os.kill(pid, signal.SIGKILL)
        except BaseException as err:  # reported by the test, after the study ends
            self.error = err
        finally:
            self.holds.release_all()  # a hold left in place would keep the study waiting


def test_a_killed_train_worker_is_replaced_and_the_trial_resumes_from_its_checkpoint(
    local_ray, tiny_hw4_master: Path, tmp_path: Path
):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "worker-failure", "worker-kill") + [
        *f"--num-samples 1 --epochs {EPOCHS} --episodes-per-epoch 4".split(),
        *"--workers-per-trial 2 --cpus-per-worker 1".split(),
        *FIXED.split(),
    ]
    holds = TrialHolds(tmp_path / "holds", [SECOND_EPOCH])
    killer = HeldWorkerKiller(holds, uri)
    killer.start()
    try:
        assert holds.run(argv) == 0
    finally:
        killer.study_ended.set()
        killer.join(timeout=60)
    if killer.error is not None:
        raise killer.error
    killed = killer.killed

    assert killed["epochs_logged"] == SECOND_EPOCH - 1  # killed with the second epoch trained, not reported

    # Ray Train, not Tune, recovered: the killed worker is dead, its group was replaced once (2 + 2 workers),
    # and Tune never saw the trial fail (its own record of the trial: no failures).
    workers = {actor["ActorID"]: actor for actor in _train_workers()}
    assert workers[killed["actor_id"]]["State"] == "DEAD"
    assert len(workers) == 4, [(a["Pid"], a["State"]) for a in workers.values()]
    study = tmp_path / "results" / "worker-kill"
    (trial_dir,) = study.glob("trial-*")
    (experiment_state,) = study.glob("experiment_state-*.json")
    ((_, run_metadata),) = json.loads(experiment_state.read_text())["trial_data"]
    assert json.loads(run_metadata)["num_failures"] == 0

    # Each epoch was reported to Tune exactly once, in order, by both ranks. The epochs before the kill ran on
    # the first worker group, the rest on its replacement (another placement group), which started at the epoch
    # after the last checkpoint: a group that started over would report epoch 1 again.
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in results] == list(range(1, EPOCHS + 1))
    assert all(r["ranks_reporting"] == 2 and r["world_size"] == 2 for r in results)
    groups = [r["train_placement_group"] for r in results]
    assert len(set(groups)) == 2, groups
    restart = groups.index(groups[-1])  # the replacement group's first epoch (0-based)
    assert groups == [groups[0]] * restart + [groups[-1]] * (EPOCHS - restart), groups
    assert restart >= killed["epochs_logged"]  # the first group's reported epochs were kept, not trained again
    # It restored the best-so-far from the checkpoint too: best_val_acc is the running maximum across the restart.
    running_best = [max(r["val_acc"] for r in results[: i + 1]) for i in range(EPOCHS)]
    assert [r["best_val_acc"] for r in results] == pytest.approx(running_best)
    (train_run,) = study.glob("train-*")
    assert [p.name for p in train_run.glob("epoch=*")] == [f"epoch={EPOCHS:04d}"]

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("worker-failure")
    (child,) = client.search_runs([experiment.experiment_id], "tags.`fsl.role` = 'trial'")
    assert child.info.status == "FINISHED" and "fsl.error" not in child.data.tags
    for key in ("val_acc", "train_loss"):
        history = client.get_metric_history(child.info.run_id, key)
        assert [m.step for m in history] == list(range(1, EPOCHS + 1)), key
        assert [m.value for m in history] == pytest.approx([r[key] for r in results]), key
    table = pd.read_csv(study / "results.csv")
    assert table["status"].tolist() == ["TERMINATED"] and table["mlflow_run_id"].tolist() == [child.info.run_id]
    assert table["epochs_run"].tolist() == [EPOCHS]
