"""An MLP head on top of the backbone's features; depth 0 is the flattened features themselves."""

from __future__ import annotations

from torch import nn


class MLPHead(nn.Sequential):
    """depth 0: identity. depth d >= 1: (d - 1) x [Linear -> BatchNorm1d -> ReLU], then a final Linear."""

    def __init__(self, in_dim: int, depth: int, width: int = 256) -> None:
        if not 0 <= depth <= 3:
            raise ValueError(f"head_depth must be 0..3, got {depth}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            dim = width
        if depth >= 1:
            layers.append(nn.Linear(dim, width))
            dim = width
        super().__init__(*layers)
        self.out_dim = dim
