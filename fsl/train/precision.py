"""Mixed precision and memory format of a training run: the configs' `precision` and `channels_last`.

bf16 runs the training forward pass under `torch.autocast(bfloat16)`; the weights, their gradients and the
optimizer step stay float32, so a checkpoint holds the same float32 weights whatever the precision. The
rounding-sensitive end of each network (ProtoNet's distances over up to 1600 features, BYOL's normalised MSE,
cross-entropy) is fed float32 tensors: autocast leaves pointwise math and reductions on float32 inputs in float32.
channels_last stores 4-D weights and input batches as NHWC, the layout cuDNN's tensor-core convolutions use.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")

T = TypeVar("T", torch.Tensor, nn.Module)


class PrecisionSettings(Protocol):
    precision: str
    channels_last: bool


def autocast(cfg: PrecisionSettings, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on the run's device for precision=bf16 (CUDA or CPU alike), else nothing."""
    if cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if cfg.precision != "fp32":
        raise ValueError(f"precision={cfg.precision!r}: must be one of {', '.join(PRECISIONS)}")
    return contextlib.nullcontext()


def float32_outputs(cfg: PrecisionSettings, *modules: nn.Module) -> None:
    """Under bf16, make each module return float32 (a forward hook upcasts its tensor output), so what is
    computed from it outside autocast's matmuls (a distance, a loss) is computed in float32. No hook for fp32.

    A hook, not a wrapper module: the state dict's keys, and so every checkpoint, stay the same."""
    if cfg.precision == "fp32":
        return
    for module in modules:
        module.register_forward_hook(_upcast_output)


def _upcast_output(module: nn.Module, inputs: Any, output: Any) -> Any:
    if isinstance(output, torch.Tensor) and output.is_floating_point():
        return output.float()
    return output


def to_channels_last(x: T, cfg: PrecisionSettings) -> T:
    """The model (its 4-D weights, in place) or a 4-D image batch in channels_last memory format when
    cfg.channels_last; otherwise (and for tensors of another rank) x unchanged."""
    if not cfg.channels_last:
        return x
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
