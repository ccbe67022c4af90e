"""A ResNet backbone with an MLP classifier head: supervised pre-training and the Office-Home settings."""

from __future__ import annotations

import torch
from torch import nn

from fsl.models.heads import MLP
from fsl.models.resnet import FEATURE_DIMS, build_backbone


class Classifier(nn.Module):
    def __init__(self, arch: str, n_classes: int, head_depth: int = 1, head_width: int = 512) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = build_backbone(arch)
        self.head = MLP(FEATURE_DIMS[arch], n_classes, head_depth, head_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def correct_count(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How many rows' highest logit is their label (a tensor, so summing it does not synchronise a GPU)."""
    return (logits.argmax(dim=1) == labels).sum()
