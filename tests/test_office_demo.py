"""The Office-Home-like demo data set: layout, sizes, colour-free classes, determinism; and the Mini-like demo
unchanged by the code the two share."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsl.data.decoded import decode_split
from fsl.data.demo import (
    N_HUES,
    OFFICE_CLASSES,
    SHAPES,
    TEXTURES,
    ensure_office_demo_dataset,
    office_class_label,
    office_demo_root,
    render_class,
    write_demo_dataset,
    write_office_demo_dataset,
)
from fsl.data.sources import detect_layout, read_split

SMALL = dict(image_size=16, n_classes=5, train_per_class=4, val_per_class=3)


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("office") / "office"
    write_office_demo_dataset(root, seed=0, **SMALL)
    return root


def _original_mini_labels(seed: int, n_classes: int) -> list[str]:
    """The Mini-like demo's class choice as write_demo_dataset made it before the combination helper."""
    rng = np.random.default_rng(seed)
    combos = [(s, h, t) for s in range(len(SHAPES)) for h in range(N_HUES) for t in range(len(TEXTURES))]
    chosen = rng.permutation(len(combos))[:n_classes]
    return [f"{SHAPES[combos[i][0]]}-hue{combos[i][1]}-{TEXTURES[combos[i][2]]}" for i in chosen]


def test_layout_and_columns(office: Path):
    assert sorted(p.name for p in office.iterdir()) == ["train", "train.csv", "val", "val.csv"]  # no val_testcase
    assert detect_layout(office) == "hw4"
    for split, per_class in (("train", 4), ("val", 3)):
        table = pd.read_csv(office / f"{split}.csv", dtype=str)
        assert list(table.columns) == ["id", "filename", "label"]
        assert len(table) == 5 * per_class
        assert table["label"].nunique() == 5
        assert (table["label"].value_counts() == per_class).all()
        assert sorted(table["filename"]) == sorted(p.name for p in (office / split).iterdir())
    train = pd.read_csv(office / "train.csv", dtype=str)
    val = pd.read_csv(office / "val.csv", dtype=str)
    assert set(val["label"]) <= set(train["label"])
    assert set(val["label"]) == set(train["label"])
    assert set(train["id"]).isdisjoint(val["id"])
    assert train["id"].is_unique and val["id"].is_unique


def test_labels_are_shape_and_texture_and_every_image_has_its_own_colour(office: Path, tmp_path: Path):
    labels = list(dict.fromkeys(pd.read_csv(office / "train.csv")["label"]))
    assert set(labels) <= {office_class_label(c) for c in OFFICE_CLASSES} and len(OFFICE_CLASSES) == 40
    assert all(len(label.split("-")) == 2 for label in labels)
    assert all(label.split("-")[0] in SHAPES and label.split("-")[1] in TEXTURES for label in labels)
    # Colour is not the class: images of one class differ in mean colour as much as images of different classes.
    train = decode_split(read_split(office, "train"), 16, tmp_path / "cache")
    colour = train.images.reshape(len(train), -1, 3).mean(axis=1)
    within = np.mean([colour[train.labels == c].std(axis=0).mean() for c in range(5)])
    overall = colour.std(axis=0).mean()
    assert within > 0.6 * overall


def test_loaders_read_it(office: Path, tmp_path: Path):
    for split, n in (("train", 20), ("val", 15)):
        source = read_split(office, split)
        assert len(source) == n and len(source.class_names) == 5
        decoded = decode_split(source, 16, tmp_path / "cache")
        assert decoded.images.shape == (n, 16, 16, 3) and decoded.images.dtype == np.uint8
        assert sorted(set(decoded.labels.tolist())) == list(range(5))


def test_the_office_classes_are_not_the_mini_demo_classes(tmp_path: Path):
    write_demo_dataset(
        tmp_path / "mini",
        seed=0,
        image_size=16,
        n_train_classes=4,
        n_val_classes=5,
        images_per_class=2,
        episodes={"n_way": 5, "k_shot": 1, "n_query": 1, "n_episodes": 2},
    )
    mini = set(pd.read_csv(tmp_path / "mini" / "train.csv")["label"])
    office = {office_class_label(c) for c in OFFICE_CLASSES}
    assert mini.isdisjoint(office)  # Mini-like classes name a hue, office classes never do
    with pytest.raises(ValueError, match="1 to 40 classes, 41 were asked for"):
        write_office_demo_dataset(tmp_path / "big", n_classes=41)


def test_mini_demo_writes_the_original_classes(tmp_path: Path):
    write_demo_dataset(
        tmp_path,
        seed=2,
        image_size=16,
        n_train_classes=4,
        n_val_classes=5,
        images_per_class=3,
        episodes={"n_way": 5, "k_shot": 1, "n_query": 1, "n_episodes": 2},
    )
    written = [*dict.fromkeys(pd.read_csv(tmp_path / "train.csv")["label"])]
    written += [*dict.fromkeys(pd.read_csv(tmp_path / "val.csv")["label"])]
    assert written == _original_mini_labels(2, 9)


def test_determinism(office: Path, tmp_path: Path):
    write_office_demo_dataset(tmp_path / "same", seed=0, **SMALL)
    write_office_demo_dataset(tmp_path / "other", seed=1, **SMALL)
    first_image = pd.read_csv(office / "train.csv")["filename"][0]
    for name in ("train.csv", "val.csv", f"train/{first_image}"):
        assert (office / name).read_bytes() == (tmp_path / "same" / name).read_bytes()
    assert (office / "train.csv").read_bytes() != (tmp_path / "other" / "train.csv").read_bytes()
    a = decode_split(read_split(office, "val"), 16, tmp_path / "cache")
    b = decode_split(read_split(tmp_path / "other", "val"), 16, tmp_path / "cache")
    assert not np.array_equal(a.images, b.images)


def test_studio_domain_differs_and_default_is_clutter():
    def draw(**kwargs):
        return render_class(1, 2, 3, 16, 16, np.random.default_rng(4), **kwargs)

    clutter, studio = draw(), draw(background="studio")
    assert np.array_equal(draw(background="clutter"), clutter)
    # The studio backdrop is bright: the corners (almost always backdrop) are much lighter than the clutter ones.
    corners = (slice(None), [0, 0, -1, -1], [0, -1, 0, -1])
    assert studio[corners].mean() > 190 > clutter[corners].mean() + 40
    with pytest.raises(ValueError, match="unknown background 'art'"):
        draw(background="art")


def test_ensure_is_cached_and_atomic(tmp_path: Path):
    root = ensure_office_demo_dataset(seed=2, cache_dir=tmp_path, **SMALL)
    assert root == office_demo_root(2, 16, tmp_path) == tmp_path / "demo" / "office-v3-seed2-16px"
    assert len(pd.read_csv(root / "train.csv")) == 20 and len(pd.read_csv(root / "val.csv")) == 15
    stamp = (root / "train.csv").stat().st_mtime_ns
    assert ensure_office_demo_dataset(seed=2, cache_dir=tmp_path, **SMALL) == root
    assert (root / "train.csv").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert [p.name for p in (tmp_path / "demo").iterdir()] == [root.name]  # no staging folder left behind
