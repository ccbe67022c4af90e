"""Few-shot episodes: random N-way K-shot Q-query episodes for training, and fixed evaluation episodes.

Layout used everywhere: an episode's support rows are grouped by class (class 0's K images, then class 1's,
...), so support labels are implied; query labels are way indices 0..N-1.

Fixed episodes are read from and written to the DLCV HW4 format: `val_testcase.csv` (`episode_id`, then the
N*K support ids grouped by class, then `query0..`) and `val_testcase_gt.csv` (`episode_id,query0..`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Episode:
    """Row indices into a split: support (N*K,) grouped by class, query (N*Q,), query_labels (N*Q,)."""

    support: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    n_way: int
    k_shot: int

    @property
    def support_labels(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_way), self.k_shot)


@dataclass(frozen=True)
class FixedEpisodes:
    """A fixed set of evaluation episodes, as row indices into one split. Arrays are (E, ...)."""

    episode_ids: tuple[str, ...]
    support: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    n_way: int
    k_shot: int

    def __len__(self) -> int:
        return len(self.episode_ids)

    @property
    def n_query(self) -> int:
        """Queries per class (the HW4 files hold N*Q query columns)."""
        return self.query.shape[1] // self.n_way

    def head(self, n: int) -> FixedEpisodes:
        """The first n episodes (all of them when n is larger)."""
        return FixedEpisodes(
            self.episode_ids[:n], self.support[:n], self.query[:n], self.query_labels[:n], self.n_way, self.k_shot
        )

    def with_shots(self, k_shot: int) -> FixedEpisodes:
        """The same episodes with each class's first k_shot support images: episodes drawn once at the largest
        K serve every smaller K with the same classes and queries, so accuracies over K can be paired."""
        if not 1 <= k_shot <= self.k_shot:
            raise ValueError(f"episodes have {self.k_shot} support images per class; cannot take {k_shot}")
        if k_shot == self.k_shot:
            return self
        support = self.support.reshape(len(self), self.n_way, self.k_shot)[:, :, :k_shot]
        return FixedEpisodes(
            self.episode_ids, support.reshape(len(self), -1), self.query, self.query_labels, self.n_way, k_shot
        )

    def shard(self, rank: int, world_size: int) -> FixedEpisodes:
        """Every world_size-th episode starting at rank: disjoint shards for data-parallel evaluation."""
        keep = slice(rank, None, world_size)
        return FixedEpisodes(
            self.episode_ids[keep],
            self.support[keep],
            self.query[keep],
            self.query_labels[keep],
            self.n_way,
            self.k_shot,
        )


def check_episode_fits(
    labels: np.ndarray, class_names: Sequence[str], n_way: int, k_shot: int, n_query: int, where: str
) -> None:
    """Raise a one-line ValueError when N-way K-shot Q-query episodes cannot be drawn from these labels."""
    if n_way < 2 or k_shot < 1 or n_query < 1:
        raise ValueError(
            f"{where}: episodes need n_way >= 2, k_shot >= 1, n_query >= 1 (got {n_way}, {k_shot}, {n_query})"
        )
    n_classes = len(class_names)
    if n_way > n_classes:
        raise ValueError(f"{where}: {n_way}-way episodes need {n_way} classes, the split has {n_classes}")
    counts = np.bincount(labels, minlength=n_classes)
    small = np.flatnonzero(counts < k_shot + n_query)
    if len(small):
        c = small[0]
        raise ValueError(
            f"{where}: class {class_names[c]!r} has {counts[c]} images, fewer than k_shot + n_query = "
            f"{k_shot} + {n_query}"
        )


class EpisodeSampler:
    """Draws random N-way K-shot Q-query episodes from one split's labels."""

    def __init__(self, labels: np.ndarray, n_way: int, k_shot: int, n_query: int) -> None:
        labels = np.asarray(labels)
        n_classes = int(labels.max()) + 1 if len(labels) else 0
        check_episode_fits(labels, [str(c) for c in range(n_classes)], n_way, k_shot, n_query, "episode sampler")
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self._rows_by_class = [np.flatnonzero(labels == c) for c in range(n_classes)]

    def sample(self, rng: np.random.Generator) -> Episode:
        classes = rng.choice(len(self._rows_by_class), size=self.n_way, replace=False)
        picks = [rng.choice(self._rows_by_class[c], size=self.k_shot + self.n_query, replace=False) for c in classes]
        return Episode(
            support=np.concatenate([p[: self.k_shot] for p in picks]),
            query=np.concatenate([p[self.k_shot :] for p in picks]),
            query_labels=np.repeat(np.arange(self.n_way), self.n_query),
            n_way=self.n_way,
            k_shot=self.k_shot,
        )


def draw_fixed_episodes(
    labels: np.ndarray, n_way: int, k_shot: int, n_query: int, n_episodes: int, seed: int
) -> FixedEpisodes:
    """Draw evaluation episodes once from a seed; queries are shuffled within each episode, as in HW4."""
    rng = np.random.default_rng(seed)
    sampler = EpisodeSampler(labels, n_way, k_shot, n_query)
    supports, queries, query_labels = [], [], []
    for _ in range(n_episodes):
        episode = sampler.sample(rng)
        order = rng.permutation(len(episode.query))
        supports.append(episode.support)
        queries.append(episode.query[order])
        query_labels.append(episode.query_labels[order])
    return FixedEpisodes(
        episode_ids=tuple(str(i) for i in range(n_episodes)),
        support=np.stack(supports),
        query=np.stack(queries),
        query_labels=np.stack(query_labels),
        n_way=n_way,
        k_shot=k_shot,
    )


def _read_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV ({err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        raise ValueError(f"{path}: no episodes (no rows after the header)")
    if table.columns[0] != "episode_id":
        raise ValueError(f"{path}: the first column must be 'episode_id', found {table.columns[0]!r}")
    return table


def _query_columns(path: Path, table: pd.DataFrame) -> list[str]:
    """The trailing columns whose names start with 'query'."""
    names = list(table.columns)
    first = next((i for i, name in enumerate(names) if name.startswith("query")), None)
    if first is None:
        raise ValueError(f"{path}: no query columns (expected query0, query1, ... after the support columns)")
    trailing = names[first:]
    stray = [name for name in trailing if not name.startswith("query")]
    if stray:
        raise ValueError(f"{path}: column {stray[0]!r} after the query columns; support columns come first")
    return trailing


def read_fixed_episodes(
    testcase_csv: Path, gt_csv: Path | None, id_to_row: Mapping[str, int], labels: np.ndarray
) -> FixedEpisodes:
    """Read HW4 test-case episodes. Support and query columns are found by position and the 'query' prefix.

    N and K are inferred: the support ids of an episode come in N runs of K images of one class. Without a
    ground-truth file the query labels are taken from the split's labels.
    """
    testcase_csv = Path(testcase_csv)
    table = _read_table(testcase_csv)
    query_cols = _query_columns(testcase_csv, table)
    support_cols = [c for c in table.columns[1 : table.columns.get_loc(query_cols[0])]]
    if not support_cols:
        raise ValueError(f"{testcase_csv}: no support columns between 'episode_id' and 'query0'")

    def rows_of(column_names: list[str]) -> np.ndarray:
        out = np.empty((len(table), len(column_names)), dtype=np.int64)
        for j, column in enumerate(column_names):
            for i, image_id in enumerate(table[column]):
                row = id_to_row.get(image_id.strip())
                if row is None:
                    raise ValueError(
                        f"{testcase_csv}: row {i + 2}, column {column!r}: id {image_id!r} is not in the split"
                    )
                out[i, j] = row
        return out

    support = rows_of(support_cols)
    query = rows_of(query_cols)
    support_labels = labels[support]
    k_shot = int(np.argmax(support_labels[0] != support_labels[0, 0])) or support.shape[1]
    if support.shape[1] % k_shot:
        raise ValueError(
            f"{testcase_csv}: row 2: {support.shape[1]} support ids do not split into classes of {k_shot} images"
        )
    n_way = support.shape[1] // k_shot
    if n_way < 2:
        raise ValueError(f"{testcase_csv}: row 2: all support images have one class; expected N runs of K images")
    blocks = support_labels.reshape(len(table), n_way, k_shot)
    for i in range(len(table)):
        block_labels = blocks[i, :, 0]
        if (blocks[i] != block_labels[:, None]).any() or len(set(block_labels.tolist())) != n_way:
            raise ValueError(
                f"{testcase_csv}: row {i + 2}: support ids are not {n_way} groups of {k_shot} images of distinct "
                "classes (as in row 2)"
            )
    if len(query_cols) % n_way:
        raise ValueError(f"{testcase_csv}: {len(query_cols)} query columns are not a multiple of n_way={n_way}")
    episode_ids = tuple(s.strip() for s in table["episode_id"])

    true_way = np.argmax(labels[query][:, :, None] == blocks[:, None, :, 0], axis=2)
    in_episode = (labels[query][:, :, None] == blocks[:, None, :, 0]).any(axis=2)
    if gt_csv is None:
        bad = np.argwhere(~in_episode)
        if len(bad):
            i, j = bad[0]
            raise ValueError(
                f"{testcase_csv}: row {i + 2}, column {query_cols[j]!r}: the query's class is not "
                "among the episode's support classes"
            )
        query_labels = true_way
    else:
        query_labels = _read_ground_truth(Path(gt_csv), episode_ids, len(query_cols), n_way)
        # A ground truth that contradicts the split's labels means the files belong to different data.
        bad = np.argwhere(in_episode & (query_labels != true_way))
        if len(bad):
            i, j = bad[0]
            raise ValueError(
                f"{gt_csv}: row {i + 2}, column {query_cols[j]!r}: way {query_labels[i, j]} contradicts the "
                f"split's label of that query (way {true_way[i, j]})"
            )
    return FixedEpisodes(episode_ids, support, query, query_labels, n_way, k_shot)


def _read_ground_truth(gt_csv: Path, episode_ids: tuple[str, ...], n_queries: int, n_way: int) -> np.ndarray:
    table = _read_table(gt_csv)
    query_cols = _query_columns(gt_csv, table)
    if len(query_cols) != n_queries:
        raise ValueError(f"{gt_csv}: {len(query_cols)} query columns, the test-case file has {n_queries}")
    gt_ids = tuple(s.strip() for s in table["episode_id"])
    if gt_ids != episode_ids:
        extra = sorted(set(gt_ids) ^ set(episode_ids))
        detail = f"episode {extra[0]!r} is in only one of them" if extra else "the episodes are in another order"
        raise ValueError(f"{gt_csv}: episodes do not match the test-case file ({detail})")
    try:
        values = table[query_cols].astype(np.int64).to_numpy()
    except ValueError:
        raise ValueError(f"{gt_csv}: query columns must hold way indices 0..{n_way - 1}") from None
    bad = np.argwhere((values < 0) | (values >= n_way))
    if len(bad):
        i, j = bad[0]
        raise ValueError(
            f"{gt_csv}: row {i + 2}, column {query_cols[j]!r}: way index {values[i, j]} is not in 0..{n_way - 1}"
        )
    return values


def write_fixed_episodes(episodes: FixedEpisodes, ids: Sequence[str], testcase_csv: Path, gt_csv: Path) -> None:
    """Write episodes in the HW4 format; `ids` maps a row index to the split's image id."""
    ids_array = np.asarray(ids, dtype=object)
    n, k = episodes.n_way, episodes.k_shot
    support_cols = [f"class{c}_support{s}" for c in range(n) for s in range(k)]
    query_cols = [f"query{j}" for j in range(episodes.query.shape[1])]
    cases = pd.DataFrame(
        np.concatenate([ids_array[episodes.support], ids_array[episodes.query]], axis=1),
        columns=support_cols + query_cols,
    )
    cases.insert(0, "episode_id", list(episodes.episode_ids))
    _write_csv_atomically(cases, Path(testcase_csv))
    write_predictions_csv(episodes.episode_ids, episodes.query_labels, gt_csv)


def write_predictions_csv(episode_ids: Sequence[str], predictions: np.ndarray, path: Path) -> None:
    """Predicted way indices in the ground-truth format: episode_id,query0,query1,..."""
    predictions = np.asarray(predictions)
    table = pd.DataFrame(predictions, columns=[f"query{j}" for j in range(predictions.shape[1])])
    table.insert(0, "episode_id", list(episode_ids))
    _write_csv_atomically(table, Path(path))


def _write_csv_atomically(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)
