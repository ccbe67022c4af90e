"""The full-size stand-ins (fsl/data/standins.py) in small versions: the HW4 layout the loaders read, the
class and image counts asked for, Office-Home's varied image sizes, and the same files whatever the number of
processes that drew them. Plus studies/make_data.py's usage errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fsl.data.sources import read_split
from fsl.data.standins import OFFICE_KINDS, ensure_standin, office_label, write_mini_standin, write_office_standin
from fsl.data.study_data import EpisodeShape, load_study_data

SPLITS = {"train": 3, "val": 5, "test": 2}
EPISODES = {"n_way": 5, "k_shot": 1, "n_query": 3, "n_episodes": 10}


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_mini_standin_has_the_hw4_layout_and_the_counts_asked_for(tmp_path: Path):
    root = tmp_path / "mini"
    write_mini_standin(root, splits=SPLITS, per_class=20, image_size=24, episodes=EPISODES, workers=1)
    ids = []
    for split, classes in SPLITS.items():
        table = pd.read_csv(root / f"{split}.csv", dtype=str)
        assert list(table.columns) == ["id", "filename", "label"]
        assert table["label"].nunique() == classes and len(table) == classes * 20
        assert all(name.endswith(".jpg") for name in table["filename"])
        ids += list(table["id"])
        with Image.open(root / split / table["filename"][0]) as image:
            assert image.format == "JPEG" and image.size == (24, 24)
    assert len(set(ids)) == len(ids)  # ids run on across the splits
    labels = [set(pd.read_csv(root / f"{split}.csv")["label"]) for split in SPLITS]
    assert not (labels[0] & labels[1] or labels[0] & labels[2] or labels[1] & labels[2])  # disjoint classes

    data = load_study_data(root, 24, EpisodeShape(5, 1, 3), 3, 10, 0, cache_dir=tmp_path / "cache")
    assert data.train.images.shape == (60, 24, 24, 3) and data.val.images.shape == (100, 24, 24, 3)
    assert len(data.val_episodes.support) == 10  # the fixed episodes of val_testcase.csv
    # Images of one class differ (position, shade, clutter), and classes differ on average.
    images = data.train.images.astype(np.float32)
    first, second = images[data.train.labels == 0], images[data.train.labels == 1]
    assert np.abs(first[0] - first[1]).mean() > 10
    assert np.abs(first.mean(0) - second.mean(0)).mean() > 1


def test_the_same_seed_gives_the_same_files_from_one_process_or_two(tmp_path: Path):
    small = {"splits": {"train": 2, "val": 5, "test": 1}, "per_class": 4, "image_size": 16, "episodes": EPISODES}
    write_mini_standin(tmp_path / "one", workers=1, **small)
    write_mini_standin(tmp_path / "two", workers=2, **small)
    write_mini_standin(tmp_path / "other", seed=1, workers=2, **small)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert _digest(tmp_path / "one") != _digest(tmp_path / "other")


def test_office_standin_has_uneven_classes_of_varied_image_sizes(tmp_path: Path):
    root = tmp_path / "office"
    write_office_standin(root, n_classes=6, n_images=240, sides=(40, 72), workers=2)
    train, val = read_split(root, "train"), read_split(root, "val")
    assert set(train.class_names) == set(val.class_names) and len(train.class_names) == 6
    assert len(train) + len(val) == pytest.approx(240, abs=6)
    per_class = pd.Series(train.labels).value_counts()
    assert per_class.max() > per_class.min()  # uneven, as Office-Home's classes are
    assert pd.Series(val.labels).value_counts().min() >= 1
    sizes = set()
    for path in train.paths[:30]:
        with Image.open(path) as image:
            assert image.format == "JPEG"
            sizes.add(image.size)
    assert all(40 <= w <= 72 and 40 <= h <= 72 for w, h in sizes) and len(sizes) > 10
    assert not set(train.ids) & set(val.ids)


def test_office_classes_are_distinct_and_a_solid_fill_has_no_grain():
    labels = [office_label(kind) for kind in OFFICE_KINDS]
    assert len(set(labels)) == len(labels) == 72 >= 65
    assert "circle-solid" in labels and not any(label.startswith("circle-solid-") for label in labels)


def test_too_many_classes_is_refused_with_the_limit(tmp_path: Path):
    with pytest.raises(ValueError, match="the Office-Home stand-in has 2 to 72 classes, 80 were asked for"):
        write_office_standin(tmp_path / "office", n_classes=80)
    with pytest.raises(ValueError, match="at most 320 classes, 400 were asked for"):
        write_mini_standin(tmp_path / "mini", splits={"train": 400})
    assert not (tmp_path / "office").exists() and not (tmp_path / "mini").exists()


def test_ensure_makes_a_stand_in_once_and_finds_it_after(tmp_path: Path, monkeypatch):
    import fsl.data.standins as standins

    calls = []

    def small(root: Path, seed: int, workers: int | None) -> None:
        calls.append(root)
        write_office_standin(root, seed, n_classes=3, n_images=12, sides=(20, 24), workers=workers)

    monkeypatch.setattr(standins, "write_office_standin", small)
    first = ensure_standin("office", root=tmp_path / "office", workers=1)
    again = ensure_standin("office", root=tmp_path / "office", workers=1)
    assert first == again == tmp_path / "office" and len(calls) == 1
    assert (first / "val.csv").is_file() and not list(tmp_path.glob(".office-*"))  # no staging folder left


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kind", "imagenet"], "error: --kind imagenet: expected mini, office or mini,office"),
        (["--workers", "0"], "error: --workers 0: expected at least 1"),
    ],
)
def test_make_data_usage_errors_are_one_line(argv: list[str], message: str, capsys):
    from fsl.commands.make_data import main

    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message


def test_make_data_refuses_an_existing_out_folder(tmp_path: Path, capsys):
    from fsl.commands.make_data import main

    (tmp_path / "office").mkdir()
    assert main(["--full-size", "--kind", "office", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --out {tmp_path}: {tmp_path / 'office'} already exists; remove it or choose another folder"
