"""Checkpoint files of a training run, and loading what users keep from them.

A checkpoint directory holds `state.pt` (model, optimizer, scheduler, epoch: what a resume needs) and
`best_model.pt` (the best epoch's weights with its config and metrics: what a user keeps and loads). The
state's `format` names what the best weights are: a whole ProtoNet (fsl.protonet/1), a classifier
(fsl.classifier/1), or a backbone alone (fsl.backbone/1, from BYOL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fsl.methods.protonet import ProtoNet
from fsl.models.resnet import ARCHITECTURES, build_backbone
from fsl.train.config import ProtoNetConfig
from fsl.train.protonet_loop import BEST_MODEL_FORMAT, build_model

STATE_FILE = "state.pt"
BEST_MODEL_FILE = "best_model.pt"
BACKBONE_FORMATS = ("fsl.backbone/1", "fsl.classifier/1")


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    directory = Path(directory)
    best = state["best"]
    torch.save({**state, "best": {k: v for k, v in best.items() if k != "model"}}, directory / STATE_FILE)
    if best.get("model") is not None:
        metrics = {k: v for k, v in best.items() if k != "model"}
        torch.save(
            {"format": state["format"], "config": state["config"], "model": best["model"], **metrics},
            directory / BEST_MODEL_FILE,
        )


def load_checkpoint(directory: Path) -> dict[str, Any]:
    """The state save_checkpoint wrote, ready for a loop's resume_state."""
    directory = Path(directory)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    best_file = directory / BEST_MODEL_FILE
    best_model = torch.load(best_file, map_location="cpu", weights_only=True)["model"] if best_file.is_file() else None
    state["best"] = {**state["best"], "model": best_model}
    return state


def _read(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path}: not a readable checkpoint ({err.__class__.__name__})") from None


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]


def load_best_model(path: Path) -> tuple[ProtoNet, ProtoNetConfig, dict[str, Any]]:
    """Load a ProtoNet best_model.pt file: the model (in eval mode), its config, and its recorded metrics."""
    saved = _read(path)
    if not isinstance(saved, dict) or saved.get("format") != BEST_MODEL_FORMAT:
        raise ValueError(f"{path}: not a ProtoNet best_model.pt written by this project")
    config = ProtoNetConfig.from_dict(saved["config"])
    model = build_model(config)
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the architecture in its config ({_first_line(err)})") from None
    model.eval()
    info = {k: saved.get(k) for k in ("val_acc", "val_acc_ci95", "epoch")}
    return model, config, info


def load_backbone_weights(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """The ResNet backbone weights in a checkpoint, checked against `arch`.

    Accepts this project's BYOL (fsl.backbone/1) and classifier (fsl.classifier/1) best_model.pt files, and a
    plain torchvision ResNet state dict (what the course hands out as its supervised backbone), with or
    without a `module.` prefix and its `fc` layer (dropped)."""
    saved = _read(path)
    if isinstance(saved, dict) and "format" in saved:
        if saved["format"] not in BACKBONE_FORMATS:
            raise ValueError(f"{path}: a {saved['format']} checkpoint, not a ResNet backbone")
        saved_arch = saved["config"].get("arch")
        if saved_arch != arch:
            raise ValueError(f"{path}: a {saved_arch} backbone, but the study uses {arch} (--arch)")
        weights = saved["model"]
        if saved["format"] == "fsl.classifier/1":
            weights = {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}
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
        raise ValueError(f"{path}: the weights do not fit a {arch} backbone{hint} ({_first_line(err)})") from None
    return weights


def _fits(arch: str, weights: dict[str, torch.Tensor]) -> bool:
    try:
        build_backbone(arch).load_state_dict(weights)
    except RuntimeError:
        return False
    return True
