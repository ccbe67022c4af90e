"""A generated demo data set in the DLCV HW4 layout, deterministic from a seed.

Each class is a combination of a shape, a colour and a texture. Within a class, position, size, rotation,
colour shade, texture phase and frequency, the background and a distractor blob all vary, so a class is
recognised from its combination of cues, not from one pixel statistic: an untrained Conv4 is well below a
trained one. Images are written as PNG files with train.csv / val.csv and 5-way 1-shot 15-query fixed
validation episodes, exactly like the real HW4 folders, so the demo run exercises the real loader.

An Office-Home-like demo set sits beside it (`ensure_office_demo_dataset`): the same shapes, textures and
renderer, so features learned on the Mini-like set transfer, but objects whose colour is not part of what they
are (a class is a shape and a texture, each image has a random hue, as a chair is a chair in any colour),
another "domain" (a bright studio backdrop with a drop shadow instead of a cluttered grey one) and few images
per class. Training from scratch must learn colour invariance from those few labels; a backbone pre-trained
on the Mini-like set (BYOL's colour augmentation teaches exactly that invariance) starts with it.
"""

from __future__ import annotations

import colorsys
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsl.data.decoded import default_cache_dir
from fsl.data.episodes import draw_fixed_episodes, write_fixed_episodes

DEMO_VERSION = 1
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "bar")
TEXTURES = ("solid", "stripes", "dots", "checker", "rings")
N_HUES = 8
DEMO_EPISODES = {"n_way": 5, "k_shot": 1, "n_query": 15, "n_episodes": 600}
# Every (shape, hue, texture) class of the Mini-like demo, in a fixed order; a seed permutes them.
COMBOS = tuple((s, h, t) for s in range(len(SHAPES)) for h in range(N_HUES) for t in range(len(TEXTURES)))
# Every (shape, texture) class of the office demo: its objects come in any colour.
OFFICE_CLASSES = tuple((s, t) for s in range(len(SHAPES)) for t in range(len(TEXTURES)))
# How render_class draws the background: "clutter" (the Mini-like demo) or "studio" (the office demo's domain).
BACKGROUNDS = ("clutter", "studio")

OFFICE_DEMO_VERSION = 3
# The office demo's images are drawn from this stream of the seed, not the Mini-like demo's.
_OFFICE_STREAM = 1


def demo_root(seed: int = 0, image_size: int = 32, cache_dir: Path | None = None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / "demo" / f"v{DEMO_VERSION}-seed{seed}-{image_size}px"


def ensure_demo_dataset(
    seed: int = 0,
    image_size: int = 32,
    cache_dir: Path | None = None,
    n_train_classes: int = 64,
    n_val_classes: int = 16,
    images_per_class: int = 60,
) -> Path:
    """Return the demo data folder, generating it on first use (atomically: a crash leaves nothing half-made)."""
    return generate_once(
        demo_root(seed, image_size, cache_dir),
        "val_testcase_gt.csv",
        lambda staging: write_demo_dataset(staging, seed, image_size, n_train_classes, n_val_classes, images_per_class),
    )


def generate_once(root: Path, last_file: str, write: Callable[[Path], None]) -> Path:
    """Return `root`, first calling write(staging) on a fresh sibling folder and renaming it to `root` if
    `root`/`last_file` (the file generation writes last) is missing; a crash leaves nothing half-made."""
    if (root / last_file).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        write(staging)
        try:
            os.rename(staging, root)
        except OSError:
            # Another process finished first; its copy is identical because generation is deterministic.
            if not (root / last_file).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def write_demo_dataset(
    root: Path,
    seed: int = 0,
    image_size: int = 32,
    n_train_classes: int = 64,
    n_val_classes: int = 16,
    images_per_class: int = 60,
    episodes: dict[str, int] | None = None,
) -> None:
    """Write the HW4 layout into `root`: {train,val}.csv, {train,val}/*.png, val_testcase(_gt).csv.

    `episodes` (n_way, k_shot, n_query, n_episodes) shapes the fixed validation episodes; HW4's by default.
    """
    rng = np.random.default_rng(seed)
    n_classes = n_train_classes + n_val_classes
    if n_classes > len(COMBOS):
        raise ValueError(f"the demo data set has at most {len(COMBOS)} classes, {n_classes} were asked for")
    chosen = [COMBOS[i] for i in _combo_order(rng)[:n_classes]]

    def classes(combos: list[tuple[int, int, int]]) -> list[tuple[str, Callable[[], np.ndarray]]]:
        return [(class_label(c), partial(render_class, *c, images_per_class, image_size, rng)) for c in combos]

    _write_split(root, "train", classes(chosen[:n_train_classes]))
    _write_split(root, "val", classes(chosen[n_train_classes:]))
    write_val_episodes(root, seed + 1, episodes or DEMO_EPISODES)


def write_val_episodes(root: Path, seed: int, episodes: dict[str, int]) -> None:
    """Draw fixed episodes (n_way, k_shot, n_query, n_episodes) from root/val.csv and write them as HW4's
    val_testcase.csv and val_testcase_gt.csv."""
    val = pd.read_csv(root / "val.csv", dtype=str)
    fixed = draw_fixed_episodes(pd.factorize(val["label"])[0], seed=seed, **episodes)
    write_fixed_episodes(fixed, list(val["id"]), root / "val_testcase.csv", root / "val_testcase_gt.csv")


def _combo_order(rng: np.random.Generator) -> np.ndarray:
    """The seed's order of all COMBOS (indices); the Mini-like demo takes a prefix."""
    return rng.permutation(len(COMBOS))


def class_label(combo: tuple[int, int, int]) -> str:
    """The readable class name of a (shape, hue, texture) combination, e.g. 'star-hue3-dots'."""
    shape, hue, texture = combo
    return f"{SHAPES[shape]}-hue{hue}-{TEXTURES[texture]}"


def office_class_label(office_class: tuple[int, int]) -> str:
    """The readable name of a (shape, texture) office class, e.g. 'star-dots'."""
    shape, texture = office_class
    return f"{SHAPES[shape]}-{TEXTURES[texture]}"


def _write_split(
    root: Path,
    split: str,
    classes: list[tuple[str, Callable[[], np.ndarray]]],
    first_id: int = 0,
) -> None:
    """Render each (label, render) class into root/split/ and list the images in root/split.csv; the classes are
    rendered in order, so their random draws come in a fixed order too."""
    (root / split).mkdir(parents=True)
    rows = []
    for label, render in classes:
        for i, image in enumerate(render()):
            filename = f"{label}_{i:04d}.png"
            Image.fromarray(image).save(root / split / filename)
            rows.append((first_id + len(rows), filename, label))
    pd.DataFrame(rows, columns=["id", "filename", "label"]).to_csv(root / f"{split}.csv", index=False)


# --- the Office-Home-like demo -----------------------------------------------------------------------------


def office_demo_root(seed: int = 0, image_size: int = 32, cache_dir: Path | None = None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / "demo" / f"office-v{OFFICE_DEMO_VERSION}-seed{seed}-{image_size}px"


def ensure_office_demo_dataset(
    seed: int = 0,
    image_size: int = 32,
    cache_dir: Path | None = None,
    n_classes: int = len(OFFICE_CLASSES),
    train_per_class: int = 24,
    val_per_class: int = 16,
) -> Path:
    """Return the office demo data folder, generating it on first use (atomically, like ensure_demo_dataset).

    The folder name holds seed and image size only: pass other sizes together with their own cache_dir.
    """
    return generate_once(
        office_demo_root(seed, image_size, cache_dir),
        "val.csv",
        lambda staging: write_office_demo_dataset(staging, seed, image_size, n_classes, train_per_class, val_per_class),
    )


def write_office_demo_dataset(
    root: Path,
    seed: int = 0,
    image_size: int = 32,
    n_classes: int = len(OFFICE_CLASSES),
    train_per_class: int = 24,
    val_per_class: int = 16,
) -> None:
    """Write an Office-Home-like HW4 layout into `root`: {train,val}.csv and {train,val}/*.png, no val_testcase.

    Both splits hold the same `n_classes` (shape, texture) classes, every image in a random hue, drawn on a
    "studio" background; val ids continue after train's, so the two never share one.
    """
    if not 1 <= n_classes <= len(OFFICE_CLASSES):
        raise ValueError(f"the office demo data set has 1 to {len(OFFICE_CLASSES)} classes, {n_classes} were asked for")
    rng = np.random.default_rng([seed, _OFFICE_STREAM])
    chosen = [OFFICE_CLASSES[i] for i in rng.permutation(len(OFFICE_CLASSES))[:n_classes]]

    def classes(per_class: int) -> list[tuple[str, Callable[[], np.ndarray]]]:
        def render(shape: int, texture: int) -> np.ndarray:
            hues = rng.uniform(0, N_HUES, per_class)  # any colour: the class is the shape and the texture
            return render_class(shape, hues, texture, per_class, image_size, rng, background="studio")

        return [(office_class_label(c), partial(render, *c)) for c in chosen]

    _write_split(root, "train", classes(train_per_class))
    _write_split(root, "val", classes(val_per_class), first_id=n_classes * train_per_class)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of shape (n,); returns (n, 3) in [0, 1]."""
    return np.array([colorsys.hsv_to_rgb(float(a), float(b), float(c)) for a, b, c in zip(h, s, v, strict=True)])


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt(u**2 + v**2)
    if SHAPES[shape] == "circle":
        return r < 0.9
    if SHAPES[shape] == "square":
        return np.maximum(abs(u), abs(v)) < 0.75
    if SHAPES[shape] == "triangle":
        return (v > -0.6) & (1.6 * abs(u) + v < 0.9)
    if SHAPES[shape] == "diamond":
        return abs(u) + abs(v) < 0.95
    if SHAPES[shape] == "cross":
        return ((abs(u) < 0.3) & (abs(v) < 0.95)) | ((abs(v) < 0.3) & (abs(u) < 0.95))
    if SHAPES[shape] == "ring":
        return (r > 0.5) & (r < 0.95)
    if SHAPES[shape] == "star":
        return r < 0.55 + 0.35 * np.cos(5 * np.arctan2(v, u))
    return (abs(u) < 0.95) & (abs(v) < 0.35)  # bar


def _texture(texture: int, u: np.ndarray, v: np.ndarray, freq: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """1 where the texture's darker ink is, 0 elsewhere."""
    if TEXTURES[texture] == "solid":
        return np.zeros_like(u)
    if TEXTURES[texture] == "stripes":
        return (np.sin(freq * u + phase) > 0).astype(float)
    if TEXTURES[texture] == "dots":
        return ((np.sin(freq * u + phase) * np.sin(freq * v + phase)) > 0.35).astype(float)
    if TEXTURES[texture] == "checker":
        return ((np.sin(freq * u + phase) * np.sin(freq * v)) > 0).astype(float)
    return (np.sin(freq * np.sqrt(u**2 + v**2) * 1.5 + phase) > 0).astype(float)  # rings


def render_class(
    shape: int,
    hue: float | np.ndarray,
    texture: int,
    n: int,
    image_size: int,
    rng: np.random.Generator,
    background: str = "clutter",
    *,
    supersample: int = 2,
    hue_jitter: float = 0.02,
    texture_freq: tuple[float, float] = (5.0, 8.0),
    distractors: int = 1,
    occluders: int = 0,
) -> np.ndarray:
    """Render n images (n, S, S, 3) uint8 of one class, at `supersample` times the size then averaged down
    (anti-aliasing).

    `hue` is the class's hue index (0..N_HUES) or one per image. `background` is the domain: "clutter" (a
    random, mostly grey, dim-to-mid backdrop) or "studio" (a bright,
    near-white backdrop lit from above, with the object's soft drop shadow). Each of `distractors` blobs is
    drawn behind the object with probability 0.6, each of `occluders` in front of it (hiding part of it).
    The keyword defaults are the demo's; the full-size stand-ins (fsl.data.standins) make classes harder to
    tell apart with them.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; expected one of {', '.join(BACKGROUNDS)}")
    size = supersample * image_size
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(axis, axis, indexing="ij")
    x, y = x[None], y[None]

    def per_image(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, size=(n, 1, 1))

    # The object: position, size and rotation vary within the class.
    cx, cy = per_image(-0.3, 0.3), per_image(-0.3, 0.3)
    scale = per_image(0.45, 0.75)
    angle = per_image(-0.5, 0.5)
    dx, dy = (x - cx) / scale, (y - cy) / scale
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    mask = _shape_mask(shape, u, v)
    ink = _texture(texture, u, v, per_image(*texture_freq), per_image(0, 2 * np.pi))

    # The class colour, with shade variation; the texture is drawn in a darker tone of the same hue.
    hues = (np.asarray(hue) / N_HUES + rng.normal(0, hue_jitter, n)) % 1
    colour = _hsv_to_rgb(hues, rng.uniform(0.55, 1.0, n), rng.uniform(0.6, 1.0, n))[:, None, None, :]
    object_rgb = colour * (1 - 0.6 * ink[..., None])

    if background == "clutter":
        # Background: a random, mostly grey colour with a gradient and noise, plus a distractor blob.
        backdrop = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0, 0.35, n), rng.uniform(0.15, 0.85, n))
        gradient = (per_image(-0.25, 0.25) * x + per_image(-0.25, 0.25) * y)[..., None]
        image = backdrop[:, None, None, :] + gradient
    else:
        # Studio: a near-white, faintly tinted backdrop, lighter at the top, and the object's soft shadow
        # (its own shape, shifted down and sideways) darkening it.
        backdrop = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0, 0.12, n), rng.uniform(0.85, 1.0, n))
        gradient = (per_image(0.05, 0.15) * -y + per_image(-0.05, 0.05) * x)[..., None]
        shadow_dx, shadow_dy = per_image(-0.15, 0.15), per_image(0.08, 0.2)
        sx, sy = dx - shadow_dx / scale, dy - shadow_dy / scale
        shadow = _shape_mask(shape, np.cos(angle) * sx + np.sin(angle) * sy, -np.sin(angle) * sx + np.cos(angle) * sy)
        image = backdrop[:, None, None, :] + gradient - (0.3 * shadow)[..., None]

    def blob_over(image: np.ndarray, radius: tuple[float, float]) -> np.ndarray:
        blob_x, blob_y, blob_r = per_image(-0.8, 0.8), per_image(-0.8, 0.8), per_image(*radius)
        blob = ((x - blob_x) ** 2 + (y - blob_y) ** 2 < blob_r**2) & (rng.uniform(size=(n, 1, 1)) < 0.6)
        blob_rgb = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.3, 1, n), rng.uniform(0.3, 1, n))
        return np.where(blob[..., None], blob_rgb[:, None, None, :], image)

    for _ in range(distractors):
        image = blob_over(image, (0.1, 0.3))
    image = np.where(mask[..., None], object_rgb, image)
    for _ in range(occluders):
        image = blob_over(image, (0.1, 0.25))
    image = image + rng.normal(0, 0.05, size=image.shape)
    if supersample > 1:
        image = image.reshape(n, image_size, supersample, image_size, supersample, 3).mean(axis=(2, 4))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
