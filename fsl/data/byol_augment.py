"""BYOL's asymmetric two-view augmentation (Grill et al. 2020), batched on any device with per-image parameters.

One searchable `strength` scales the paper's probabilities and magnitudes: 1.0 is the paper, 0.0 leaves only flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsl.data.augment import GRAY_WEIGHTS, color_jitter, random_resized_crop

# Floor of the crop's smallest area fraction: below 5% of a small image there is little left to learn from.
MIN_CROP_SCALE = 0.05
# Beyond these a jitter magnitude stops making sense: a factor range [1 - m, 1 + m] with m > 1 reaches negative
# factors, and a hue shift of half a turn either way already covers the whole colour wheel.
MAX_FACTOR_MAGNITUDE = 1.0
MAX_HUE_MAGNITUDE = 0.5
BLUR_SIGMA_RANGE = (0.1, 2.0)
SOLARIZE_THRESHOLD = 0.5


@dataclass(frozen=True)
class ViewAugmentation:
    """The probabilities of one BYOL view (the paper's view 1 and view 2 differ only in blur and solarize)."""

    blur_p: float
    solarize_p: float
    crop_min_scale: float = 0.08
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    flip_p: float = 0.5


VIEW_1 = ViewAugmentation(blur_p=1.0, solarize_p=0.0)
VIEW_2 = ViewAugmentation(blur_p=0.1, solarize_p=0.2)


def scaled(view: ViewAugmentation, strength: float) -> ViewAugmentation:
    """Scale a view by `strength` s >= 0: probabilities and jitter magnitudes times s, flips untouched.

    Probabilities are capped at 1 and magnitudes at the largest meaningful value; the crop's smallest area fraction
    moves towards 1 as s falls (1 - (1 - min_scale) * s, clipped to [0.05, 1]), so s = 0 keeps the whole image.
    """
    if strength < 0:
        raise ValueError(f"augmentation strength must be >= 0, got {strength}")

    def prob(p: float) -> float:
        return min(1.0, p * strength)

    def factor(m: float) -> float:
        return min(MAX_FACTOR_MAGNITUDE, m * strength)

    return ViewAugmentation(
        blur_p=prob(view.blur_p),
        solarize_p=prob(view.solarize_p),
        # 1 - (1 - c) * s, written so that s = 1 returns c exactly and s = 0 returns exactly 1 (no crop at all).
        crop_min_scale=min(1.0, max(MIN_CROP_SCALE, view.crop_min_scale + (1 - view.crop_min_scale) * (1 - strength))),
        jitter_p=prob(view.jitter_p),
        brightness=factor(view.brightness),
        contrast=factor(view.contrast),
        saturation=factor(view.saturation),
        hue=min(MAX_HUE_MAGNITUDE, view.hue * strength),
        grayscale_p=prob(view.grayscale_p),
        # Mirroring changes no pixel statistics, so it stays on at every strength.
        flip_p=view.flip_p,
    )


def _chance(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """A (B, 1, 1, 1) mask, True for each image independently with probability p (shaped for torch.where)."""
    return (torch.rand(x.shape[0], device=x.device, generator=generator) < p).view(-1, 1, 1, 1)


def _uniform(x: torch.Tensor, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """One value per image, uniform in [low, high], in x's dtype and on its device."""
    return low + (high - low) * torch.rand(x.shape[0], device=x.device, dtype=x.dtype, generator=generator)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate every image's hue by its own `shift` (a (B,) tensor, in full turns) through HSV; x in [0, 1]."""
    r, g, b = x.unbind(1)
    value, argmax = x.max(1)
    chroma = value - x.min(1).values
    # Grey pixels have no hue; the safe divisor keeps them finite, and their zero chroma keeps them grey.
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(
        argmax == 0,
        ((g - b) / safe_chroma) % 6,
        torch.where(argmax == 1, (b - r) / safe_chroma + 2, (r - g) / safe_chroma + 4),
    )
    hue = (hue / 6 + shift.to(x.dtype).view(-1, 1, 1)) % 1.0
    # HSV -> RGB in closed form: channel n in (5, 3, 1) for (R, G, B) is V - C * clamp(min(k, 4 - k), 0, 1).
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + hue.unsqueeze(1) * 6) % 6
    return value.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1)


def blur_kernel_size(height: int, width: int) -> int:
    """BYOL's kernel: about 10% of the image side, odd, at least 3 (23 at 224 px, 3 at 32 px)."""
    return 2 * max(1, min(height, width) // 10 // 2) + 1


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur every image with its own Gaussian `sigma` (a (B,) tensor, in pixels), separably, with reflect padding."""
    b, c, h, w = x.shape
    radius = blur_kernel_size(h, w) // 2
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma.to(x.dtype).view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # one 1-D kernel per (image, channel)
    # Fold the batch into channels so a grouped convolution applies each image's own kernel in one call.
    planes = x.reshape(1, b * c, h, w)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"), kernel.view(b * c, 1, 1, -1), groups=b * c)
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"), kernel.view(b * c, 1, -1, 1), groups=b * c)
    return planes.view(b, c, h, w)


def byol_augment(x: torch.Tensor, view: ViewAugmentation, generator: torch.Generator) -> torch.Tensor:
    """x: float (B, 3, H, W) in [0, 1] -> augmented float (B, 3, H, W) in [0, 1] (NOT normalised; the caller
    normalises once). Every step draws its own parameters per image; steps with probability 0 are skipped."""
    dtype = x.dtype
    # Random-apply steps compute on the whole batch and select per image with torch.where rather than indexing
    # the chosen images: no data-dependent shapes, hence no host-device synchronisation on an accelerator.
    if view.crop_min_scale < 1:
        x = random_resized_crop(x, generator, scale=(view.crop_min_scale, 1.0), ratio=(3 / 4, 4 / 3))
    if view.flip_p > 0:
        # augment.random_flip fixes p at 0.5; here the probability is part of the view.
        x = torch.where(_chance(x, view.flip_p, generator), x.flip(-1), x)
    has_factors = view.brightness > 0 or view.contrast > 0 or view.saturation > 0
    if view.jitter_p > 0 and (has_factors or view.hue > 0):
        apply = _chance(x, view.jitter_p, generator)
        jittered = x
        # A fixed order (brightness, contrast, saturation, then hue) where torchvision shuffles it per call:
        # the order matters little next to the factors' ranges, and a fixed one keeps the batch one computation.
        if has_factors:
            jittered = color_jitter(jittered, generator, view.brightness, view.contrast, view.saturation)
        if view.hue > 0:
            jittered = shift_hue(jittered, _uniform(x, -view.hue, view.hue, generator))
        x = torch.where(apply, jittered.to(dtype), x)
    if view.grayscale_p > 0:
        weights = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=dtype).view(1, 3, 1, 1)
        gray = (x * weights).sum(1, keepdim=True).expand_as(x)
        x = torch.where(_chance(x, view.grayscale_p, generator), gray, x)
    if view.blur_p > 0:
        apply = _chance(x, view.blur_p, generator)
        x = torch.where(apply, gaussian_blur(x, _uniform(x, *BLUR_SIGMA_RANGE, generator)), x)
    if view.solarize_p > 0:
        solarized = torch.where(x >= SOLARIZE_THRESHOLD, 1 - x, x)
        x = torch.where(_chance(x, view.solarize_p, generator), solarized, x)
    # Bilinear resampling and the colour arithmetic can leave rounding error just outside [0, 1].
    return x.clamp(0, 1).to(dtype)


def byol_views(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two asymmetric views of the same images: byol_augment with scaled(VIEW_1, s) and scaled(VIEW_2, s)."""
    return byol_augment(x, scaled(VIEW_1, strength), generator), byol_augment(x, scaled(VIEW_2, strength), generator)
