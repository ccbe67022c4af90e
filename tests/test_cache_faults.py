"""The decoded-data cache, damaged or stale: a truncated file, flipped bytes in its image array, arrays that no
longer match their checksum, and an image rewritten after caching (also with its size and modification time
kept) are all detected, and the split is decoded again, never served from the bad cache."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import rewrite_visibly
from PIL import Image

from fsl.data.decoded import DecodedSplit, decode_split
from fsl.data.sources import read_split


def _cached(tiny_hw4: Path, cache: Path) -> tuple[DecodedSplit, Path]:
    split = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    (path,) = (cache / "decoded").glob("*.npz")
    return split, path


def _assert_rebuilt(tiny_hw4: Path, cache: Path, path: Path, capsys: pytest.CaptureFixture, why: str) -> None:
    """Decoding again warns once, naming the file and why, returns a fresh decode and rewrites the cache."""
    capsys.readouterr()
    rebuilt = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    fresh = decode_split(read_split(tiny_hw4, "val"), 16, cache.parent / "fresh-cache")
    assert np.array_equal(rebuilt.images, fresh.images) and np.array_equal(rebuilt.labels, fresh.labels)
    assert rebuilt.ids == fresh.ids and rebuilt.class_names == fresh.class_names
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: decoded cache {path} is unusable (") and why in line, line
    assert line.endswith("decoding the val split again")
    # The rewritten file is whole again: the next decode reads it without a word.
    again = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    assert np.array_equal(again.images, fresh.images) and capsys.readouterr().err == ""


def test_a_truncated_cache_file_is_rebuilt(tiny_hw4: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    cache = tmp_path / "cache"
    _, path = _cached(tiny_hw4, cache)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_rebuilt(tiny_hw4, cache, path, capsys, "cannot be read")
    assert path.stat().st_size == len(data)


def test_flipped_bytes_in_the_image_array_are_detected(tiny_hw4: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    cache = tmp_path / "cache"
    split, path = _cached(tiny_hw4, cache)
    data = bytearray(path.read_bytes())
    start = data.find(split.images.tobytes()[:512])  # np.savez stores the array uncompressed
    assert start > 0
    for offset in (split.images.nbytes // 2, split.images.nbytes // 2 + 1):
        data[start + offset] ^= 0xFF
    path.write_bytes(bytes(data))
    _assert_rebuilt(tiny_hw4, cache, path, capsys, "cannot be read: BadZipFile: Bad CRC-32 for file 'images.npy'")


def _rezip(path: Path, **changes: np.ndarray) -> None:
    """Rewrite the cache file with some arrays changed (or removed, when None) as a sound zip archive."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # the archive itself is sound: only the checksum can tell


def test_arrays_that_do_not_match_their_checksum_are_rebuilt(
    tiny_hw4: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    cache = tmp_path / "cache"
    split, path = _cached(tiny_hw4, cache)
    images = split.images.copy()
    images[3, 5, 5] ^= 0x01  # one bit of one pixel
    _rezip(path, images=images)
    _assert_rebuilt(tiny_hw4, cache, path, capsys, "do not match the checksum")


def test_a_cache_file_without_its_checksum_is_rebuilt(tiny_hw4: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    cache = tmp_path / "cache"
    _, path = _cached(tiny_hw4, cache)
    _rezip(path, checksum=None)
    _assert_rebuilt(tiny_hw4, cache, path, capsys, "checksum is not a file in the archive")


def _bmp(colour: tuple[int, int, int]) -> bytes:
    """A 16x16 BMP: uncompressed, so every colour gives a file of the same size."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="BMP")
    return buffer.getvalue()


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["new-mtime", "same-size-and-mtime"])
def test_an_image_changed_after_caching_is_decoded_anew(
    tiny_hw4: Path, tmp_path: Path, capsys: pytest.CaptureFixture, keep_mtime: bool
):
    cache = tmp_path / "cache"
    image = tiny_hw4 / "val" / pd.read_csv(tiny_hw4 / "val.csv")["filename"][0]
    image.write_bytes(_bmp((10, 20, 30)))  # Pillow reads an image by its content, whatever its name says
    first = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    assert tuple(first.images[0, 0, 0]) == (10, 20, 30)
    before = image.stat()

    rewrite_visibly(image, _bmp((200, 100, 50)))
    if keep_mtime:
        os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = image.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)  # what make/rsync compare

    changed = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    assert tuple(changed.images[0, 0, 0]) == (200, 100, 50)
    assert np.array_equal(changed.images[1:], first.images[1:])
    assert len(list((cache / "decoded").glob("*.npz"))) == 2  # a new cache entry; the old one is never read
    assert capsys.readouterr().err == ""
