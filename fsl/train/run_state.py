"""What every training loop saves and restores between epochs: model, optimizer and schedule, the epoch, and
the best epoch so far (its metric, interval and weights)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fsl.train.optim import move_optimizer_state

# What a loop calls after every epoch: report(metrics, state); the caller decides where the state is saved.
Report = Callable[[dict[str, Any], dict[str, Any]], None]


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


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
