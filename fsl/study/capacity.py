"""How many of a study's trials a Ray cluster holds, and whether it can hold them at all: the checks and sizing
run_study makes once Ray is up, before any trial starts (a local Ray's resources, or what a cluster at --address
can grow to: fsl.distributed.cluster_shape), and that a local --storage is one every node sees."""

from __future__ import annotations

import math
import os
from pathlib import Path

from fsl.distributed.train_trial import TrialResources
from fsl.study.runner import DRIVER_CPU, StudyOptions


def check_storage_on_every_node(options: StudyOptions, timeout_s: float = 120.0) -> None:
    """With --address, a local --storage must be a folder every node of the cluster sees (a shared file system):
    trials on other nodes write their checkpoints there. Each node up now is asked whether it sees a marker file
    written here; nodes that join later are checked by Ray itself when a trial saves a checkpoint there."""
    if not options.address or not options.storage_is_local:
        return
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    others = [node for node in ray.nodes() if node["Alive"] and node["NodeID"] != here]
    if not others:
        return
    marker = Path(options.storage) / f".fsl-storage-check-{uuid.uuid4().hex}"
    marker.write_text("written by the study's driver; every node must see it\n")
    sees = ray.remote(num_cpus=0, max_retries=0)(os.path.exists)
    answers: list[bool | None] = []
    try:
        asked = [
            sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                str(marker)
            )
            for node in others
        ]
        for answer in asked:
            try:
                answers.append(ray.get(answer, timeout=timeout_s))
            except ray.exceptions.RayError:
                # A node that went away meanwhile (or did not answer): Ray's own check covers it if a trial
                # ever saves a checkpoint there.
                answers.append(None)
    finally:
        marker.unlink(missing_ok=True)
    blind = [node["NodeManagerAddress"] for node, seen in zip(others, answers, strict=True) if seen is False]
    if blind:
        raise ValueError(
            f"--storage {options.storage}: a local folder that {len(blind)} of the cluster's {len(others) + 1} "
            f"nodes cannot see (e.g. {blind[0]}); with --address use s3://... or a folder every node mounts"
        )


def concurrency(options: StudyOptions, total_trials: int) -> tuple[int, str]:
    """How many trials the study keeps running or pending at once, and why (for the console): on an autoscaling
    cluster, what it can grow to.

    A local Ray has what it has: the trials that fit now, and a clear error when not even one does. A cluster
    at --address may grow: its autoscaler's node types (fsl.distributed.cluster_shape) say how many trials it
    holds at its largest, and a request that no node type can ever hold is refused here. Pending trials are
    what makes the autoscaler add nodes, so sizing to the nodes up at the start would pin the cluster. With no
    node types known: the trials that fit now (a fixed cluster, most likely), or every trial when none fits
    yet (the demand is what an autoscaler acts on). --max-concurrent overrides all but the refusals."""
    import ray

    from fsl.distributed.cluster_shape import cluster_shape, growth_ceiling, unsatisfiable

    res = options.resources
    if options.address:
        shape = cluster_shape()
        if shape is not None:
            reason = unsatisfiable(res.per_worker, res.workers, shape.node_types, shape.max_workers)
            if reason:
                raise ValueError(f"{_request_flags(res)}: {reason} (node types from {shape.source})")
        if options.max_concurrent:
            return options.max_concurrent, "--max-concurrent"
        if shape is not None:
            ceiling = growth_ceiling(res.per_worker, res.workers, shape.node_types, shape.max_workers)
            if ceiling is None:
                return total_trials, f"every trial: a node type that holds them has no maximum ({shape.source})"
            largest = ", ".join(f"{t.max_count} x {t.name}" for t in shape.node_types if t.max_count and not t.head)
            cap = f", {shape.max_workers} worker nodes at most" if shape.max_workers is not None else ""
            why = f"what the cluster holds at its largest: {largest}{cap} ({shape.source})"
            return min(ceiling, total_trials), why
        now = fitting_now(res, _alive_node_resources())
        if now == 0:
            return total_trials, "every trial: no node fits one yet, and the cluster's node types are unknown"
        # Sizing to a fixed cluster keeps Optuna's suggestions informed by finished trials (hundreds of pending
        # trials would all be suggested blind).
        return min(now, total_trials), "what the cluster's nodes fit now; its node types are unknown"
    # A local Ray cannot grow: not even one trial fitting is an error, before any trial starts.
    total = ray.cluster_resources()
    cpus_needed = res.workers * res.cpus_per_worker + (DRIVER_CPU if res.workers > 1 else 0)
    gpus_needed = res.workers * res.gpus_per_worker
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if gpus_needed and gpus == 0:
        raise ValueError(
            f"--gpus-per-worker {res.gpus_per_worker:g}: the Ray cluster has no GPUs "
            f"(its resources: {cpus:g} CPUs, 0 GPUs); use --gpus-per-worker 0 or attach to a cluster with GPUs"
        )
    if gpus_needed > gpus:
        raise ValueError(
            f"a trial needs {gpus_needed:g} GPUs ({res.workers} workers x {res.gpus_per_worker:g}), "
            f"the Ray cluster has {gpus:g}"
        )
    if cpus_needed > cpus + 1e-9:
        driver = f" + {DRIVER_CPU:g} for its driver" if res.workers > 1 else ""
        raise ValueError(
            f"a trial needs {cpus_needed:g} CPUs ({res.workers} workers x {res.cpus_per_worker:g}{driver}), the Ray "
            f"cluster has {cpus:g}; lower --cpus-per-worker or --workers-per-trial"
        )
    fit = max(1, fitting_now(res, _alive_node_resources()))
    if options.max_concurrent and options.max_concurrent < fit:
        return options.max_concurrent, "--max-concurrent"
    return fit, "what this Ray's resources fit"


def fitting_now(res: TrialResources, nodes: list[dict[str, float]]) -> int:
    """Trials of this request that these nodes (their total resources) hold at once: each worker on one node, a
    DDP trial's workers spread over nodes, and its driver's sliver of CPU counted too."""
    from fsl.distributed.cluster_shape import slots

    fit = sum(slots(res.per_worker, node) for node in nodes) // res.workers
    if res.workers > 1:
        cpus = sum(node.get("CPU", 0.0) for node in nodes)
        fit = min(fit, math.floor(cpus / (res.workers * res.cpus_per_worker + DRIVER_CPU) + 1e-9))
    return fit


def _alive_node_resources() -> list[dict[str, float]]:
    import ray

    return [node["Resources"] for node in ray.nodes() if node["Alive"]]


def _request_flags(res: TrialResources) -> str:
    flags = [f"--cpus-per-worker {res.cpus_per_worker:g}"]
    if res.gpus_per_worker:
        flags.append(f"--gpus-per-worker {res.gpus_per_worker:g}")
    if res.workers > 1:
        flags.append(f"--workers-per-trial {res.workers}")
    return " ".join(flags)
