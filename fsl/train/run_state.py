"""What every training loop saves and restores between epochs: model, optimizer and schedule, the epoch, and
the best epoch so far (its metric, interval and weights); and the check that stops a loop whose loss diverged."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fsl.train.optim import move_optimizer_state
from fsl.train.parallel import Placement, distributed

# What a loop calls after every epoch: report(metrics, state); the caller decides where the state is saved.
Report = Callable[[dict[str, Any], dict[str, Any]], None]


# The key under which the Ray layer reports a divergence to the study driver (see fsl.study.divergence).
DIVERGED = "diverged"

# Steps between two reads of the losses on a GPU; on the CPU every step is read.
GPU_CHECK_EVERY = 8


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite. The message names the loss, its value, the epoch and step
    (both counted from 1) and the learning rate, e.g. 'train_loss became nan at epoch 1 step 3 (lr=10.0)'."""


class DivergenceGuard:
    """Stops a training loop at the first step whose loss is NaN or infinite, by raising TrainingDiverged.

    The loop calls `step(n, loss)` after every optimizer step and `flush()` at the end of each epoch. On the
    CPU every step's loss is read at once (reading a CPU scalar costs nothing). On a GPU reading a loss makes
    the host wait for the device, so the losses stay on the device and are read every `check_every` steps
    (GPU_CHECK_EVERY): the loop runs at most that many steps past the bad one, and the error still names the
    first bad step and its loss. Under torch.distributed the ranks exchange their verdicts at every read, so
    all of them raise the same error at the same step (one rank stopping alone would leave the others waiting
    in the next collective).
    """

    def __init__(self, loss_name: str, lr: float, placement: Placement, check_every: int | None = None) -> None:
        self.loss_name = loss_name
        self.lr = lr
        self.placement = placement
        self.check_every = check_every or (GPU_CHECK_EVERY if placement.device.type == "cuda" else 1)
        self.epoch = 0
        self._pending: list[tuple[int, torch.Tensor]] = []

    def start_epoch(self, epoch: int) -> None:
        """`epoch` counts from 0, as the loops' range does."""
        self.epoch = epoch
        self._pending.clear()

    def step(self, step: int, loss: torch.Tensor) -> None:
        """Record the loss of `step` (counted from 1 within the epoch); read the losses when it is time."""
        self._pending.append((step, loss.detach().reshape(())))
        if len(self._pending) >= self.check_every:
            self.flush()

    def flush(self) -> None:
        """Read the losses recorded since the last read; raise TrainingDiverged if one is NaN or infinite."""
        if not self._pending:
            return
        steps = [step for step, _ in self._pending]
        losses = torch.stack([loss.to(torch.float64) for _, loss in self._pending])
        self._pending.clear()
        bad = ~torch.isfinite(losses)
        first = torch.argmax(bad.to(torch.uint8))  # the first bad one, if there is one
        # (index of the first bad loss or -1, that loss): one small tensor, read once.
        verdict = torch.cat(
            [torch.where(bad.any(), first, -1).to(torch.float64).reshape(1), losses.index_select(0, first.reshape(1))]
        )
        if distributed() and self.placement.world_size > 1:
            verdicts = [torch.empty_like(verdict) for _ in range(self.placement.world_size)]
            dist.all_gather(verdicts, verdict)
        else:
            verdicts = [verdict]
        read = torch.stack(verdicts).tolist()  # the one host read
        found = [(int(index), rank, value) for rank, (index, value) in enumerate(read) if index >= 0]
        if found:
            index, rank, value = min(found, key=lambda item: item[:2])
            where = f" on rank {rank}" if self.placement.world_size > 1 else ""
            raise TrainingDiverged(
                f"{self.loss_name} became {value} at epoch {self.epoch + 1} step {steps[index]}{where} (lr={self.lr})"
            )


def restore(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    resume_state: dict[str, Any] | None,
    metric: str,
    device: torch.device,
) -> tuple[int, dict[str, Any]]:
    """Load resume_state (if any) and move model and optimizer to the device; returns (start epoch, best)."""
    start_epoch, best = 0, {metric: -math.inf, f"{metric}_ci95": 0.0, "epoch": 0, "model": None}
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_epoch = int(resume_state["epoch"])
        best = dict(resume_state["best"])
    model.to(device)
    move_optimizer_state(optimizer, device)
    return start_epoch, best


def cpu_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """One CPU copy of the weights per epoch serves both the checkpoint and, when it improved, the best model."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def epoch_state(
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    best: dict[str, Any],
    config: Any,
    best_format: str,
) -> dict[str, Any]:
    """The state a loop reports after an epoch: what a resume needs, and the best weights with their format."""
    return {
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best": best,
        "config": config.to_dict(),
        "format": best_format,
    }
