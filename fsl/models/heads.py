"""MLP heads on top of a backbone's features: ProtoNet's embedding head, BYOL's projector and predictor, and
the classifier head of the Office-Home settings. All share one block: Linear -> BatchNorm1d -> ReLU."""

from __future__ import annotations

from torch import nn


def _hidden_layers(in_dim: int, width: int, count: int) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(count):
        layers += [nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        dim = width
    return layers, dim


class MLPHead(nn.Sequential):
    """ProtoNet's head. depth 0: identity. depth d >= 1: (d - 1) hidden blocks, then a final Linear to width."""

    def __init__(self, in_dim: int, depth: int, width: int = 256) -> None:
        if not 0 <= depth <= 3:
            raise ValueError(f"head_depth must be 0..3, got {depth}")
        layers, dim = _hidden_layers(in_dim, width, max(0, depth - 1))
        if depth >= 1:
            layers.append(nn.Linear(dim, width))
            dim = width
        super().__init__(*layers)
        self.out_dim = dim


class MLP(nn.Sequential):
    """`hidden_layers` blocks of `width` units, then a Linear to out_dim. BYOL's projector and predictor
    (the paper: one hidden layer of 4096, output 256) and the classifier head (the seed: 512 -> classes)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_layers: int, width: int) -> None:
        if hidden_layers < 0:
            raise ValueError(f"hidden_layers must be >= 0, got {hidden_layers}")
        layers, dim = _hidden_layers(in_dim, width, hidden_layers)
        super().__init__(*layers, nn.Linear(dim, out_dim))
        self.out_dim = out_dim
