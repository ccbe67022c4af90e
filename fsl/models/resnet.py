"""torchvision ResNet backbones without their classifier: the image -> feature vector part (random init)."""

from __future__ import annotations

from torch import nn

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048}
ARCHITECTURES = tuple(FEATURE_DIMS)


def build_backbone(arch: str) -> nn.Module:
    """A torchvision ResNet (weights=None) whose forward returns its pooled features, (B, FEATURE_DIMS[arch])."""
    if arch not in FEATURE_DIMS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    # Imported here: torchvision takes 2.5 s to import (it loads torch._dynamo), which every ProtoNet trial
    # process and DDP worker would pay for a Conv4 that does not use it.
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Identity()
    return model
