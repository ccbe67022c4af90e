"""BYOL pre-training as a training method: the symmetric loss of two views, and the EMA target moving on a
cosine tau schedule after every step (fsl.methods.byol has the networks and the math)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fsl.data.decoded import DecodedSplit
from fsl.methods.byol import BYOL, cosine_tau
from fsl.train.config import BYOLConfig
from fsl.train.dimension import Dimension
from fsl.train.epochs import run_epochs
from fsl.train.parallel import Placement, unwrap
from fsl.train.run_state import Report
from fsl.train.self_supervised import SelfSupervisedMethod


class BYOLMethod(SelfSupervisedMethod):
    name = "byol"
    label = "BYOL"
    config_class = BYOLConfig
    loss_name = "byol_loss"
    progress_keys = ("byol_loss", "z_std")
    # The small-batch recipe known to work without LARS (Adam 3e-4, lucidrains/byol-pytorch#44) with the
    # paper's augmentation, heads and 100-epoch tau.
    recipe = {"lr": 3e-4, "augment_strength": 1.0, "head_depth": 1, "tau": 0.99, "batch_size": 64}
    cfg: BYOLConfig

    @classmethod
    def search_space(cls, n_classes: int = 0) -> dict[str, Dimension]:
        """lr, augment_strength, head_depth, tau, batch_size."""
        space = super().search_space(n_classes)
        return {
            **{k: space[k] for k in ("lr", "augment_strength", "head_depth")},
            "tau": Dimension("tau", "uniform", 0.95, 0.999),
            "batch_size": space["batch_size"],
        }

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        return self.convert_batchnorm(BYOL(cfg.arch, cfg.head_depth, cfg.head_width, cfg.projection_dim))

    def float32_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.predictor, model.target_projector]  # the normalised MSE in float32

    def after_step(self, trained: nn.Module, step: int) -> None:
        total = self.n_steps * self.cfg.epochs
        unwrap(trained).update_target(cosine_tau(self.epoch * self.n_steps + step + 1, total, self.cfg.tau))

    def epoch_metrics(self, epoch: int, seconds: float) -> dict[str, float]:
        tau = cosine_tau(epoch * self.n_steps, self.n_steps * self.cfg.epochs, self.cfg.tau)
        return {"tau": tau, **super().epoch_metrics(epoch, seconds)}


def train_byol(
    cfg: BYOLConfig,
    train: DecodedSplit,
    probe_split: DecodedSplit,
    report: Report,
    placement: Placement | None = None,
    resume_state: dict[str, Any] | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Pre-train with BYOL for cfg.epochs, calling report() after every epoch; the training labels are never used."""
    method = BYOLMethod(cfg, train, probe_split, placement or Placement(torch.device("cpu")))
    return run_epochs(method, report, resume_state, prepare_model)
