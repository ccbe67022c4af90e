"""What the self-supervised pre-training methods share (BYOL, SimCLR): two augmented views of each unlabelled
image per step, global batches split across ranks, and a k-NN probe of the backbone on a labelled split as
the validation metric. A subclass builds its model (a module whose forward takes the two views and returns
the loss and the projections' std, the collapse monitor) and may update a target after each step.

best_model.pt keeps the backbone alone (fsl.backbone/1), which is what a downstream run starts from.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import torch
from torch import nn

from fsl.data.augment import normalize, to_unit_float
from fsl.data.byol_augment import byol_views
from fsl.data.decoded import DecodedSplit
from fsl.models.resnet import build_backbone
from fsl.models.served import ImageModel
from fsl.train.config import SelfSupervisedConfig
from fsl.train.dimension import Dimension
from fsl.train.method import SELF_SUPERVISED, Method
from fsl.train.parallel import Placement, batch_rows, to_device
from fsl.train.precision import to_channels_last
from fsl.train.probe import probe_accuracy

BACKBONE_FORMAT = "fsl.backbone/1"


def steps_per_epoch(cfg: SelfSupervisedConfig, n_images: int) -> int:
    """cfg.steps_per_epoch, or one pass over the images in whole global batches."""
    return cfg.steps_per_epoch or max(1, n_images // cfg.batch_size)


def backbone_part(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `backbone.` entries of a model's weights, without the prefix."""
    return {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}


class SelfSupervisedMethod(Method):
    best_format = BACKBONE_FORMAT
    pretrains = SELF_SUPERVISED
    metric = "probe_acc"
    cfg: SelfSupervisedConfig

    def __init__(
        self, cfg: SelfSupervisedConfig, train: DecodedSplit, probe_split: DecodedSplit, placement: Placement
    ) -> None:
        if cfg.batch_size // placement.world_size < 2:
            raise ValueError(f"batch_size={cfg.batch_size} leaves fewer than 2 images per worker for BatchNorm")
        super().__init__(cfg, placement)
        self.train, self.probe_split = train, probe_split

    @classmethod
    def from_data(cls, config: dict[str, Any], data: dict[str, Any], placement: Placement) -> Self:
        """The training split's labels are never used; `probe` scores the epochs."""
        return cls(cls.config_class.from_dict(config), data["train"], data["probe"], placement)  # type: ignore[arg-type]

    @classmethod
    def search_space(cls, n_classes: int = 0) -> dict[str, Dimension]:
        """lr, augment_strength, head_depth, batch_size (a subclass adds its own)."""
        return {
            "lr": Dimension("lr", "loguniform", 1e-4, 3e-3),
            "augment_strength": Dimension("augment_strength", "uniform", 0.3, 1.2),
            "head_depth": Dimension("head_depth", "int", 1, 2),
            "batch_size": Dimension("batch_size", "choice", choices=(32, 64, 128)),
        }

    @classmethod
    def backbone_weights(cls, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        return weights  # best_model.pt holds the backbone alone

    @classmethod
    def served_model(cls, saved: dict[str, Any]) -> nn.Module | None:
        backbone = build_backbone(saved["config"]["arch"])
        backbone.load_state_dict(saved["model"])
        return ImageModel(backbone, "features")

    def convert_batchnorm(self, model: nn.Module) -> nn.Module:
        """SyncBatchNorm across DDP workers on GPUs when cfg.sync_batchnorm (CPU workers keep local BN)."""
        placement = self.placement
        if placement.world_size > 1 and placement.device.type == "cuda" and self.cfg.sync_batchnorm:
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def setup(self, model: nn.Module) -> int:
        device = self.placement.device
        self.train_images = to_device(self.train.images, device)
        self.probe_images = to_device(self.probe_split.images, device)
        self.probe_labels = torch.as_tensor(self.probe_split.labels, device=device)
        self.n_steps = steps_per_epoch(self.cfg, len(self.train))
        return self.n_steps

    def begin_epoch(self, epoch: int, model: nn.Module, trained: nn.Module) -> None:
        # The same permutation on every rank; batches depend only on (seed, epoch), so a resume repeats them.
        cfg, n = self.cfg, len(self.train)
        self.epoch = epoch
        rng = np.random.default_rng([cfg.seed, epoch])
        self.order = np.concatenate([rng.permutation(n) for _ in range(-(-self.n_steps * cfg.batch_size // n))])
        device = self.placement.device
        self.generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)) + self.placement.rank)
        trained.train()

    def train_step(self, trained: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        rows = torch.as_tensor(
            batch_rows(self.order, step, cfg.batch_size, self.placement), device=self.placement.device
        )
        view_1, view_2 = byol_views(
            to_unit_float(self.train_images.index_select(0, rows)), self.generator, cfg.augment_strength
        )
        with self.autocast():
            loss, z_std = trained(to_channels_last(normalize(view_1), cfg), to_channels_last(normalize(view_2), cfg))
        return loss, torch.stack([loss.detach(), z_std]).double()

    def train_metrics(self, local: list[float], total: list[float]) -> dict[str, float]:
        loss, z_std, count = total
        return {self.loss_name: loss / count, "z_std": z_std / count}

    def evaluate(self, model: nn.Module) -> tuple[float, float]:
        cfg, placement = self.cfg, self.placement
        return probe_accuracy(model.backbone, self.probe_images, self.probe_labels, cfg.probe_k, placement)

    def best_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return backbone_part(weights)

    def epoch_metrics(self, epoch: int, seconds: float) -> dict[str, float]:
        return {"images_per_s": self.n_steps * self.cfg.batch_size / seconds}
