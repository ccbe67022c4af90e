"""SimCLR (Chen et al. 2020): two augmented views of each image are pulled together and pushed away from every
other image's views by the NT-Xent (normalised temperature-scaled cross-entropy) loss on a projection head.
Pure functions for the math, one module for the network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsl.methods.byol import projection_std
from fsl.models.heads import MLP
from fsl.models.resnet import FEATURE_DIMS, build_backbone


def nt_xent_loss(z_1: torch.Tensor, z_2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The NT-Xent loss of N pairs: each of the 2N projections must pick its pair's other view out of the
    2N - 1 others by cosine similarity / temperature; the mean cross-entropy over all 2N."""
    z = F.normalize(torch.cat([z_1, z_2]).float(), dim=-1)
    n = z_1.shape[0]
    itself = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(itself, float("-inf"))  # a view is not its own candidate
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, positives)


class SimCLR(nn.Module):
    """A ResNet backbone and an MLP projection head (the paper: one hidden layer of 2048, output 128).

    Under DDP each rank's negatives are the other images of its own share of the global batch (as lightly's
    NTXentLoss does by default); the gradients are averaged across ranks."""

    def __init__(
        self,
        arch: str,
        head_depth: int = 1,
        head_width: int = 2048,
        projection_dim: int = 128,
        temperature: float = 0.5,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.temperature = temperature
        self.backbone = build_backbone(arch)
        self.projector = MLP(FEATURE_DIMS[arch], projection_dim, head_depth, head_width)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of two views of the same images, and the projections' std (the collapse monitor). Both
        views go through the network in one batch: one forward per step, as DDP needs."""
        n = view_1.shape[0]
        z = self.projector(self.backbone(torch.cat([view_1, view_2])))
        return nt_xent_loss(z[:n], z[n:], self.temperature), projection_std(z)
