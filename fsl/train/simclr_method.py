"""SimCLR pre-training as a training method: the shared self-supervised skeleton (two views of the BYOL
augmentation, global batches split across ranks, the k-NN probe) with SimCLR's network and NT-Xent loss."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fsl.methods.simclr import SimCLR
from fsl.train.config import SelfSupervisedConfig
from fsl.train.dimension import Dimension
from fsl.train.self_supervised import SelfSupervisedMethod


@dataclass(frozen=True, kw_only=True)
class SimCLRConfig(SelfSupervisedConfig):
    """SimCLR pre-training of a ResNet backbone. Heads as in the paper (one hidden layer of 2048, output 128);
    temperature 0.5, the paper's CIFAR-10 setting for small images."""

    head_width: int = 2048
    projection_dim: int = 128
    temperature: float = 0.5

    def rules(self) -> list[tuple[str, bool, str]]:
        return [*super().rules(), ("temperature", self.temperature > 0, "must be > 0")]


class SimCLRMethod(SelfSupervisedMethod):
    name = "simclr"
    label = "SimCLR"
    config_class = SimCLRConfig
    loss_name = "simclr_loss"
    progress_keys = ("simclr_loss", "z_std")
    recipe = {"lr": 3e-4, "augment_strength": 1.0, "head_depth": 1, "temperature": 0.5, "batch_size": 64}
    cfg: SimCLRConfig

    @classmethod
    def search_space(cls, n_classes: int = 0) -> dict[str, Dimension]:
        """lr, augment_strength, head_depth, temperature, batch_size."""
        space = super().search_space(n_classes)
        temperature = Dimension("temperature", "loguniform", 0.05, 1.0)
        return {
            **{k: space[k] for k in ("lr", "augment_strength", "head_depth")},
            "temperature": temperature,
            "batch_size": space["batch_size"],
        }

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        model = SimCLR(cfg.arch, cfg.head_depth, cfg.head_width, cfg.projection_dim, cfg.temperature)
        return self.convert_batchnorm(model)

    def float32_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.projector]  # the similarities over normalised projections in float32
