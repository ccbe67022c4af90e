"""Full-size stand-ins for Mini-ImageNet and Office-Home, generated (nothing to download), in the HW4 layout.

They have the shapes users bring, so that costs measured on them (decode time, memory, time to the first epoch)
are the costs of the real data sets:

- Mini-ImageNet: 64 train / 16 val / 20 test classes of 600 images each (38,400 / 9,600 / 12,000) at 84 px, as
  JPEG files listed in {train,val,test}.csv, plus fixed 5-way 1-shot 15-query val_testcase.csv episodes.
- Office-Home: 65 classes, about 15,500 JPEG images of varied sizes (200 to 420 px a side, not square),
  {train,val}.csv split about 9 to 1 per class as HW4's office folders are.

The classes are the demo's (fsl.data.demo: shape, colour and texture on a cluttered or studio backdrop), drawn
harder: a wider spread of shade within a class, several distractor blobs behind the object and blobs in front
of it, so that a trained Conv4 stays well below 100% while an untrained one stays well above chance. Each class
is rendered from its own random stream of the seed, so the files do not depend on how many processes drew them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsl.data.decoded import default_cache_dir
from fsl.data.demo import (
    COMBOS,
    DEMO_EPISODES,
    N_HUES,
    SHAPES,
    TEXTURES,
    class_label,
    generate_once,
    render_class,
    write_val_episodes,
)

STANDIN_VERSION = 1
MINI_SPLITS = {"train": 64, "val": 16, "test": 20}
MINI_PER_CLASS, MINI_IMAGE_SIZE = 600, 84
OFFICE_CLASSES, OFFICE_IMAGES = 65, 15_500
OFFICE_SIDES = (200, 420)  # each image's width and height are drawn from this range
OFFICE_VAL_FRACTION = 0.1
JPEG_QUALITY = 90
LAST_FILE = {"mini": "val_testcase_gt.csv", "office": "val.csv"}  # what generation writes last
# Office classes: a shape, a texture and the texture's grain (coarse or fine; a solid fill has none), 72 in all;
# objects come in any colour.
GRAINS = {"coarse": (5.0, 8.0), "fine": (11.0, 15.0)}
OFFICE_KINDS = tuple(
    (s, t, g)
    for g in GRAINS
    for s in range(len(SHAPES))
    for t in range(len(TEXTURES))
    if TEXTURES[t] != "solid" or g == "coarse"
)
# What makes the stand-ins harder than the demo (see render_class).
HARDER = {"hue_jitter": 0.05, "distractors": 3, "occluders": 2}
_CHUNK = 100  # images rendered at once: bounds the renderer's float arrays to about 50 MB at 84 px


@dataclass(frozen=True)
class MiniClass:
    """A Mini-ImageNet stand-in class: the demo's (shape, hue, texture), drawn harder."""

    combo: tuple[int, int, int]
    image_size: int

    def images(self, count: int, rng: np.random.Generator) -> Iterator[Image.Image]:
        for start in range(0, count, _CHUNK):
            batch = render_class(*self.combo, min(_CHUNK, count - start), self.image_size, rng, supersample=1, **HARDER)
            yield from (Image.fromarray(image) for image in batch)


@dataclass(frozen=True)
class OfficeClass:
    """An Office-Home stand-in class: a (shape, texture, grain) in any colour on the studio backdrop."""

    kind: tuple[int, int, str]
    sides: tuple[int, int]

    def images(self, count: int, rng: np.random.Generator) -> Iterator[Image.Image]:
        # Drawn at a fixed 160 px (the renderer's cost grows with the square of the side) and resized to each
        # image's own size, as photos from many cameras come in many sizes.
        shape, texture, grain = self.kind
        for start in range(0, count, _CHUNK):
            n = min(_CHUNK, count - start)
            hues = rng.uniform(0, N_HUES, n)  # any colour: the class is the shape, texture and grain
            batch = render_class(
                shape, hues, texture, n, 160, rng, background="studio", supersample=1,
                texture_freq=GRAINS[grain], **HARDER,
            )  # fmt: skip
            widths, heights = rng.integers(self.sides[0], self.sides[1] + 1, size=(2, n))
            for image, w, h in zip(batch, widths, heights, strict=True):
                yield Image.fromarray(image).resize((int(w), int(h)), Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class ClassJob:
    """One class to render into folder/: its label, how many images, its own random stream and its look."""

    folder: Path
    label: str
    count: int
    stream: tuple[int, ...]
    look: MiniClass | OfficeClass


def standin_root(kind: str, seed: int = 0, cache_dir: Path | None = None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / "standins" / f"{kind}-v{STANDIN_VERSION}-seed{seed}"


def ensure_standin(
    kind: str, seed: int = 0, root: Path | None = None, cache_dir: Path | None = None, workers: int | None = None
) -> Path:
    """The full-size stand-in `kind` ("mini" or "office") in `root` (default: under the cache folder), generated
    on first use, atomically: a crash leaves nothing half-made, and a second call finds it made."""
    write = {"mini": write_mini_standin, "office": write_office_standin}[kind]
    return generate_once(
        root or standin_root(kind, seed, cache_dir), LAST_FILE[kind], lambda d: write(d, seed=seed, workers=workers)
    )


def write_mini_standin(
    root: Path,
    seed: int = 0,
    workers: int | None = None,
    splits: dict[str, int] | None = None,
    per_class: int = MINI_PER_CLASS,
    image_size: int = MINI_IMAGE_SIZE,
    episodes: dict[str, int] | None = None,
) -> None:
    """Write the Mini-ImageNet layout into `root`: {train,val,test}.csv, {train,val,test}/*.jpg and the fixed
    validation episodes val_testcase(_gt).csv. `splits` (classes per split), `per_class` and `image_size` make
    the small versions the tests use."""
    splits = splits or MINI_SPLITS
    n_classes = sum(splits.values())
    if n_classes > len(COMBOS):
        raise ValueError(f"the Mini-ImageNet stand-in has at most {len(COMBOS)} classes, {n_classes} were asked for")
    order = np.random.default_rng([seed, 2]).permutation(len(COMBOS))[:n_classes]

    jobs: dict[str, list[ClassJob]] = {}
    first = 0
    for split, count in splits.items():
        combos = [COMBOS[i] for i in order[first : first + count]]
        jobs[split] = [
            ClassJob(root / split, class_label(c), per_class, (seed, 2, first + i), MiniClass(c, image_size))
            for i, c in enumerate(combos)
        ]
        first += count
    _write_splits(root, jobs, workers)
    write_val_episodes(root, seed + 1, episodes or DEMO_EPISODES)


def write_office_standin(
    root: Path,
    seed: int = 0,
    n_classes: int = OFFICE_CLASSES,
    n_images: int = OFFICE_IMAGES,
    sides: tuple[int, int] = OFFICE_SIDES,
    workers: int | None = None,
) -> None:
    """Write the Office-Home layout into `root`: {train,val}.csv and {train,val}/*.jpg. Classes hold between
    0.6x and 1.4x the mean number of images (Office-Home's classes are uneven too); each class keeps about a
    tenth of its images, at least one, for val."""
    if not 2 <= n_classes <= len(OFFICE_KINDS):
        raise ValueError(f"the Office-Home stand-in has 2 to {len(OFFICE_KINDS)} classes, {n_classes} were asked for")
    rng = np.random.default_rng([seed, 3])
    kinds = [OFFICE_KINDS[i] for i in rng.permutation(len(OFFICE_KINDS))[:n_classes]]
    weights = rng.uniform(0.6, 1.4, n_classes)
    counts = np.maximum(2, np.round(weights / weights.sum() * n_images)).astype(int)
    val_counts = np.maximum(1, np.round(counts * OFFICE_VAL_FRACTION)).astype(int)

    train = [
        ClassJob(root / "train", office_label(k), int(c - v), (seed, 3, i), OfficeClass(k, sides))
        for i, (k, c, v) in enumerate(zip(kinds, counts, val_counts, strict=True))
    ]
    val = [
        ClassJob(root / "val", office_label(k), int(v), (seed, 4, i), OfficeClass(k, sides))
        for i, (k, v) in enumerate(zip(kinds, val_counts, strict=True))
    ]
    _write_splits(root, {"train": train, "val": val}, workers)


def office_label(kind: tuple[int, int, str]) -> str:
    shape, texture, grain = kind
    return f"{SHAPES[shape]}-solid" if TEXTURES[texture] == "solid" else f"{SHAPES[shape]}-{TEXTURES[texture]}-{grain}"


def _write_splits(root: Path, jobs: dict[str, list[ClassJob]], workers: int | None) -> None:
    """Render every class (in parallel processes) and list each split in root/<split>.csv; ids run on across
    the splits, as in HW4's files, so no two images share one."""
    for split in jobs:
        (root / split).mkdir(parents=True)
    everything = [job for split in jobs.values() for job in split]
    workers = workers or os.cpu_count() or 1
    if workers > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(everything))) as pool:
            filenames = list(pool.map(_render_class_job, everything))
    else:
        filenames = [_render_class_job(job) for job in everything]
    rows: dict[str, list[tuple[int, str, str]]] = {split: [] for split in jobs}
    ids = itertools.count()
    for job, names in zip(everything, filenames, strict=True):  # in split order, so ids run on across splits
        rows[job.folder.name] += [(next(ids), name, job.label) for name in names]
    for split, split_rows in rows.items():
        pd.DataFrame(split_rows, columns=["id", "filename", "label"]).to_csv(root / f"{split}.csv", index=False)


def _render_class_job(job: ClassJob) -> list[str]:
    """Render one class's images into its folder as JPEG files; their names, in order."""
    rng = np.random.default_rng(job.stream)
    names = []
    for i, image in enumerate(job.look.images(job.count, rng)):
        name = f"{job.label}_{i:04d}.jpg"
        image.save(job.folder / name, quality=JPEG_QUALITY)
        names.append(name)
    return names
