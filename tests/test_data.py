"""Reading the HW4 layout and ImageFolder trees, decoding with the on-disk cache, episodes, augmentation."""

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import rewrite_visibly
from PIL import Image

from fsl.data.augment import augment, color_jitter, parse_policy, random_flip, random_resized_crop
from fsl.data.decoded import decode_split
from fsl.data.demo import write_demo_dataset
from fsl.data.episodes import (
    EpisodeSampler,
    check_episode_fits,
    draw_fixed_episodes,
    read_fixed_episodes,
    write_fixed_episodes,
    write_predictions_csv,
)
from fsl.data.sources import detect_layout, read_hw4_split, read_image_folder_split, read_split
from fsl.data.study_data import EpisodeShape, load_study_data

# --- sources ----------------------------------------------------------------------------------------------


def test_hw4_reader_on_a_tiny_tree(tiny_hw4: Path):
    assert detect_layout(tiny_hw4) == "hw4"
    train = read_hw4_split(tiny_hw4, "train")
    table = pd.read_csv(tiny_hw4 / "train.csv", dtype=str)
    assert len(train) == 8 * 20 == len(table)
    assert train.ids == tuple(table["id"])
    assert train.paths[0] == tiny_hw4 / "train" / table["filename"][0]
    assert train.class_names == tuple(dict.fromkeys(table["label"]))
    assert len(train.class_names) == 8


def test_image_folder_reader(tmp_path: Path):
    for cls in ("b_cat", "a_dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(tmp_path / "train" / cls / f"{i}.png")
    (tmp_path / "train" / "a_dog" / "notes.txt").write_text("not an image")
    assert detect_layout(tmp_path) == "imagefolder"
    split = read_image_folder_split(tmp_path, "train")
    assert split.class_names == ("a_dog", "b_cat")
    assert split.ids[:2] == ("a_dog/0.png", "a_dog/1.png")
    assert len(split) == 6


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "train.csv").unlink(), r"(train/|train\.csv)"),
        (
            lambda root: _rewrite(root / "train.csv", lambda t: t.drop(columns=["label"])),
            r"train\.csv: missing column\(s\) label",
        ),
        (
            lambda root: _rewrite(root / "train.csv", lambda t: t.rename(columns={"filename": "file"})),
            r"train\.csv: missing column\(s\) filename",
        ),
        (
            lambda root: _rewrite(root / "train.csv", lambda t: pd.concat([t, t.iloc[[3]]])),
            r"train\.csv: row 162: duplicate id '3'",
        ),
        (lambda root: _rewrite(root / "train.csv", lambda t: t.iloc[:0]), r"train\.csv: the split is empty"),
        (
            lambda root: (root / "train" / pd.read_csv(root / "train.csv")["filename"][4]).unlink(),
            r"train\.csv: row 6: image file .* not found",
        ),
    ],
)
def test_hw4_reader_errors_name_the_file_and_row(tiny_hw4: Path, damage, message):
    damage(tiny_hw4)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_split(tiny_hw4, "train")


def _rewrite(path: Path, change) -> None:
    change(pd.read_csv(path, dtype=str)).to_csv(path, index=False)


def test_layout_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        detect_layout(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="expected the HW4 layout"):
        detect_layout(tmp_path)


# --- decoding and its cache --------------------------------------------------------------------------------


def test_decode_converts_modes_and_sizes(tmp_path: Path):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    images = {
        "gray.png": Image.new("L", (30, 30), 128),
        "rgba.png": Image.new("RGBA", (16, 16), (255, 0, 0, 100)),
        "palette.gif": Image.new("P", (10, 40), 3),
        "big.jpg": Image.new("RGB", (100, 80), (0, 0, 255)),
    }
    for name, image in images.items():
        image.save(root / "train" / name)
    pd.DataFrame({"id": range(4), "filename": list(images), "label": ["a", "a", "b", "b"]}).to_csv(
        root / "train.csv", index=False
    )
    split = decode_split(read_hw4_split(root, "train"), 16, tmp_path / "cache")
    assert split.images.shape == (4, 16, 16, 3) and split.images.dtype == np.uint8
    assert split.labels.tolist() == [0, 0, 1, 1]
    assert (split.images[0] == 128).all()
    assert tuple(split.images[1, 0, 0]) == (255, 0, 0)
    assert split.images[3, :, :, 2].min() > 200


def test_unreadable_image_names_file_and_row(tiny_hw4: Path, tmp_path: Path):
    name = pd.read_csv(tiny_hw4 / "val.csv")["filename"][7]
    (tiny_hw4 / "val" / name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=rf"val\.csv: row 9: image .*{name} cannot be read"):
        decode_split(read_split(tiny_hw4, "val"), 16, tmp_path / "cache")


def test_decoded_cache_is_reused_and_invalidated(tiny_hw4: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    first = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    files = list((cache / "decoded").glob("*.npz"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    assert np.array_equal(first.images, again.images)
    assert files[0].stat().st_mtime_ns == stamp  # read, not rewritten

    # Another image size is another cache entry.
    decode_split(read_split(tiny_hw4, "val"), 20, cache)
    assert len(list((cache / "decoded").glob("*.npz"))) == 2

    # An image changed after caching: detected, decoded again.
    name = pd.read_csv(tiny_hw4 / "val.csv")["filename"][0]
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(png, format="PNG")
    rewrite_visibly(tiny_hw4 / "val" / name, png.getvalue())
    changed = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    assert tuple(changed.images[0, 0, 0]) == (1, 2, 3)


def test_truncated_cache_file_is_rebuilt(tiny_hw4: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    first = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    (path,) = (cache / "decoded").glob("*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    rebuilt = decode_split(read_split(tiny_hw4, "val"), 16, cache)
    assert np.array_equal(first.images, rebuilt.images)
    assert path.stat().st_size > 1000


# --- episodes ---------------------------------------------------------------------------------------------


def test_sampler_episodes_have_the_right_shape_distinct_classes_and_no_overlap():
    labels = np.repeat(np.arange(10), 12)
    sampler = EpisodeSampler(labels, n_way=6, k_shot=2, n_query=3)
    rng = np.random.default_rng(0)
    for _ in range(50):
        ep = sampler.sample(rng)
        assert ep.support.shape == (12,) and ep.query.shape == (18,)
        support_classes = labels[ep.support].reshape(6, 2)
        assert (support_classes == support_classes[:, :1]).all()  # grouped by class
        assert len(set(support_classes[:, 0])) == 6  # distinct classes
        assert not set(ep.support) & set(ep.query)  # no support/query overlap
        assert len(set(ep.query)) == 18
        # each query's way index points at the support group of its own class
        assert (labels[ep.query] == support_classes[ep.query_labels, 0]).all()
        assert ep.support_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_training_way_may_differ_from_test_way():
    labels = np.repeat(np.arange(30), 16)
    assert EpisodeSampler(labels, 30, 1, 15).sample(np.random.default_rng(0)).support.shape == (30,)
    assert EpisodeSampler(labels, 5, 1, 15).sample(np.random.default_rng(0)).support.shape == (5,)


def test_episode_fit_errors():
    labels = np.repeat(np.arange(4), [10, 10, 10, 3])
    names = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="5-way episodes need 5 classes, the split has 4"):
        check_episode_fits(labels, names, 5, 1, 1, "val.csv")
    with pytest.raises(ValueError, match="val.csv: class 'd' has 3 images, fewer than k_shot \\+ n_query = 1 \\+ 5"):
        check_episode_fits(labels, names, 4, 1, 5, "val.csv")
    check_episode_fits(labels, names, 4, 1, 2, "val.csv")  # fits: no error


def test_fixed_episodes_round_trip_through_the_hw4_format(tmp_path: Path):
    labels = np.repeat(np.arange(6), 10)
    ids = [f"img{i}" for i in range(60)]
    drawn = draw_fixed_episodes(labels, n_way=3, k_shot=2, n_query=4, n_episodes=7, seed=3)
    write_fixed_episodes(drawn, ids, tmp_path / "case.csv", tmp_path / "gt.csv")
    header = (tmp_path / "case.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["episode_id", "class0_support0", "class0_support1"]
    assert header[7] == "query0" and len(header) == 1 + 6 + 12
    read = read_fixed_episodes(tmp_path / "case.csv", tmp_path / "gt.csv", {k: i for i, k in enumerate(ids)}, labels)
    assert (read.n_way, read.k_shot, read.n_query, len(read)) == (3, 2, 4, 7)
    assert np.array_equal(read.support, drawn.support) and np.array_equal(read.query, drawn.query)
    assert np.array_equal(read.query_labels, drawn.query_labels)
    # Without a ground-truth file the labels come from the split.
    no_gt = read_fixed_episodes(tmp_path / "case.csv", None, {k: i for i, k in enumerate(ids)}, labels)
    assert np.array_equal(no_gt.query_labels, drawn.query_labels)


def test_support_columns_are_found_by_position_not_name(tmp_path: Path):
    labels = np.repeat(np.arange(5), 4)
    ids = [str(i) for i in range(20)]
    drawn = draw_fixed_episodes(labels, 5, 1, 2, 4, seed=0)
    write_fixed_episodes(drawn, ids, tmp_path / "case.csv", tmp_path / "gt.csv")
    table = pd.read_csv(tmp_path / "case.csv", dtype=str)
    table.columns = ["episode_id"] + [f"s{i}" for i in range(5)] + [c for c in table.columns if c.startswith("query")]
    table.to_csv(tmp_path / "case.csv", index=False)
    read = read_fixed_episodes(tmp_path / "case.csv", tmp_path / "gt.csv", {k: i for i, k in enumerate(ids)}, labels)
    assert np.array_equal(read.support, drawn.support)


def _episode_files(tmp_path: Path):
    labels = np.repeat(np.arange(5), 4)
    ids = [str(i) for i in range(20)]
    drawn = draw_fixed_episodes(labels, 5, 1, 2, 4, seed=0)
    write_fixed_episodes(drawn, ids, tmp_path / "case.csv", tmp_path / "gt.csv")
    return labels, {k: i for i, k in enumerate(ids)}


@pytest.mark.parametrize(
    ("change_case", "change_gt", "message"),
    [
        (
            lambda t: t.replace({"class2_support0": {t["class2_support0"][1]: "999"}}),
            None,
            r"case\.csv: row 3, column 'class2_support0': id '999' is not in the split",
        ),
        (None, lambda t: t.iloc[:3], r"gt\.csv: episodes do not match the test-case file \(episode '3'"),
        (None, lambda t: t.drop(columns=["query9"]), r"gt\.csv: 9 query columns, the test-case file has 10"),
        (None, lambda t: t.assign(query0="7"), r"gt\.csv: row 2, column 'query0': way index 7 is not in 0..4"),
        (lambda t: t.rename(columns={"episode_id": "episode"}), None, r"first column must be 'episode_id'"),
    ],
)
def test_fixed_episode_errors(tmp_path: Path, change_case, change_gt, message):
    labels, id_to_row = _episode_files(tmp_path)
    if change_case:
        _rewrite(tmp_path / "case.csv", change_case)
    if change_gt:
        _rewrite(tmp_path / "gt.csv", change_gt)
    with pytest.raises(ValueError, match=message):
        read_fixed_episodes(tmp_path / "case.csv", tmp_path / "gt.csv", id_to_row, labels)


def test_predictions_csv_has_the_ground_truth_format(tmp_path: Path):
    write_predictions_csv(("0", "1"), np.array([[0, 1, 2], [2, 2, 0]]), tmp_path / "pred.csv")
    assert (tmp_path / "pred.csv").read_text().splitlines() == ["episode_id,query0,query1,query2", "0,0,1,2", "1,2,2,0"]


def test_study_data_uses_the_hw4_episodes_or_draws_and_saves_matching_ones(tiny_hw4: Path, tmp_path: Path):
    data = load_study_data(tiny_hw4, 16, EpisodeShape(5, 1, 5), 5, 30, seed=0, cache_dir=tmp_path)
    assert data.episodes_file == tiny_hw4 / "val_testcase.csv" and len(data.val_episodes) == 30
    other = load_study_data(tiny_hw4, 16, EpisodeShape(3, 2, 4), 5, 12, seed=0, cache_dir=tmp_path)
    assert other.episodes_file.parent == tmp_path / "episodes"
    assert (other.val_episodes.n_way, other.val_episodes.k_shot, len(other.val_episodes)) == (3, 2, 12)
    again = load_study_data(tiny_hw4, 16, EpisodeShape(3, 2, 4), 5, 12, seed=0, cache_dir=tmp_path)
    assert np.array_equal(again.val_episodes.support, other.val_episodes.support)


# --- demo data --------------------------------------------------------------------------------------------


def test_demo_data_is_deterministic_and_in_the_hw4_layout(tmp_path: Path):
    kwargs = dict(
        seed=5,
        image_size=16,
        n_train_classes=4,
        n_val_classes=5,
        images_per_class=16,
        episodes={"n_way": 5, "k_shot": 1, "n_query": 3, "n_episodes": 4},
    )
    write_demo_dataset(tmp_path / "a", **kwargs)
    write_demo_dataset(tmp_path / "b", **kwargs)
    for name in ("train.csv", "val.csv", "val_testcase.csv", "val_testcase_gt.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    a = decode_split(read_split(tmp_path / "a", "train"), 16, tmp_path / "cache")
    b = decode_split(read_split(tmp_path / "b", "train"), 16, tmp_path / "cache2")
    assert np.array_equal(a.images, b.images)
    train_labels = set(pd.read_csv(tmp_path / "a" / "train.csv")["label"])
    assert train_labels.isdisjoint(pd.read_csv(tmp_path / "a" / "val.csv")["label"])  # novel classes in val
    # Images of one class vary (position, colour shade, background), so the task is not a lookup.
    first_class = a.images[a.labels == 0].astype(float)
    assert first_class.std(axis=0).mean() > 20


# --- augmentation -----------------------------------------------------------------------------------------


def test_policy_names():
    assert parse_policy("none") == ()
    assert parse_policy("flip+crop+color") == ("flip", "crop", "color")
    with pytest.raises(ValueError, match="unknown augmentation 'blur'"):
        parse_policy("flip+blur")


def _asymmetric_batch(n: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 3, 8, 8)
    x[:, 0, :, :4] = 1.0  # left half red
    x[:, 1, 2:5, :] = torch.linspace(0, 1, 8)
    return x


@pytest.mark.parametrize("transform", [random_flip, random_resized_crop, color_jitter])
def test_augmentations_draw_parameters_per_sample(transform):
    x = _asymmetric_batch()
    out = transform(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    distinct = {tuple(img.flatten().round(decimals=4).tolist()) for img in out}
    assert len(distinct) > 1  # identical inputs, different outputs: parameters were drawn per image


def test_augment_none_is_identity_and_combinations_compose():
    x = _asymmetric_batch()
    assert torch.equal(augment(x, "none", torch.Generator()), x)
    out = augment(x, "flip+crop+color", torch.Generator().manual_seed(1))
    assert out.shape == x.shape


def test_fixture_files_exist(tiny_hw4: Path):
    assert {p.name for p in tiny_hw4.iterdir()} >= {"train.csv", "val.csv", "val_testcase.csv", "val_testcase_gt.csv"}
    assert os.environ["FSL_CACHE_DIR"]
