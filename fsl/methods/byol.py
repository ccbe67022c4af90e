"""BYOL (Grill et al. 2020): an online network learns to predict a slowly moving (EMA) target network's
projection of another view of the same image. Pure functions for the math, one module for the networks."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from fsl.models.heads import MLP
from fsl.models.resnet import FEATURE_DIMS, build_backbone


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 2 - 2 cos(p, z): 0 when the prediction points where the target does, 4 when opposite."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def cosine_tau(step: int, total_steps: int, tau_base: float) -> float:
    """The target's EMA rate: tau_base at step 0, rising to 1 at total_steps on a half cosine (the paper's)."""
    if total_steps <= 0:
        return 1.0
    progress = min(max(step / total_steps, 0.0), 1.0)
    return 1 - (1 - tau_base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_(online: list[torch.Tensor], target: list[torch.Tensor], tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, in place, for each pair of tensors."""
    torch._foreach_mul_(target, tau)
    torch._foreach_add_(target, online, alpha=1 - tau)


def projection_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse monitor: the std over the batch of the L2-normalised projections, averaged over dimensions.
    About 1/sqrt(dim) when projections spread over the sphere; 0 when every image maps to one point."""
    return F.normalize(z.detach().float(), dim=-1).std(dim=0).mean()


class BYOL(nn.Module):
    """Online encoder + projector + predictor, and a target encoder + projector that only moves by EMA."""

    def __init__(self, arch: str, head_depth: int = 1, head_width: int = 4096, projection_dim: int = 256) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = build_backbone(arch)
        self.projector = MLP(FEATURE_DIMS[arch], projection_dim, head_depth, head_width)
        self.predictor = MLP(projection_dim, projection_dim, head_depth, head_width)
        self.target_backbone = copy.deepcopy(self.backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for param in self.target_parameters():
            param.requires_grad_(False)

    def online_parameters(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.projector.parameters()]

    def target_parameters(self) -> list[nn.Parameter]:
        return [*self.target_backbone.parameters(), *self.target_projector.parameters()]

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The symmetric loss of two views of the same images, and the online projections' std.

        Both views go through each network in one batch: one forward per step, as DDP needs, and BatchNorm
        sees both views together."""
        n = view_1.shape[0]
        both = torch.cat([view_1, view_2])
        z = self.projector(self.backbone(both))
        p = self.predictor(z)
        with torch.no_grad():
            target_z = self.target_projector(self.target_backbone(both))
        # View 1's prediction against view 2's target, and the other way round.
        loss = byol_loss(p[:n], target_z[n:]) + byol_loss(p[n:], target_z[:n])
        return loss, projection_std(z)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        ema_(self.online_parameters(), self.target_parameters(), tau)
