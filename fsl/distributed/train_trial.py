"""One trial on Ray Train workers: a TorchTrainer (Train V2) launched from inside a Tune trial, running any
of the training loops (fsl.train.entries).

With more than one worker this is real DDP (gloo on CPU, NCCL on GPU): each rank trains on its share of the
epoch's episodes or batches and evaluates its share of the validation data, and the metrics are all-reduced
inside the loop. Rank 0 writes the checkpoint. The Train run's name is fixed per Tune trial, so a restarted
trial resumes from its latest checkpoint instead of starting over.

A loop that raises TrainingDiverged is not retried, by Train or by Tune: it would diverge again. On either path
the trial reports `divergence_result` (its last epoch's scores and the reason) and then fails with the error;
fsl.study.divergence turns Tune's retry off for it on seeing that result.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from fsl.distributed.placement_groups import PLACEMENT_GROUP_METRIC, current_placement_group_id
from fsl.train.checkpoint import load_checkpoint, save_checkpoint
from fsl.train.entries import Entry
from fsl.train.parallel import Placement
from fsl.train.run_state import DIVERGED, TrainingDiverged


@dataclass(frozen=True)
class SharedData:
    """What every trial reads (decoded splits, fixed episodes, pre-trained weights) as Ray object references:
    put once by the study, read zero-copy by every trial on every node (a worker node needs no copy of the
    data folder)."""

    refs: dict[str, ray.ObjectRef]

    @classmethod
    def put(cls, objects: dict[str, Any]) -> SharedData:
        """Put each object in the object store once, and replace it in `objects` by the store's read-only view
        of it, one object at a time: the caller's own copy (in the driver, the decoded splits) is freed as its
        view takes its place, so the driver holds the data once, in shared memory, not twice (bench b9: 969 MiB
        of Mini-ImageNet pixels cost the driver 1.9 GiB before)."""
        refs = {}
        for name in list(objects):
            refs[name] = ray.put(objects[name])
            objects[name] = ray.get(refs[name])
        return cls(refs)

    def get(self) -> dict[str, Any]:
        return dict(zip(self.refs, ray.get(list(self.refs.values())), strict=True))


@dataclass(frozen=True)
class TrialResources:
    """What one trial asks for. Fractional GPUs are only allowed for single-worker trials."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2  # worker failures a Train run recovers from (resuming from its checkpoint)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers-per-trial must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.workers > 1 and self.gpus_per_worker and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError(
                f"--gpus-per-worker {self.gpus_per_worker} with --workers-per-trial {self.workers}: DDP workers "
                "need whole GPUs (NCCL rejects two ranks on one GPU); use a fraction only with one worker per trial"
            )

    @property
    def per_worker(self) -> dict[str, float]:
        resources = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            resources["GPU"] = self.gpus_per_worker
        return resources


def _threads(cpus: float) -> int:
    return max(1, int(cpus))


def _quiet_checkpoint_logs() -> None:
    """Ray logs a line per saved checkpoint at INFO; with one checkpoint per epoch that buries the progress."""
    for name in ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _resume_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load_checkpoint(Path(directory))


def divergence_result(error: TrainingDiverged, last_metrics: dict[str, Any], metric: str) -> dict[str, Any]:
    """The result a diverged trial reports before it fails: the last finished epoch's metrics (the metric NaN
    and epoch 0 when none finished) and the one-line reason under DIVERGED."""
    return {metric: math.nan, "epoch": 0, **last_metrics, DIVERGED: f"TrainingDiverged: {error}"}


def worker_loop(loop_config: dict[str, Any]) -> str | None:
    """Runs on every Train worker. Returns the divergence notice when the loop diverged (Train hands rank 0's
    return value to run_train_trial), else None."""
    _quiet_checkpoint_logs()
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(_threads(loop_config["cpus_per_worker"]))
    placement_group = current_placement_group_id()
    node = ray.get_runtime_context().get_node_id()

    last: dict[str, Any] = {}

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        # Every rank calls report (it is a barrier); only rank 0 uploads a checkpoint.
        last.clear()
        last.update(metrics, world_size=world_size, node_id=node, **{PLACEMENT_GROUP_METRIC: placement_group})
        with tempfile.TemporaryDirectory() as directory:
            saved = None
            if rank == 0:
                save_checkpoint(Path(directory), state)
                saved = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(dict(last), checkpoint=saved, checkpoint_dir_name=f"epoch={metrics['epoch']:04d}")

    entry: Entry = loop_config["entry"]
    try:
        entry(
            loop_config["config"],
            loop_config["shared"].get(),
            report,
            Placement(ray.train.torch.get_device(), rank, world_size),
            _resume_state(ray.train.get_checkpoint()),
            ray.train.torch.prepare_model,
        )
    except TrainingDiverged as err:
        # Every rank raises it at the same step (the loop's guard shares the verdict), so every rank reaches this
        # barrier. The run then ends normally, which Train does not retry; run_train_trial raises the error.
        notice = divergence_result(err, last, loop_config["metric"])
        ray.train.report(notice)
        return notice[DIVERGED]
    return None


def _rank_checking_callback(metric: str) -> Any:
    """TuneReportCallback forwards rank 0's metrics only; this one adds what the other ranks reported, so a
    study can see that every rank trained and that the all-reduced metrics agree."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class RankCheckingReportCallback(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            merged = dict(metrics[0])
            merged["ranks_reporting"] = len(metrics)
            # Every loop reports its rank's own steps (episodes, batches) as local_steps.
            merged["steps_all_ranks"] = sum(m.get("local_steps", 0) for m in metrics)
            scores = [m[metric] for m in metrics if metric in m]
            merged[f"{metric}_rank_spread"] = max(scores) - min(scores) if scores else 0.0
            # Where the ranks ran: a multi-node cluster spreads a trial's workers over its machines.
            merged["worker_nodes"] = ",".join(m.get("node_id", "?") for m in metrics)
            merged["nodes_spanned"] = len({m.get("node_id") for m in metrics})
            super().after_report(run_context, [merged, *metrics[1:]], checkpoint)

    return RankCheckingReportCallback()


def run_train_trial(
    entry: Entry,
    config: dict[str, Any],
    shared: SharedData,
    resources: TrialResources,
    storage_path: str,
    run_name: str,
    metric: str,
) -> None:
    """Launch the TorchTrainer for one Tune trial and wait for it. Call from inside a Tune trial."""
    trainer = ray.train.torch.TorchTrainer(
        worker_loop,
        train_loop_config={
            "entry": entry,
            "config": config,
            "shared": shared,
            "cpus_per_worker": resources.cpus_per_worker,
            "metric": metric,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker=resources.per_worker,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            # Built here, inside the Tune trial, as Train V2 requires.
            callbacks=[_rank_checking_callback(metric)],
        ),
    )
    notice = trainer.fit().return_value
    if notice:
        # The divergence notice went on to Tune with the other reports; the trial now fails with the reason.
        raise TrainingDiverged(notice.removeprefix("TrainingDiverged: "))


_STOPPED_TRIAL_FRAMES: list[Any] = []


def run_in_process(
    entry: Entry, config: dict[str, Any], shared: SharedData, resources: TrialResources, metric: str
) -> None:
    """The single-worker path: the same loop, run directly in the Tune trial (no Train worker group, which
    costs about 15 s per trial and 2 s per report on a small machine). Tune checkpoints and restores it."""
    from ray import tune

    # The frames of a trial this process ran and Tune stopped (see below): a new trial means the process lives on
    # (Tune reuses it), so they can be freed now, before this trial allocates its own.
    _STOPPED_TRIAL_FRAMES.clear()
    _quiet_checkpoint_logs()
    torch.set_num_threads(_threads(resources.cpus_per_worker))
    device = torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")
    node = ray.get_runtime_context().get_node_id()

    last: dict[str, Any] = {}

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        last.clear()
        last.update(metrics, world_size=1, node_id=node)
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(Path(directory), state)
            tune.report(dict(last), checkpoint=tune.Checkpoint.from_directory(directory))

    try:
        entry(config, shared.get(), report, Placement(device), _resume_state(tune.get_checkpoint()), None)
    except TrainingDiverged as err:
        tune.report(divergence_result(err, last, metric))  # read by the driver before the error below
        raise
    except SystemExit as stop:
        # Tune ends a stopped trial (ASHA) by raising SystemExit in report(): before the process shuts down, or
        # before it reuses the process for the next trial. In the first case freeing the loop's tensors in this
        # thread would race the interpreter's finalisation, and a torch destructor caught by it aborts the
        # process with a long C++ stack trace (ray-project/ray#4013, #51527). So the frames, and the tensors,
        # are kept until the process exits or starts another trial.
        _STOPPED_TRIAL_FRAMES.append(stop.__traceback__)
        raise
