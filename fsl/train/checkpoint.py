"""Checkpoint files of a ProtoNet run.

A checkpoint directory holds `state.pt` (model, optimizer, scheduler, epoch: what a resume needs) and
`best_model.pt` (the best epoch's weights with its config and metrics: what a user keeps and loads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fsl.methods.protonet import ProtoNet
from fsl.train.config import ProtoNetConfig
from fsl.train.protonet_loop import build_model

STATE_FILE = "state.pt"
BEST_MODEL_FILE = "best_model.pt"


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    directory = Path(directory)
    best = state["best"]
    torch.save({**state, "best": {k: v for k, v in best.items() if k != "model"}}, directory / STATE_FILE)
    if best.get("model") is not None:
        torch.save(
            {
                "format": "fsl.protonet/1",
                "config": state["config"],
                "model": best["model"],
                "val_acc": best["val_acc"],
                "val_acc_ci95": best.get("val_acc_ci95"),
                "epoch": best["epoch"],
            },
            directory / BEST_MODEL_FILE,
        )


def load_checkpoint(directory: Path) -> dict[str, Any]:
    """The state save_checkpoint wrote, ready for train_protonet(resume_state=...)."""
    directory = Path(directory)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    best_file = directory / BEST_MODEL_FILE
    best_model = torch.load(best_file, map_location="cpu", weights_only=True)["model"] if best_file.is_file() else None
    state["best"] = {**state["best"], "model": best_model}
    return state


def load_best_model(path: Path) -> tuple[ProtoNet, ProtoNetConfig, dict[str, Any]]:
    """Load a best_model.pt file: the model (in eval mode), its config, and its recorded metrics."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path}: not a readable checkpoint ({err.__class__.__name__})") from None
    if not isinstance(saved, dict) or saved.get("format") != "fsl.protonet/1":
        raise ValueError(f"{path}: not a ProtoNet best_model.pt written by this project")
    config = ProtoNetConfig.from_dict(saved["config"])
    model = build_model(config)
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not fit the architecture in its config ({first})") from None
    model.eval()
    info = {k: saved.get(k) for k in ("val_acc", "val_acc_ci95", "epoch")}
    return model, config, info
