"""Distances between query embeddings and class prototypes, returned as logits (higher = closer).

All work on batches of episodes: query (..., Q, D), prototypes (..., N, D) -> logits (..., Q, N).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DISTANCES = ("euclidean", "cosine", "parametric")


def squared_euclidean(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """||q - p||^2 for every query-prototype pair, as in the ProtoNet paper (not the unsquared cdist)."""
    return (query.unsqueeze(-2) - prototypes.unsqueeze(-3)).pow(2).sum(-1)


def cosine_similarity(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """cos(q, p) for every query-prototype pair."""
    return F.normalize(query, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(-1, -2)


class EuclideanDistance(nn.Module):
    """logits = -||q - p||^2."""

    def forward(self, query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return -squared_euclidean(query, prototypes)


class CosineDistance(nn.Module):
    """logits = temperature * cos(q, p). Unscaled cosine logits lie in [-1, 1], so softmax stays near chance;
    the temperature (fixed, or learned as its logarithm) makes them usable."""

    def __init__(self, temperature: float = 10.0, learn_temperature: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        log_t = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.detach().exp())

    def forward(self, query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return self.log_temperature.exp() * cosine_similarity(query, prototypes)


class ParametricDistance(nn.Module):
    """A learned distance on query-prototype pairs: an MLP on (q - p)^2 with its own learned output scale.

    The per-pair input keeps the distance symmetric in the feature dimensions' roles and lets the MLP learn
    which dimensions matter; an MLP on a flattened concatenation of all distances is known to sit at chance.
    The first layer starts as a positive average of (q - p)^2, so training starts from a Euclidean-like
    distance instead of from noise.
    """

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.hidden.weight.uniform_(0.0, 2.0 / dim)
            self.hidden.bias.zero_()
            self.out.weight.uniform_(0.5 / hidden, 1.5 / hidden)
            self.out.bias.zero_()
        # log(dim) makes the starting logits equal to the Euclidean ones.
        self.log_scale = nn.Parameter(torch.tensor(math.log(dim)))

    def forward(self, query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        pairs = (query.unsqueeze(-2) - prototypes.unsqueeze(-3)).pow(2)
        distance = self.out(F.relu(self.hidden(pairs))).squeeze(-1)
        return -self.log_scale.exp() * distance


def build_distance(name: str, dim: int, temperature: float = 10.0, learn_temperature: bool = True) -> nn.Module:
    if name == "euclidean":
        return EuclideanDistance()
    if name == "cosine":
        return CosineDistance(temperature, learn_temperature)
    if name == "parametric":
        return ParametricDistance(dim)
    raise ValueError(f"unknown distance {name!r}; expected one of {', '.join(DISTANCES)}")
