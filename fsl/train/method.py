"""The contract a training method fulfils, so that one epoch runner (fsl.train.epochs) can train it.

A method says how to build its model, what one training step computes, how an epoch is scored and what its
best weights are; the runner owns everything the methods share: seeding, precision and memory format, the
optimizer and schedule, resume, the DDP wrap, the divergence guard, the all-reduce of the step statistics,
the best epoch and the report after every epoch. Plain PyTorch: no Ray, no MLflow.

Adding a method: a config (a keyword-only subclass of fsl.train.config.TrainConfig), a `Method` subclass, and
a line in fsl.train.registry. Everything else (study entries, progress lines, checkpoint loading, the Office-Home
settings for a pre-training method) is derived from the registry.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import torch
from torch import nn

from fsl.train.config import TrainConfig
from fsl.train.dimension import Dimension
from fsl.train.parallel import Placement
from fsl.train.precision import autocast

# What a pre-training method's backbone is for (`Method.pretrains`): None for a method that pre-trains nothing.
SUPERVISED, SELF_SUPERVISED = "supervised", "self-supervised"


class Method(ABC):
    """One training method on its data. The runner calls, in order: `build_model`, `trained_module`, `setup`;
    then per epoch `begin_epoch`, `train_step` (and `after_step`) per step, `train_metrics`, `evaluate`,
    `epoch_metrics`."""

    name: ClassVar[str]  # the registry key: entries, tags and flags use it
    label: ClassVar[str]  # how people write it: "ProtoNet", "BYOL"
    config_class: ClassVar[type[TrainConfig]]
    best_format: ClassVar[str]  # what best_model.pt holds (fsl.train.checkpoint reads it back by this name)
    loss_name: ClassVar[str]  # the loss the divergence guard watches
    progress_keys: ClassVar[tuple[str, ...]]  # the training numbers a progress line shows, in order
    pretrains: ClassVar[str | None] = None  # SUPERVISED or SELF_SUPERVISED for a method that pre-trains a backbone
    recipe: ClassVar[dict[str, Any]] = {}  # a known-good point of the search space, which a search tries first
    metric: str  # the validation metric the method reports, maximised (val_acc, probe_acc)

    def __init__(self, cfg: TrainConfig, placement: Placement) -> None:
        self.cfg = cfg
        self.placement = placement

    @classmethod
    @abstractmethod
    def from_data(cls, config: dict[str, Any], data: dict[str, Any], placement: Placement) -> Self:
        """The method for a trial: `config` is the trial's flat dict, `data` what the study shared, by name."""

    @classmethod
    def search_space(cls, n_classes: int) -> dict[str, Dimension]:
        """The study's default search dimensions for data of `n_classes` training classes ({} = none)."""
        return {}

    @classmethod
    def backbone_weights(cls, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """The ResNet backbone in this method's best weights, or None when it has none to give."""
        return None

    @classmethod
    def served_model(cls, saved: dict[str, Any]) -> nn.Module | None:
        """The model a user runs (fsl.models.served.ImageModel), from this method's best_model.pt contents;
        None when the method has none to give."""
        return None

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model, on the CPU, in float32 (the runner has seeded torch)."""

    def float32_modules(self, model: nn.Module) -> list[nn.Module]:
        """The modules whose outputs feed rounding-sensitive math (a distance, a loss): float32 under bf16."""
        return []

    def trained_module(self, model: nn.Module) -> nn.Module:
        """What the optimizer trains and DDP wraps: the model, or the part of it that learns."""
        return model

    @abstractmethod
    def setup(self, model: nn.Module) -> int:
        """Move the data to the device (after the model is there); the number of steps per epoch on this rank."""

    @abstractmethod
    def begin_epoch(self, epoch: int, model: nn.Module, trained: nn.Module) -> None:
        """Draw the epoch's data order (from the seed and epoch only, so a resume repeats it); set train mode."""

    @abstractmethod
    def train_step(self, trained: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's batch and forward pass (the forward inside `self.autocast()`): the loss to minimise, and a
        float64 vector of statistics that the runner sums over the epoch's steps and all ranks."""

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The forward pass's precision (bf16 autocast, or nothing): only the forward, so that the batch's
        augmentation stays float32."""
        return autocast(self.cfg, self.placement.device)

    def after_step(self, trained: nn.Module, step: int) -> None:  # noqa: B027 (an optional hook)
        """After the optimizer step (a momentum target's update)."""

    @abstractmethod
    def train_metrics(self, local: list[float], total: list[float]) -> dict[str, float]:
        """The epoch's training numbers from this rank's statistics and their all-rank sums; both end with the
        step count."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> tuple[float, float]:
        """(score, 95% half-width) of the epoch on every rank; the model is unwrapped."""

    def best_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What best_model.pt keeps of the epoch's CPU weights."""
        return weights

    def epoch_metrics(self, epoch: int, seconds: float) -> dict[str, float]:
        """Further numbers of the finished epoch (counted from 1)."""
        return {}
