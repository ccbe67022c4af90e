"""b8: what growing with an autoscaling cluster costs a study, on a real autoscaling Ray cluster on this machine
(bench/fake_cluster.py: Ray's fake multi-node provider starts local nodes as the cluster's demand asks).

The cluster: a head with 1 CPU and no GPU, and a `gpu-node` type of 1 CPU and 1 logical GPU (the trials train
on the CPU), up to 2 of them. The same ProtoNet study runs on both sides (the tiny demo data at 16 px, every
search dimension fixed, 4 trials of 2 epochs; --gpus-per-worker 1, so trials run only on gpu-nodes, two at a
time), attached with --address as on a real cluster and reading the node types from the autoscaler's config:

- ours: the GPU nodes start from zero (min_workers 0): the study's pending trials make the autoscaler add them.
- baseline: both GPU nodes are up before the study starts (min_workers 2), as with a fixed cluster.

Rows: the study's wall time on each side (ratio = baseline / ours: below 1, growing costs time), and the time
from a pending request to its start on a node the autoscaler adds for it, against the same request started on a
node already up (a task asking for 1 GPU that returns when it starts; a trial adds its own process start on both
sides alike). A fake node is a local raylet: it starts in seconds, where a cloud GPU node takes minutes, so the
first row is the study's own share of the cost (queueing, placement, the autoscaler's 1-s update loop), not a
cloud's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.b4_ray_overhead import run_study_quietly, study_workspace
from bench.common import Row, demo_data, make_row, median
from bench.fake_cluster import FakeAutoscalingCluster, environment, wait_until
from fsl.distributed.cluster_shape import CONFIG_ENV
from fsl.distributed.train_trial import TrialResources
from fsl.study.runner import StudyOptions
from fsl.train.config import ProtoNetConfig

GPU_NODES = 2
FIXED = ["lr=0.002", "augment=none", "head_depth=0", "train_way=5", "distance=euclidean"]
GUARD_S = 900.0


def _gpu_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))


def _start_latency() -> float:
    """Seconds from submitting a 1-GPU task to its start."""
    import ray

    @ray.remote(num_cpus=1, num_gpus=1)
    def started() -> float:
        return time.time()

    submitted = time.time()
    return ray.get(started.remote(), timeout=GUARD_S) - submitted


def _side(work: Path, side: str, repeat: int, quick: bool) -> tuple[float, float]:
    """One study on a fresh cluster, then one start probe: (study seconds, probe seconds)."""
    from fsl.study.protonet_study import plan_study

    present = side == "baseline"
    node = {"resources": {"CPU": 1, "GPU": 1}, "min_workers": GPU_NODES if present else 0, "max_workers": GPU_NODES}
    cluster = FakeAutoscalingCluster({"gpu-node": node}, head_cpus=1, idle_timeout_minutes=0.1, max_workers=GPU_NODES)
    try:
        with environment({CONFIG_ENV: str(cluster.config_path)}):  # the study reads the node types there
            cluster.start()
            with cluster.driver(log_to_driver=False):  # the table, not the autoscaler's lines
                if present:
                    wait_until(lambda: _gpu_nodes() == GPU_NODES, GUARD_S, "the GPU nodes to be up")
                else:
                    assert _gpu_nodes() == 0
                trials, epochs = (2, 1) if quick else (4, 2)
                base = ProtoNetConfig(
                    epochs=epochs, episodes_per_epoch=4, n_query=5, eval_episodes=30, image_size=16, seed=repeat
                )
                options = StudyOptions(
                    study_name=f"{side}-{repeat}", storage=str(work / "results"),
                    tracking_uri=f"sqlite:///{work}/mlflow.db", experiment="bench-b8", num_samples=trials,
                    resources=TrialResources(1, 1.0, 1.0), address=cluster.address, seed=repeat, grace_period=epochs,
                )  # fmt: skip
                data = demo_data(16, n_train_classes=8, n_val_classes=5, images_per_class=20)
                plan = plan_study(data, base, FIXED, options)
                started = time.perf_counter()
                outcome = run_study_quietly(plan, work / "studies.log")
                study_s = time.perf_counter() - started
                if len(outcome.table) != trials or set(outcome.table["status"]) != {"TERMINATED"}:
                    raise RuntimeError(f"the {side} study did not finish every trial; see {work / 'studies.log'}")
                if not present:  # a new node for the probe: wait until the study's have gone idle and away
                    wait_until(lambda: _gpu_nodes() == 0, GUARD_S, "the idle GPU nodes to go away")
                return study_s, _start_latency()
    finally:
        cluster.shutdown()


def run(quick: bool) -> list[Row]:
    repeats = 1 if quick else int(os.environ.get("BENCH_B8_REPEATS", 2))
    studies: dict[str, list[float]] = {"ours": [], "baseline": []}
    probes: dict[str, list[float]] = {"ours": [], "baseline": []}
    with study_workspace("b8") as work:
        for repeat in range(repeats):
            # Alternate which side goes first (machine load drifts).
            for side in ("ours", "baseline") if repeat % 2 == 0 else ("baseline", "ours"):
                study_s, probe_s = _side(work, side, repeat, quick)
                studies[side].append(study_s)
                probes[side].append(probe_s)
    return [
        make_row(
            "b8 study wall time, GPU nodes added as trials ask vs all up from the start",
            median(studies["ours"]),
            median(studies["baseline"]),
            "s",
            0.5,
            note=f"{repeats} run(s) per side, a fresh cluster each; 2 x 1-GPU fake nodes, which start in seconds",
            higher_is_better=False,
            samples=studies,
        ),
        make_row(
            "b8 pending 1-GPU request to its start: on a node added for it vs on a node up",
            median(probes["ours"]),
            median(probes["baseline"]),
            "s",
            0.05,
            note="a Ray task; the autoscaler updates every 1 s here; a fake node is a local raylet",
            higher_is_better=False,
            samples=probes,
        ),
    ]
