"""Checkpoint files of a training run: saving and reading them back.

A checkpoint directory holds `state.pt` (model, optimizer, scheduler, epoch: what a resume needs) and
`best_model.pt` (the best epoch's weights with its config and metrics: what a user keeps and loads). The
state's `format` names what the best weights are: each method's `best_format` (fsl.train.method); the ProtoNet
method reads its files back (load_best_model), fsl.train.backbones a ResNet backbone from any method's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
BEST_MODEL_FILE = "best_model.pt"


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


def read_checkpoint_file(path: Path) -> Any:
    """A checkpoint file's contents; a one-line error naming the file when it is missing or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path}: not a readable checkpoint ({err.__class__.__name__})") from None


def first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]
