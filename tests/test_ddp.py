"""--workers-per-trial 2: a real 2-worker DDP run on Ray Train (gloo on the CPU) inside a Tune trial."""

import json
from pathlib import Path

import mlflow
import pytest
from conftest import tiny_study_argv

from studies.protonet_search import main

pytestmark = pytest.mark.ray

FIXED = "--param lr=0.002 --param augment=flip --param head_depth=1 --param distance=cosine --param train_way=5"


def test_two_worker_ddp_trial_trains_on_both_ranks(local_ray, tiny_hw4_master: Path, tmp_path: Path):
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "ddp", "ddp-study") + [
        *"--num-samples 1 --epochs 2 --episodes-per-epoch 6 --workers-per-trial 2 --cpus-per-worker 1".split(),
        *FIXED.split(),
    ]
    assert main(argv) == 0

    (trial_dir,) = (tmp_path / "results" / "ddp-study").glob("trial-*")
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in results] == [1, 2]
    for r in results:
        assert r["world_size"] == 2 and r["ranks_reporting"] == 2
        assert r["episodes_all_ranks"] == 6 and r["local_episodes"] == 3  # the epoch was split across ranks
        assert r["val_acc_rank_spread"] == 0.0  # all-reduced: both ranks report the same accuracy
        assert 0.0 < r["val_acc"] <= 1.0

    # The Train run lives inside the study folder under a name fixed by the trial id, with one checkpoint.
    (train_run,) = (tmp_path / "results" / "ddp-study").glob("train-*")
    assert len(list(train_run.glob("epoch=*"))) == 1

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["ddp"])
    child = runs[runs["tags.fsl.role"] == "trial"].iloc[0]
    assert child["params.distance"] == "cosine" and child["status"] == "FINISHED"
    assert child["metrics.val_acc"] == pytest.approx(results[-1]["val_acc"])
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(child["run_id"], "val_acc")] == [1, 2]
    assert [a.path for a in client.list_artifacts(child["run_id"], "checkpoint")] == ["checkpoint/best_model.pt"]


def test_ddp_trials_stopped_by_tune_release_their_workers(local_ray, tiny_hw4_master: Path, tmp_path: Path):
    """Tune kills a trial when ASHA stops it (here: at its last epoch) before Ray Train can free its workers'
    placement group; without the study's clean-up the second trial would wait for those CPUs forever. The
    test's Ray has no dashboard, so Ray's own State-API-based clean-up cannot do it either."""
    from ray.util.placement_group import placement_group_table

    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "ddp-release", "release") + [
        *"--num-samples 2 --epochs 1 --episodes-per-epoch 2 --workers-per-trial 2 --max-concurrent 1".split(),
        *FIXED.split(),
    ]
    assert main(argv) == 0
    trial_dirs = list((tmp_path / "results" / "release").glob("trial-*"))
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        assert (trial_dir / "result.json").read_text().strip()
    assert all(group["state"] == "REMOVED" for group in placement_group_table().values())


def test_an_epoch_that_does_not_divide_by_the_workers_gives_every_rank_the_same_steps(
    local_ray, tiny_hw4_master: Path, tmp_path: Path
):
    """3 episodes on 2 ranks: each rank steps twice. Unequal steps would leave one rank's gradient all-reduce
    without a partner."""
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "ddp-odd", "odd") + [
        *"--num-samples 1 --epochs 1 --episodes-per-epoch 3 --workers-per-trial 2 --cpus-per-worker 1".split(),
        *FIXED.split(),
    ]
    assert main(argv) == 0
    (trial_dir,) = (tmp_path / "results" / "odd").glob("trial-*")
    (result,) = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert result["ranks_reporting"] == 2 and result["local_episodes"] == 2 and result["episodes_all_ranks"] == 4
    assert result["val_acc_rank_spread"] == 0.0
