"""One ProtoNet trial on Ray Train workers: a TorchTrainer (Train V2) launched from inside a Tune trial.

With more than one worker this is real DDP (gloo on CPU, NCCL on GPU): each rank trains on its share of the
epoch's episodes and evaluates its share of the fixed episodes, and the metrics are all-reduced inside the
loop. Rank 0 writes the checkpoint. The Train run's name is fixed per Tune trial, so a restarted trial
resumes from its latest checkpoint instead of starting over.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from fsl.data.decoded import DecodedSplit
from fsl.data.episodes import FixedEpisodes
from fsl.distributed.placement import PLACEMENT_GROUP_METRIC, current_placement_group_id
from fsl.train.checkpoint import load_checkpoint, save_checkpoint
from fsl.train.config import ProtoNetConfig
from fsl.train.protonet_loop import Placement, train_protonet


@dataclass(frozen=True)
class SharedData:
    """The decoded splits as Ray object references: put once by the study, read zero-copy by every trial
    on every node (a worker node needs no copy of the data folder)."""

    train: ray.ObjectRef
    val: ray.ObjectRef
    val_episodes: FixedEpisodes

    @classmethod
    def put(cls, train: DecodedSplit, val: DecodedSplit, val_episodes: FixedEpisodes) -> SharedData:
        return cls(ray.put(train), ray.put(val), val_episodes)

    def get(self) -> tuple[DecodedSplit, DecodedSplit, FixedEpisodes]:
        train, val = ray.get([self.train, self.val])
        return train, val, self.val_episodes


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


def protonet_worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Train worker."""
    _quiet_checkpoint_logs()
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(_threads(loop_config["cpus_per_worker"]))
    cfg = ProtoNetConfig.from_dict(loop_config["config"])
    train, val, episodes = loop_config["shared"].get()

    placement_group = current_placement_group_id()
    resume_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = load_checkpoint(Path(directory))

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        # Every rank calls report (it is a barrier); only rank 0 uploads a checkpoint.
        with tempfile.TemporaryDirectory() as directory:
            saved = None
            if rank == 0:
                save_checkpoint(Path(directory), state)
                saved = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(
                {**metrics, "world_size": world_size, PLACEMENT_GROUP_METRIC: placement_group},
                checkpoint=saved,
                checkpoint_dir_name=f"epoch={metrics['epoch']:04d}",
            )

    train_protonet(
        cfg,
        train,
        val,
        episodes,
        report,
        Placement(ray.train.torch.get_device(), rank, world_size),
        resume_state,
        prepare_model=ray.train.torch.prepare_model,
    )


def _rank_checking_callback() -> Any:
    """TuneReportCallback forwards rank 0's metrics only; this one adds what the other ranks reported, so a
    study can see that every rank trained and that the all-reduced metrics agree."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class RankCheckingReportCallback(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            merged = dict(metrics[0])
            merged["ranks_reporting"] = len(metrics)
            merged["episodes_all_ranks"] = sum(m.get("local_episodes", 0) for m in metrics)
            accs = [m["val_acc"] for m in metrics if "val_acc" in m]
            merged["val_acc_rank_spread"] = max(accs) - min(accs) if accs else 0.0
            super().after_report(run_context, [merged, *metrics[1:]], checkpoint)

    return RankCheckingReportCallback()


def run_train_trial(
    config: dict[str, Any], shared: SharedData, resources: TrialResources, storage_path: str, run_name: str
) -> None:
    """Launch the TorchTrainer for one Tune trial and wait for it. Call from inside a Tune trial."""
    trainer = ray.train.torch.TorchTrainer(
        protonet_worker_loop,
        train_loop_config={"config": config, "shared": shared, "cpus_per_worker": resources.cpus_per_worker},
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
            callbacks=[_rank_checking_callback()],
        ),
    )
    trainer.fit()


def run_in_process(config: dict[str, Any], shared: SharedData, resources: TrialResources) -> None:
    """The single-worker path: the same loop, run directly in the Tune trial (no Train worker group, which
    costs about 15 s per trial and 2 s per report on a small machine). Tune checkpoints and restores it."""
    from ray import tune

    _quiet_checkpoint_logs()
    torch.set_num_threads(_threads(resources.cpus_per_worker))
    cfg = ProtoNetConfig.from_dict(config)
    train, val, episodes = shared.get()
    device = torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")

    resume_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = load_checkpoint(Path(directory))

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(Path(directory), state)
            tune.report({**metrics, "world_size": 1}, checkpoint=tune.Checkpoint.from_directory(directory))

    train_protonet(cfg, train, val, episodes, report, Placement(device), resume_state)
