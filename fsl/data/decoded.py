"""Decode a split once into a uint8 array (N, H, W, 3) plus integer labels, cached on disk.

The cache key covers the list file's bytes, every image's path, size, modification time and inode change
time, and the image size, so an edited CSV, a replaced image or another `--image-size` never reuses a stale
array. The change time (ctime) is what catches an image rewritten with the same size whose modification time
was put back (`touch -r`, `os.utime`, a copy that preserves times): the kernel sets it to the current time
on every write and on every utime call, and nothing can set it back. It costs nothing (the same stat call);
its price is a rebuild after changes that leave the pixels alone (chmod, chown, a fresh copy of the data).
Hashing every image's bytes instead would read the whole data set at every start.

Each cache file holds a SHA-256 of its arrays. A file that cannot be read (truncated, not a zip), whose
arrays do not match that checksum or the split's list, is reported on stderr with its path and rebuilt,
never used. Trials never decode: the study puts the decoded arrays in the Ray object store once.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsl.data.sources import SplitSource

CACHE_FORMAT = 2  # 2: ctime in the key, a checksum in the file


@dataclass(frozen=True)
class DecodedSplit:
    """A split held in memory: images (N, H, W, 3) uint8, labels (N,) int64 class indices."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def labels_in(self, class_names: tuple[str, ...], listed_in: str) -> np.ndarray:
        """This split's labels as indices into another split's classes (val scored by a train-split
        classifier); a class the other split lacks is an error naming it and where it is listed."""
        index = {name: i for i, name in enumerate(class_names)}
        unknown = [name for name in self.class_names if name not in index]
        if unknown:
            raise ValueError(
                f"{listed_in}: label {unknown[0]!r} is not a class of the training split"
                + (f" ({len(unknown)} such labels)" if len(unknown) > 1 else "")
            )
        return np.array([index[name] for name in self.class_names], dtype=np.int64)[self.labels]


def default_cache_dir() -> Path:
    """$FSL_CACHE_DIR, else $XDG_CACHE_HOME/fsl, else ~/.cache/fsl."""
    if os.environ.get("FSL_CACHE_DIR"):
        return Path(os.environ["FSL_CACHE_DIR"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "fsl").resolve()


def cache_key(source: SplitSource, image_size: int) -> str:
    digest = hashlib.sha256(f"format={CACHE_FORMAT};size={image_size};split={source.name}".encode())
    if source.listed_in.is_file():
        digest.update(source.listed_in.read_bytes())
    for image_id, path, label in zip(source.ids, source.paths, source.labels, strict=True):
        stat = path.stat()
        digest.update(f"{image_id}\0{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\n".encode())
    return digest.hexdigest()[:20]


def load_image(path: Path, image_size: int, listed_in: Path | None = None, row: int | None = None) -> np.ndarray:
    """Any mode (grayscale, RGBA, palette) and any size becomes RGB image_size x image_size uint8."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        where = f"{listed_in}: row {row}: " if listed_in is not None and row is not None else ""
        raise ValueError(f"{where}image {path} cannot be read ({err})") from None


def decode_split(source: SplitSource, image_size: int, cache_dir: Path | None = None) -> DecodedSplit:
    """Decode every image of the split (or load the cached array) into one DecodedSplit."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache_dir / "decoded" / f"{source.name}-{image_size}px-{cache_key(source, image_size)}.npz"
    class_names = source.class_names
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[label] for label in source.labels], dtype=np.int64)
    if cache_file.is_file():
        try:
            return _read_cache(cache_file, source, labels, image_size)
        except ValueError as err:
            print(
                f"warning: decoded cache {cache_file} is unusable ({err}); decoding the {source.name} split again",
                file=sys.stderr,
                flush=True,
            )
    # The CSV row of image i is i + 2 (one header line, rows counted from 1).
    rows = range(2, len(source) + 2) if source.listed_in.is_file() else [None] * len(source)
    listed_in = source.listed_in if source.listed_in.is_file() else None
    images = np.empty((len(source), image_size, image_size, 3), dtype=np.uint8)

    def decode_one(i: int) -> None:
        images[i] = load_image(source.paths[i], image_size, listed_in, rows[i])

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        # list() re-raises the first decoding error in file order.
        list(pool.map(decode_one, range(len(source))))
    decoded = DecodedSplit(source.name, images, labels, class_names, source.ids)
    _write_cache(cache_file, decoded)
    return decoded


def array_checksum(split: DecodedSplit) -> str:
    """SHA-256 of a split's arrays and names, as stored in its cache file."""
    digest = hashlib.sha256(
        f"{split.images.dtype}{split.images.shape};{split.labels.dtype}{split.labels.shape}".encode()
    )
    digest.update(np.ascontiguousarray(split.images).data)
    digest.update(np.ascontiguousarray(split.labels).data)
    digest.update("\0".join([split.name, *split.class_names, "", *split.ids]).encode())
    return digest.hexdigest()


def _read_cache(path: Path, source: SplitSource, labels: np.ndarray, image_size: int) -> DecodedSplit:
    """The cached split, checked against its checksum and the split's list; ValueError says what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {key: data[key] for key in ("name", "images", "labels", "class_names", "ids", "checksum")}
    except Exception as err:  # a damaged file fails in many ways (BadZipFile, EOFError, KeyError, ...)
        raise ValueError(f"cannot be read: {type(err).__name__}: {err}") from None
    split = DecodedSplit(
        name=str(stored["name"]),
        images=stored["images"],
        labels=stored["labels"],
        class_names=tuple(str(c) for c in stored["class_names"]),
        ids=tuple(str(i) for i in stored["ids"]),
    )
    if str(stored["checksum"]) != array_checksum(split):
        raise ValueError("its arrays do not match the checksum written with them")
    expected = (len(source), image_size, image_size, 3)
    if split.images.shape != expected or split.images.dtype != np.uint8:
        raise ValueError(f"images are {split.images.dtype} {split.images.shape}, expected uint8 {expected}")
    same_names = split.ids == tuple(map(str, source.ids)) and split.class_names == tuple(map(str, source.class_names))
    if not same_names or not np.array_equal(split.labels, labels):
        raise ValueError(f"its ids, classes or labels differ from those of {source.listed_in}")
    return split


def _write_cache(path: Path, split: DecodedSplit) -> None:
    """Write to a temporary file and rename, so a crash never leaves a half-written cache behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(
                out,
                name=np.array(split.name),
                images=split.images,
                labels=split.labels,
                class_names=np.array(split.class_names),
                ids=np.array(split.ids),
                checksum=np.array(array_checksum(split)),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
