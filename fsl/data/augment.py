"""Named augmentation policies, applied per sample to a batch of image tensors on any device.

Every image gets its own random parameters (a batch-level torchvision transform would give every image
the same crop). Policies combine with '+': 'flip+crop+color'. Inputs and outputs are floats in [0, 1],
shaped (B, 3, H, W).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]; the conversion happens per batch, on its device."""
    return images.permute(0, 3, 1, 2).float().div_(255)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Standardise with the ImageNet channel statistics (after augmentation, exactly once)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flip with probability 0.5, decided per image."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random area fraction `scale` with aspect ratio `ratio`, resized back to (H, W), per image."""
    b = x.shape[0]
    rand = torch.rand(b, 4, device=x.device, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * rand[:, 0]
    log_ratio = torch.log(torch.tensor(ratio[0])) + (torch.log(torch.tensor(ratio[1] / ratio[0]))) * rand[:, 1]
    aspect = torch.exp(log_ratio)
    # Half-widths in normalised coordinates ([-1, 1] spans the image), clipped to stay inside it.
    half_w = torch.sqrt(area * aspect).clamp(max=1.0)
    half_h = torch.sqrt(area / aspect).clamp(max=1.0)
    center_x = (1 - half_w) * (2 * rand[:, 2] - 1)
    center_y = (1 - half_h) * (2 * rand[:, 3] - 1)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = half_w
    theta[:, 0, 2] = center_x
    theta[:, 1, 1] = half_h
    theta[:, 1, 2] = center_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(
    x: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
) -> torch.Tensor:
    """Brightness, contrast and saturation factors drawn per image from [1 - s, 1 + s]."""
    b = x.shape[0]
    factors = 1 + (2 * torch.rand(b, 3, 1, 1, 1, device=x.device, generator=generator) - 1) * torch.tensor(
        [brightness, contrast, saturation], device=x.device
    ).view(1, 3, 1, 1, 1)
    x = x * factors[:, 0]
    weights = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    gray = (x * weights).sum(1, keepdim=True)
    x = (x - gray.mean((2, 3), keepdim=True)) * factors[:, 1] + gray.mean((2, 3), keepdim=True)
    gray = (x * weights).sum(1, keepdim=True)
    x = (x - gray) * factors[:, 2] + gray
    return x.clamp(0, 1)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "flip": random_flip,
    "crop": random_resized_crop,
    "color": color_jitter,
}

# The choices a study searches over by default.
POLICY_CHOICES = ("none", "flip", "crop", "color", "flip+crop", "flip+crop+color")


def parse_policy(name: str) -> tuple[str, ...]:
    """'none' -> (); 'flip+crop' -> ('flip', 'crop'). Unknown parts raise a ValueError naming them."""
    name = name.strip()
    if name == "none":
        return ()
    parts = tuple(part.strip() for part in name.split("+"))
    unknown = [part for part in parts if part not in AUGMENTATIONS]
    if unknown or not parts:
        raise ValueError(
            f"unknown augmentation {unknown[0] if unknown else name!r} in policy {name!r}; "
            f"expected 'none' or a '+'-joined combination of {', '.join(AUGMENTATIONS)}"
        )
    return parts


def augment(x: torch.Tensor, policy: str | tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """Apply a named policy to a batch of images in [0, 1]."""
    steps = parse_policy(policy) if isinstance(policy, str) else policy
    for step in steps:
        x = AUGMENTATIONS[step](x, generator)
    return x
