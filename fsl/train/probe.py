"""How good a frozen backbone's features are: the weighted k-NN probe (Wu et al. 2018, as lightly and
solo-learn use to follow self-supervised training), leave-one-out on a labelled split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsl.data.augment import normalize, to_unit_float
from fsl.train.evaluate import binomial_ci95
from fsl.train.parallel import Placement, gather_rows, rank_share


@torch.no_grad()
def extract_features(
    backbone: nn.Module, images: torch.Tensor, placement: Placement, batch_size: int = 256
) -> torch.Tensor:
    """Features of all uint8 images (N, H, W, 3), each rank embedding its share; every rank gets all N rows.

    The backbone is put in eval mode (BatchNorm's running statistics) and left that way."""
    backbone.eval()
    rows = torch.as_tensor(rank_share(images.shape[0], placement), device=images.device)
    parts = [
        backbone(normalize(to_unit_float(images.index_select(0, rows[i : i + batch_size]).to(placement.device))))
        for i in range(0, len(rows), batch_size)
    ]
    return gather_rows(torch.cat(parts).float(), images.shape[0], placement)


def knn_predict(
    features: torch.Tensor,
    labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Leave-one-out predictions: each row's class by its k most cosine-similar other rows, each voting with
    weight exp(similarity / temperature)."""
    n = features.shape[0]
    k = min(k, n - 1)
    if k < 1:
        raise ValueError("the k-NN probe needs at least two images")
    z = F.normalize(features.float(), dim=1)
    n_classes = int(labels.max()) + 1
    predictions = []
    for start in range(0, n, chunk):
        sim = z[start : start + chunk] @ z.T
        own = torch.arange(start, min(start + chunk, n), device=z.device)
        sim[torch.arange(len(own), device=z.device), own] = -float("inf")  # an image is not its own neighbour
        top_sim, top_index = sim.topk(k, dim=1)
        votes = torch.zeros(len(own), n_classes, device=z.device)
        votes.scatter_add_(1, labels[top_index], torch.exp(top_sim / temperature))
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(features: torch.Tensor, labels: torch.Tensor, k: int = 20, temperature: float = 0.07) -> float:
    labels = labels.to(features.device)
    return float((knn_predict(features, labels, k, temperature) == labels).float().mean())


def probe_accuracy(
    backbone: nn.Module, images: torch.Tensor, labels: torch.Tensor, k: int, placement: Placement
) -> tuple[float, float]:
    """k-NN accuracy of the backbone's features on a labelled split and its 95% (binomial) half-width; every
    rank computes its share of the features and gets the same numbers."""
    acc = knn_accuracy(extract_features(backbone, images, placement), labels, k)
    return binomial_ci95(acc, len(labels))
