"""Everything a study reads from disk, loaded and checked once before any trial starts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fsl.data.decoded import DecodedSplit, decode_split, default_cache_dir
from fsl.data.episodes import (
    FixedEpisodes,
    check_episode_fits,
    draw_fixed_episodes,
    read_fixed_episodes,
    write_fixed_episodes,
)
from fsl.data.sources import read_split


@dataclass(frozen=True)
class EpisodeShape:
    n_way: int
    k_shot: int
    n_query: int

    def __str__(self) -> str:
        return f"{self.n_way}-way {self.k_shot}-shot {self.n_query}-query"


@dataclass(frozen=True)
class StudyData:
    root: Path
    train: DecodedSplit
    val: DecodedSplit
    val_episodes: FixedEpisodes
    episodes_file: Path  # where the fixed episodes came from (or were saved)


def load_study_data(
    root: Path,
    image_size: int,
    eval_shape: EpisodeShape,
    max_train_way: int,
    n_eval_episodes: int,
    seed: int,
    cache_dir: Path | None = None,
) -> StudyData:
    """Decode both splits (cached), check that the requested episodes fit, and get the fixed val episodes.

    The HW4 `val_testcase.csv` is used when its episodes have the requested shape; otherwise (and for an
    ImageFolder tree) episodes are drawn once from the seed and saved in the same CSV format.
    """
    root = Path(root).resolve()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    train_source, val_source = read_split(root, "train"), read_split(root, "val")
    train = decode_split(train_source, image_size, cache_dir)
    val = decode_split(val_source, image_size, cache_dir)
    where = str(train_source.listed_in)
    check_episode_fits(train.labels, train.class_names, max_train_way, eval_shape.k_shot, eval_shape.n_query, where)
    check_episode_fits(
        val.labels, val.class_names, eval_shape.n_way, eval_shape.k_shot, eval_shape.n_query, str(val_source.listed_in)
    )

    testcase, gt = root / "val_testcase.csv", root / "val_testcase_gt.csv"
    id_to_row = {image_id: i for i, image_id in enumerate(val.ids)}
    if testcase.is_file():
        episodes = read_fixed_episodes(testcase, gt if gt.is_file() else None, id_to_row, val.labels)
        shape = EpisodeShape(episodes.n_way, episodes.k_shot, episodes.n_query)
        if shape == eval_shape:
            return StudyData(root, train, val, episodes.head(n_eval_episodes), testcase)

    # Keyed by the split's ids and labels, so episodes are redrawn when the split changes.
    key = hashlib.sha256(repr((val.ids, val.labels.tolist())).encode()).hexdigest()[:12]
    name = f"val-{key}-{eval_shape.n_way}way{eval_shape.k_shot}shot{eval_shape.n_query}query-seed{seed}"
    saved, saved_gt = cache_dir / "episodes" / f"{name}.csv", cache_dir / "episodes" / f"{name}_gt.csv"
    if saved.is_file() and saved_gt.is_file():
        episodes = read_fixed_episodes(saved, saved_gt, id_to_row, val.labels)
        if len(episodes) >= n_eval_episodes:
            return StudyData(root, train, val, episodes.head(n_eval_episodes), saved)
    episodes = draw_fixed_episodes(
        val.labels, eval_shape.n_way, eval_shape.k_shot, eval_shape.n_query, n_eval_episodes, seed
    )
    write_fixed_episodes(episodes, val.ids, saved, saved_gt)
    return StudyData(root, train, val, episodes, saved)


def load_labelled_splits(
    root: Path, image_size: int, cache_dir: Path | None = None
) -> tuple[Path, DecodedSplit, DecodedSplit]:
    """The train and val splits of a folder (HW4 layout or ImageFolder), decoded (cached)."""
    root = Path(root).resolve()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    train, val = (decode_split(read_split(root, name), image_size, cache_dir) for name in ("train", "val"))
    return root, train, val
