"""A real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster: a head and two worker nodes, each
its own raylet and object store): DDP workers of one trial on two nodes, data that reaches the nodes only
through the object store, and a study that attaches to the running cluster with --address."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import tiny_study_argv

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
FIXED = ["--param", "lr=0.002", "--param", "augment=none", "--param", "head_depth=0", "--param", "train_way=5"]


@pytest.fixture(scope="module")
def cluster():
    """Head with 1 CPU, two worker nodes with 1 CPU each: a 2-worker trial (1 CPU per worker, plus its small
    driver) cannot fit on one node, so its ranks must be on two machines of the cluster."""
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "object_store_memory": 150 * 1024**2},
    )
    workers = [cluster.add_node(num_cpus=1, num_gpus=0, object_store_memory=150 * 1024**2) for _ in range(2)]
    cluster.wait_for_nodes(timeout=300)  # a guard: nodes register as soon as their raylets are up
    yield {"cluster": cluster, "head": cluster.head_node.node_id, "workers": [w.node_id for w in workers]}
    ray.shutdown()
    cluster.shutdown()


def _results(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def test_a_study_attaches_to_a_running_cluster_with_address(cluster, tiny_hw4_master: Path, tmp_path: Path):
    """The real command, as a user runs it against a cluster someone else started."""
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "attach", "attached") + [
        *"--num-samples 2 --epochs 1 --episodes-per-epoch 2".split(),
        *FIXED,
        "--address",
        cluster["cluster"].address,
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "studies/protonet_search.py", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Started a local Ray instance" not in done.stderr + done.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["attach"])
    parent = runs[runs["tags.fsl.role"] == "study"].iloc[0]
    assert parent["tags.fsl.hardware"].startswith("3 CPU, 0 GPU")  # the cluster's three nodes, not this machine
    nodes = {_results(d)[-1]["node_id"] for d in (tmp_path / "results" / "attached").glob("trial-*")}
    assert nodes and nodes <= {cluster["head"], *cluster["workers"]}


def test_ddp_workers_of_one_trial_run_on_two_nodes_fed_by_the_object_store_only(
    cluster, tiny_hw4_master: Path, tmp_path: Path
):
    """The data folder and its decoded cache are deleted after planning: every node gets the decoded splits
    and episodes from the object store, or the trial fails."""
    import ray

    from fsl.commands.protonet_search import build_parser
    from fsl.study.cli import study_options
    from fsl.study.protonet_study import plan_study
    from fsl.study.runner import run_study
    from fsl.train.config import ProtoNetConfig

    data = Path(shutil.copytree(tiny_hw4_master, tmp_path / "data"))
    cache = tmp_path / "cache"
    argv = tiny_study_argv(data, tmp_path, "multinode", "ddp-two-nodes") + [
        *"--num-samples 1 --workers-per-trial 2 --cpus-per-worker 1".split(),
        "--address",
        cluster["cluster"].address,
    ]
    args = build_parser().parse_args(argv)
    base = ProtoNetConfig(epochs=2, episodes_per_epoch=4, n_query=5, eval_episodes=30, image_size=16)
    plan = plan_study(data, base, FIXED[1::2], study_options(args, "protonet"), cache_dir=cache)
    shutil.rmtree(data)
    shutil.rmtree(cache)

    outcome = run_study(plan)
    assert ray.get_runtime_context().gcs_address == cluster["cluster"].address
    assert outcome.best is not None and 0.0 < outcome.best["best_val_acc"] <= 1.0
    (trial_dir,) = (tmp_path / "results" / "ddp-two-nodes").glob("trial-*")
    results = _results(trial_dir)
    assert [r["epoch"] for r in results] == [1, 2]
    for r in results:
        assert r["ranks_reporting"] == 2 and r["nodes_spanned"] == 2
        nodes = r["worker_nodes"].split(",")
        assert nodes[0] != nodes[1] and set(nodes) <= {cluster["head"], *cluster["workers"]}
        assert r["steps_all_ranks"] == 4 and r["val_acc_rank_spread"] == 0.0
    assert not data.exists() and not cache.exists()
