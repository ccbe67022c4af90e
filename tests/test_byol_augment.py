"""BYOL's two-view augmentation: per-image parameters, each step on hand-computed pixels, strength and seeding."""

import math

import pytest
import torch

import fsl.data.byol_augment as byol
from fsl.data.augment import random_resized_crop
from fsl.data.byol_augment import (
    VIEW_1,
    VIEW_2,
    ViewAugmentation,
    blur_kernel_size,
    byol_augment,
    byol_views,
    gaussian_blur,
    scaled,
    shift_hue,
)

# A view that does nothing at all; tests switch single steps back on with dataclasses.replace-style keywords.
NOTHING = dict(blur_p=0.0, solarize_p=0.0, crop_min_scale=1.0, jitter_p=0.0, grayscale_p=0.0, flip_p=0.0)


def only(**steps: float) -> ViewAugmentation:
    return ViewAugmentation(**{**NOTHING, **steps})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=gen(seed))


def constant(rgb: tuple[float, float, float], b: int = 2, size: int = 8) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(b, 3, size, size).clone()


def all_pairs_differ(x: torch.Tensor, atol: float = 1e-4) -> bool:
    return all(not torch.allclose(x[i], x[j], atol=atol) for i in range(len(x)) for j in range(i + 1, len(x)))


# --- the two views and per-image parameters ----------------------------------------------------------------


def test_the_two_views_of_an_image_differ():
    x = images()
    view_1, view_2 = byol_views(x, gen())
    for i in range(len(x)):
        assert not torch.allclose(view_1[i], view_2[i], atol=1e-3)


def test_crop_alone_draws_its_own_parameters_for_every_image():
    x = images(b=1, size=32).expand(8, 3, 32, 32).contiguous()
    cropped = random_resized_crop(x, gen(), scale=(VIEW_1.crop_min_scale, 1.0))
    assert all_pairs_differ(cropped)


def test_identical_images_get_different_augmentations():
    x = images(b=1, size=32).expand(8, 3, 32, 32).contiguous()
    for view in (VIEW_1, VIEW_2):
        assert all_pairs_differ(byol_augment(x, view, gen()))


def test_random_apply_is_decided_per_image():
    # Brightness-only jitter with p = 0.5 on 64 identical grey images: some stay exactly, some change.
    x = constant((0.5, 0.5, 0.5), b=64)
    out = byol_augment(x, only(jitter_p=0.5, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0), gen())
    unchanged = (out == x).flatten(1).all(1)
    assert 0 < int(unchanged.sum()) < 64


# --- single steps on hand-computed pixels ------------------------------------------------------------------


def test_shift_hue_by_zero_and_by_a_full_turn_is_the_identity():
    x = images()
    for turns in (0.0, 1.0, -1.0):
        assert torch.allclose(shift_hue(x, torch.full((len(x),), turns)), x, atol=1e-5)


def test_shift_hue_moves_red_to_green_and_blue_per_image():
    red = constant((1.0, 0.0, 0.0), b=3)
    out = shift_hue(red, torch.tensor([1 / 3, 2 / 3, -1 / 3]))
    assert torch.allclose(out[0], constant((0.0, 1.0, 0.0), b=1)[0], atol=1e-5)
    assert torch.allclose(out[1], constant((0.0, 0.0, 1.0), b=1)[0], atol=1e-5)
    assert torch.allclose(out[2], constant((0.0, 0.0, 1.0), b=1)[0], atol=1e-5)


def test_shift_hue_on_a_mixed_colour_and_on_grey():
    # (0.8, 0.4, 0.2): V = 0.8, C = 0.6, hue = (0.4 - 0.2) / 0.6 / 6 = 1/18. Half a turn on -> 10/18, which is
    # in the cyan-to-blue sector: R = V - C = 0.2, G = V - C * (10/18 * 6 - 3) = 0.6, B = V = 0.8.
    x = constant((0.8, 0.4, 0.2), b=1)
    assert torch.allclose(shift_hue(x, torch.tensor([0.5])), constant((0.2, 0.6, 0.8), b=1), atol=1e-5)
    grey = constant((0.3, 0.3, 0.3), b=1)
    assert torch.allclose(shift_hue(grey, torch.tensor([0.25])), grey)


def test_grayscale_uses_the_601_weights():
    out = byol_augment(constant((0.2, 0.4, 0.6)), only(grayscale_p=1.0), gen())
    gray = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6  # 0.363
    assert torch.allclose(out, torch.full_like(out, gray), atol=1e-6)


def test_solarize_inverts_pixels_at_or_above_one_half():
    out = byol_augment(constant((0.2, 0.7, 0.5)), only(solarize_p=1.0), gen())
    assert torch.allclose(out, constant((0.2, 0.3, 0.5)), atol=1e-6)


def test_blur_kernel_is_about_a_tenth_of_the_side_and_odd():
    assert blur_kernel_size(224, 224) == 23  # BYOL's ImageNet kernel
    assert blur_kernel_size(32, 32) == 3
    assert blur_kernel_size(16, 16) == 3
    assert blur_kernel_size(64, 48) == 5


def test_blur_keeps_a_constant_image_and_smooths_noise():
    flat = constant((0.1, 0.5, 0.9), b=2, size=16)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([0.5, 2.0])), flat, atol=1e-6)
    noise = images(b=2, size=32)
    assert (gaussian_blur(noise, torch.tensor([2.0, 2.0])).var() < 0.5 * noise.var()).item()
    out = byol_augment(flat, only(blur_p=1.0), gen())
    assert torch.allclose(out, flat, atol=1e-6)


def test_blur_applies_each_images_own_sigma():
    # A single bright pixel at 16 px (kernel 3): each 1-D kernel is (a, 1, a) / (1 + 2a) with a = exp(-1 / (2 s^2)),
    # so the centre keeps (1 / (1 + 2a))^2: almost all of it at s = 0.1, 0.1308 of it at s = 2.
    delta = torch.zeros(2, 3, 16, 16)
    delta[:, :, 8, 8] = 1.0
    out = gaussian_blur(delta, torch.tensor([0.1, 2.0]))
    a = math.exp(-1 / (2 * 2.0**2))
    assert torch.allclose(out[0], delta[0], atol=1e-6)
    assert out[1, 0, 8, 8].item() == pytest.approx((1 / (1 + 2 * a)) ** 2, abs=1e-5)
    assert out[1, 0, 7, 8].item() == pytest.approx(a / (1 + 2 * a) ** 2, abs=1e-5)
    assert out[1].sum().item() == pytest.approx(3.0, abs=1e-5)


# --- seeding, strength, ranges -----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_views_and_another_seed_others():
    x = images()
    first = byol_views(x, gen(1))
    again = byol_views(x, gen(1))
    other = byol_views(x, gen(2))
    for a, b, c in zip(first, again, other, strict=True):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c, atol=1e-3)


def test_scaled_by_one_is_the_paper_and_by_one_half_halves():
    assert scaled(VIEW_1, 1.0) == VIEW_1
    assert scaled(VIEW_2, 1.0) == VIEW_2
    half = scaled(VIEW_2, 0.5)
    assert (half.blur_p, half.solarize_p, half.jitter_p, half.grayscale_p) == pytest.approx((0.05, 0.1, 0.4, 0.1))
    assert (half.brightness, half.contrast, half.saturation, half.hue) == pytest.approx((0.2, 0.2, 0.1, 0.05))
    assert half.crop_min_scale == pytest.approx(1 - 0.92 * 0.5)
    assert half.flip_p == 0.5


def test_scaled_caps_probabilities_magnitudes_and_the_crop():
    strong = scaled(VIEW_1, 10.0)
    assert (strong.blur_p, strong.jitter_p, strong.grayscale_p) == (1.0, 1.0, 1.0)
    assert (strong.brightness, strong.contrast, strong.saturation, strong.hue) == (1.0, 1.0, 1.0, 0.5)
    assert strong.crop_min_scale == 0.05
    with pytest.raises(ValueError, match="strength"):
        scaled(VIEW_1, -0.1)


def test_strength_zero_leaves_only_flips():
    for view in (VIEW_1, VIEW_2):
        zero = scaled(view, 0.0)
        assert zero == ViewAugmentation(**{**NOTHING, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0,
                                           "hue": 0.0, "flip_p": 0.5})  # fmt: skip
    x = images(b=32)
    for out in byol_views(x, gen(), strength=0.0):
        same = (out == x).flatten(1).all(1)
        mirrored = (out == x.flip(-1)).flatten(1).all(1)
        assert (same | mirrored).all()
        assert same.any() and mirrored.any()


def test_outputs_stay_in_the_unit_interval_with_shape_and_dtype():
    for dtype in (torch.float32, torch.float64):
        x = images(b=8, size=32).to(dtype)
        x[0] = 0.0
        x[1] = 1.0
        for strength in (0.0, 1.0, 3.0):
            for out in byol_views(x, gen(), strength):
                assert out.shape == x.shape and out.dtype == dtype
                assert out.min().item() >= 0.0 and out.max().item() <= 1.0


def test_view_1_never_solarizes_and_a_view_without_blur_never_blurs(monkeypatch: pytest.MonkeyPatch):
    assert scaled(VIEW_1, 1.0).solarize_p == 0.0
    assert scaled(VIEW_1, 3.0).solarize_p == 0.0
    assert scaled(VIEW_2, 0.0).blur_p == 0.0
    calls = []
    real_blur = byol.gaussian_blur
    monkeypatch.setattr(byol, "gaussian_blur", lambda x, sigma: calls.append(len(x)) or real_blur(x, sigma))
    x = images()
    byol_augment(x, ViewAugmentation(blur_p=0.0, solarize_p=0.0), gen())
    byol_augment(x, scaled(VIEW_2, 0.0), gen())
    assert calls == []
    byol_augment(x, VIEW_1, gen())
    assert calls == [len(x)]
