"""The Conv4 backbone of Prototypical Networks: four blocks of Conv3x3(64) -> BN -> ReLU -> MaxPool2."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Conv4 (64-64-64-64); flattened output of 64 * (S // 16)^2 features (1600 at 84 px, 256 at 32 px)."""

    def __init__(self, in_channels: int = 3, hidden: int = 64, blocks: int = 4) -> None:
        super().__init__()
        channels = [in_channels] + [hidden] * blocks
        self.encoder = nn.Sequential(*(conv_block(a, b) for a, b in zip(channels, channels[1:], strict=False)))
        self.hidden = hidden
        self.blocks = blocks

    def output_dim(self, image_size: int) -> int:
        side = image_size
        for _ in range(self.blocks):
            side //= 2
        if side < 1:
            raise ValueError(f"image size {image_size} is too small for {self.blocks} pooling blocks")
        return self.hidden * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).flatten(1)
