"""Evaluation on fixed episodes: mean accuracy with its 95% confidence half-width, and predictions.

Every image an episode uses is embedded once (BatchNorm is in eval mode, so an embedding does not depend on
the batch it is computed in); episodes are then scored from the embeddings in batches. For the HW4 files
this embeds each of the 9,600 validation images once instead of 48,000 episode slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from fsl.data.augment import normalize, to_unit_float
from fsl.data.episodes import FixedEpisodes
from fsl.methods.protonet import ProtoNet, prototypes
from fsl.train.parallel import unwrap


@dataclass(frozen=True)
class EvalResult:
    accuracies: np.ndarray  # per episode

    @property
    def mean(self) -> float:
        return mean_ci95(self.accuracies)[0]

    @property
    def ci95(self) -> float:
        return mean_ci95(self.accuracies)[1]


def mean_ci95(accuracies: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width 1.96 * sigma / sqrt(n) over episodes (sigma with ddof=0, as the
    course's eval.py computes it)."""
    values = np.asarray(accuracies, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no episodes to summarise")
    return float(values.mean()), float(1.96 * values.std() / math.sqrt(values.size))


def paired_difference_ci95(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean of a - b over the same episodes and its 95% half-width: the per-episode differences cancel what
    the episodes share (their difficulty), so a real gap shows with far fewer episodes than two separate
    intervals would need."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired results must cover the same episodes, got {a.shape} and {b.shape}")
    return mean_ci95(a - b)


def binomial_ci95(share: float, count: float) -> tuple[float, float]:
    """A share of successes over `count` independent trials and its 95% (normal-approximation) half-width
    1.96 * sqrt(p (1 - p) / n): the interval of an accuracy over n images (top-1 on val, the k-NN probe)."""
    return share, 1.96 * math.sqrt(max(share * (1 - share), 0.0) / count)


def ci95_from_sums(total: float, total_sq: float, count: float) -> tuple[float, float]:
    """mean_ci95 from sums of x and x^2 (what data-parallel workers can all-reduce)."""
    mean = total / count
    variance = max(total_sq / count - mean * mean, 0.0)
    return mean, 1.96 * math.sqrt(variance) / math.sqrt(count)


# A batch's first feature map (64 channels at full resolution, float32) is kept under this size: at 84 px a
# batch of 500 took 1.9 GB more peak memory than one of 64, and was no faster on a CPU (bench b9).
EMBED_BATCH_BYTES = 128 * 1024**2
MAX_EMBED_BATCH = 500


def embed_batch_size(image_size: tuple[int, int]) -> int:
    """Images per embedding batch: as many as keep a 64-channel full-size feature map under EMBED_BATCH_BYTES
    (500 at 32 px, 74 at 84 px), at least 16."""
    per_image = 64 * image_size[0] * image_size[1] * 4
    return max(16, min(MAX_EMBED_BATCH, EMBED_BATCH_BYTES // per_image))


@torch.no_grad()
def embed_rows(model: ProtoNet, images: torch.Tensor, rows: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
    """Embeddings of images[rows] (uint8 (N, H, W, 3) on the model's device), in batches (embed_batch_size by
    default)."""
    batch_size = batch_size or embed_batch_size((images.shape[1], images.shape[2]))
    out = []
    index = torch.as_tensor(rows, device=images.device)
    for start in range(0, len(rows), batch_size):
        batch = images.index_select(0, index[start : start + batch_size])
        out.append(model.embed(normalize(to_unit_float(batch))))
    return torch.cat(out)


@torch.no_grad()
def episode_logits(model: ProtoNet, images: torch.Tensor, episodes: FixedEpisodes, chunk: int = 50) -> torch.Tensor:
    """Query logits (E, N*Q, N) for every episode."""
    was_training = model.training
    model.eval()
    try:
        used = np.unique(np.concatenate([episodes.support.ravel(), episodes.query.ravel()]))
        z = embed_rows(model, images, used)

        # `used` is sorted, so a row's position among the embeddings is its searchsorted index.
        def to_z(rows: np.ndarray) -> np.ndarray:
            return np.searchsorted(used, rows)

        support_labels = torch.arange(episodes.n_way, device=z.device).repeat_interleave(episodes.k_shot)
        out = []
        for start in range(0, len(episodes), chunk):
            sl = slice(start, start + chunk)
            zs = z[torch.as_tensor(to_z(episodes.support[sl]), device=z.device)]
            zq = z[torch.as_tensor(to_z(episodes.query[sl]), device=z.device)]
            out.append(model.distance(zq, prototypes(zs, support_labels, episodes.n_way)))
        return torch.cat(out)
    finally:
        model.train(was_training)


def evaluate_episodes(model: nn.Module, images: torch.Tensor, episodes: FixedEpisodes) -> EvalResult:
    """Per-episode accuracy against the episodes' query labels."""
    logits = episode_logits(cast(ProtoNet, unwrap(model)), images, episodes)
    labels = torch.as_tensor(episodes.query_labels, device=logits.device)
    return EvalResult((logits.argmax(-1) == labels).float().mean(-1).cpu().numpy())


def predict_episodes(model: nn.Module, images: torch.Tensor, episodes: FixedEpisodes) -> np.ndarray:
    """Predicted way index per query, (E, N*Q)."""
    return episode_logits(cast(ProtoNet, unwrap(model)), images, episodes).argmax(-1).cpu().numpy()
