"""--workers-per-trial 2: real 2-worker DDP runs on Ray Train (gloo on the CPU) inside Tune trials.

One study serves every check (each DDP trial starts a controller and two worker processes, the suite's costliest
step): two trials one after the other, 3 episodes per epoch on 2 ranks, each trial stopped by ASHA at its last epoch."""

import json
from pathlib import Path

import mlflow
import pytest
from conftest import tiny_study_argv

from fsl.commands.protonet_search import main

pytestmark = pytest.mark.ray

FIXED = "--param lr=0.002 --param augment=flip --param head_depth=1 --param distance=cosine --param train_way=5"
EPOCHS = 2


@pytest.fixture(scope="module")
def ddp_study(local_ray, tiny_hw4_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    argv = tiny_study_argv(tiny_hw4_master, tmp, "ddp", "ddp-study") + [
        *f"--num-samples 2 --epochs {EPOCHS} --grace-period {EPOCHS} --episodes-per-epoch 3".split(),
        *"--workers-per-trial 2 --cpus-per-worker 1 --max-concurrent 1".split(),
        *FIXED.split(),
    ]
    assert main(argv) == 0
    return tmp


def _results(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def test_two_worker_ddp_trials_train_on_both_ranks(ddp_study: Path):
    trial_dirs = sorted((ddp_study / "results" / "ddp-study").glob("trial-*"))
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        results = _results(trial_dir)
        assert [r["epoch"] for r in results] == list(range(1, EPOCHS + 1))
        for r in results:
            assert r["world_size"] == 2 and r["ranks_reporting"] == 2
            assert r["val_acc_rank_spread"] == 0.0  # all-reduced: both ranks report the same accuracy
            assert 0.0 < r["val_acc"] <= 1.0

    # Each Train run lives inside the study folder under a name fixed by its trial id, with one checkpoint.
    train_runs = list((ddp_study / "results" / "ddp-study").glob("train-*"))
    assert len(train_runs) == 2
    for train_run in train_runs:
        assert len(list(train_run.glob("epoch=*"))) == 1

    mlflow.set_tracking_uri(f"sqlite:///{ddp_study}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["ddp"])
    children = runs[runs["tags.fsl.role"] == "trial"]
    assert len(children) == 2
    client = mlflow.MlflowClient()
    for _, child in children.iterrows():
        assert child["params.distance"] == "cosine" and child["status"] == "FINISHED"
        (trial_dir,) = (ddp_study / "results" / "ddp-study").glob(f"trial-{child['tags.fsl.trial_id']}")
        assert child["metrics.val_acc"] == pytest.approx(_results(trial_dir)[-1]["val_acc"])
        assert [m.step for m in client.get_metric_history(child["run_id"], "val_acc")] == list(range(1, EPOCHS + 1))
        assert [a.path for a in client.list_artifacts(child["run_id"], "checkpoint")] == ["checkpoint/best_model.pt"]


def test_an_epoch_that_does_not_divide_by_the_workers_gives_every_rank_the_same_steps(ddp_study: Path):
    """3 episodes on 2 ranks: each rank steps twice (the epoch is split across ranks, rounded up). Unequal steps
    would leave one rank's gradient all-reduce without a partner."""
    for trial_dir in (ddp_study / "results" / "ddp-study").glob("trial-*"):
        for r in _results(trial_dir):
            assert r["local_steps"] == 2 and r["steps_all_ranks"] == 4, r


def test_ddp_trials_stopped_by_tune_release_their_workers(ddp_study: Path):
    """Tune kills a trial when ASHA stops it (here: at its last epoch) before Ray Train can free its workers'
    placement group; without the study's clean-up the second trial would wait for those CPUs forever (the study
    above runs one trial at a time and finished both). The test's Ray has no dashboard, so Ray's own
    State-API-based clean-up cannot do it either."""
    from ray.util.placement_group import placement_group_table

    assert all(_results(d) for d in (ddp_study / "results" / "ddp-study").glob("trial-*"))
    assert all(group["state"] == "REMOVED" for group in placement_group_table().values())
