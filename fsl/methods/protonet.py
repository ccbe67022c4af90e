"""Prototypical Networks: prototypes are class means of support embeddings; queries are classified by a
distance to each prototype. The math is pure functions; `ProtoNet` bundles backbone, head and distance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsl.models.conv4 import Conv4
from fsl.models.distances import build_distance
from fsl.models.heads import MLPHead


def prototypes(support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean embedding per class: support (..., S, D), labels (S,) in 0..n_way-1 -> (..., n_way, D)."""
    one_hot = F.one_hot(labels, n_way).to(support.dtype)  # (S, N)
    counts = one_hot.sum(0)
    if (counts == 0).any():
        raise ValueError(f"every class needs a support example; counts per class {counts.tolist()}")
    return (one_hot.transpose(0, 1) @ support) / counts[:, None]


def protonet_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the query logits (Q, N) against way indices (Q,)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of queries whose highest logit is their class; over the last two dims (..., Q, N)."""
    return (logits.argmax(-1) == labels).float().mean(-1)


class ProtoNet(nn.Module):
    """Conv4 backbone -> MLP head (depth 0..3) -> distance to class prototypes."""

    def __init__(
        self,
        image_size: int,
        head_depth: int = 0,
        head_width: int = 256,
        distance: str = "euclidean",
        temperature: float = 10.0,
        learn_temperature: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = Conv4()
        self.head = MLPHead(self.backbone.output_dim(image_size), head_depth, head_width)
        self.distance = build_distance(distance, self.head.out_dim, temperature, learn_temperature)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def forward(self, images: torch.Tensor, n_way: int, k_shot: int) -> torch.Tensor:
        """images: the episode's N*K support images (grouped by class) followed by its queries.
        Returns the query logits (Q, N). Support and query go through the backbone in one batch."""
        z = self.embed(images)
        n_support = n_way * k_shot
        support_labels = torch.arange(n_way, device=images.device).repeat_interleave(k_shot)
        protos = prototypes(z[:n_support], support_labels, n_way)
        return self.distance(z[n_support:], protos)
