"""A ResNet backbone from a checkpoint file: any registered method's best_model.pt that holds one (BYOL, SimCLR,
the supervised classifier), or a plain torchvision ResNet state dict (what the course hands out as its
supervised backbone), checked against the architecture a study uses."""

from __future__ import annotations

from pathlib import Path

import torch

from fsl.models.resnet import ARCHITECTURES, build_backbone
from fsl.train.checkpoint import first_line, read_checkpoint_file
from fsl.train.registry import method_for_format


def load_backbone_weights(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """The ResNet backbone weights in a checkpoint, checked against `arch`. A plain state dict may carry a
    `module.` prefix and its `fc` layer (dropped)."""
    saved = read_checkpoint_file(path)
    if isinstance(saved, dict) and "format" in saved:
        method = method_for_format(saved["format"])
        weights = method.backbone_weights(saved["model"]) if method is not None else None
        if weights is None:
            raise ValueError(f"{path}: a {saved['format']} checkpoint, not a ResNet backbone")
        saved_arch = saved["config"].get("arch")
        if saved_arch != arch:
            raise ValueError(f"{path}: a {saved_arch} backbone, but the study uses {arch} (--arch)")
    elif isinstance(saved, dict) and saved and all(isinstance(v, torch.Tensor) for v in saved.values()):
        weights = {k.removeprefix("module."): v for k, v in saved.items()}
        weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    else:
        raise ValueError(f"{path}: neither a checkpoint of this project nor a ResNet state dict")
    try:
        build_backbone(arch).load_state_dict(weights)
    except RuntimeError as err:
        others = [a for a in ARCHITECTURES if a != arch and _fits(a, weights)]
        hint = f"; the weights fit {others[0]}" if others else ""
        raise ValueError(f"{path}: the weights do not fit a {arch} backbone{hint} ({first_line(err)})") from None
    return weights


def _fits(arch: str, weights: dict[str, torch.Tensor]) -> bool:
    try:
        build_backbone(arch).load_state_dict(weights)
    except RuntimeError:
        return False
    return True
