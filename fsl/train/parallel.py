"""Where a copy of a training loop runs (device, rank) and the few collectives the loops need.

Without torch.distributed initialised every function here is the single-process identity, so the loops run
unchanged in a unit test, in a Tune trial, or on N Ray Train workers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Placement:
    """Where this copy of the loop runs: its device and its rank among data-parallel workers."""

    device: torch.device
    rank: int = 0
    world_size: int = 1


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over all ranks (float64, so counts stay exact)."""
    if not distributed():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def rank_share(n: int, placement: Placement) -> np.ndarray:
    """This rank's contiguous share of the rows 0..n-1 (shares differ by at most one row)."""
    return np.array_split(np.arange(n), placement.world_size)[placement.rank]


def gather_rows(local: torch.Tensor, n: int, placement: Placement) -> torch.Tensor:
    """Reassemble the full (n, ...) tensor from every rank's `rank_share` rows, on every rank."""
    if not distributed() or placement.world_size == 1:
        return local
    longest = -(-n // placement.world_size)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(placement.world_size)]
    dist.all_gather(parts, padded)
    sizes = [len(share) for share in np.array_split(np.arange(n), placement.world_size)]
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def batch_rows(permutation: np.ndarray, step: int, global_batch: int, placement: Placement) -> np.ndarray:
    """This rank's slice of global batch `step` of an epoch's permutation (every rank sees the same
    permutation; together the ranks cover each global batch once)."""
    batch = permutation[step * global_batch : (step + 1) * global_batch]
    return np.array_split(batch, placement.world_size)[placement.rank]


def to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 images as a tensor on the device. On the CPU it shares memory with the array, which may be a
    read-only view of the Ray object store: the loops only ever read it (index_select makes copies)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the given NumPy array is not writable"
        tensor = torch.from_numpy(images)
    return tensor.to(device)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model
