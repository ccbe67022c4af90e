"""torchvision ResNet backbones without their classifier: the image -> feature vector part (random init)."""

from __future__ import annotations

import torchvision
from torch import nn

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048}
ARCHITECTURES = tuple(FEATURE_DIMS)


def build_backbone(arch: str) -> nn.Module:
    """A torchvision ResNet (weights=None) whose forward returns its pooled features, (B, FEATURE_DIMS[arch])."""
    if arch not in FEATURE_DIMS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Identity()
    return model
