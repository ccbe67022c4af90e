"""The supervised loop: a ResNet classifier trained with cross-entropy, fully or with a frozen backbone.

It serves supervised pre-training (scored by the k-NN probe on another labelled split, like BYOL) and the
Office-Home settings A-E (scored by accuracy on the val split). A frozen backbone without augmentation sees
every image the same way every epoch, so its features are extracted once and only the head trains on them.
Same contract as the other loops: `report(metrics, state)` after every epoch, DDP-ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fsl.data.augment import augment, normalize, parse_policy, to_unit_float
from fsl.data.decoded import DecodedSplit
from fsl.methods.classifier import Classifier, correct_count
from fsl.train.config import ClassifierConfig
from fsl.train.evaluate import ci95_from_sums, unwrap
from fsl.train.optim import build_optimizer, build_scheduler
from fsl.train.parallel import Placement, all_reduce_sum, batch_rows, rank_share, to_device
from fsl.train.precision import autocast, float32_outputs, to_channels_last
from fsl.train.probe import extract_features, probe_accuracy
from fsl.train.run_state import DivergenceGuard, Report, cpu_weights, epoch_state, restore

CLASSIFIER_FORMAT = "fsl.classifier/1"


def build_classifier(cfg: ClassifierConfig, n_classes: int) -> Classifier:
    return Classifier(cfg.arch, n_classes, cfg.head_depth, cfg.head_width)


def features_once(cfg: ClassifierConfig) -> bool:
    """A frozen backbone on unaugmented images: every epoch would compute the same features."""
    return cfg.finetune == "frozen" and not parse_policy(cfg.augmentation)


def train_classifier(
    cfg: ClassifierConfig,
    train: DecodedSplit,
    report: Report,
    val: DecodedSplit | None = None,
    probe_split: DecodedSplit | None = None,
    init_backbone: dict[str, torch.Tensor] | None = None,
    placement: Placement | None = None,
    resume_state: dict[str, Any] | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Train for cfg.epochs on `train`'s labels; score on `val` (its classes must be train's) or, without
    one, with the k-NN probe on `probe_split`. `init_backbone` holds pre-trained backbone weights."""
    if val is None and probe_split is None:
        raise ValueError("train_classifier needs a val split or a probe split to score epochs")
    placement = placement or Placement(torch.device("cpu"))
    device = placement.device
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg, len(train.class_names))
    if init_backbone is not None:
        model.backbone.load_state_dict(init_backbone)
    model = to_channels_last(model, cfg)
    float32_outputs(cfg, model.head)  # cross-entropy on float32 logits
    frozen = cfg.finetune == "frozen"
    if frozen:
        model.backbone.requires_grad_(False)
    optimizer = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    scheduler = build_scheduler(cfg, optimizer)
    metric = "val_acc" if val is not None else "probe_acc"
    start_epoch, best = restore(model, optimizer, scheduler, resume_state, metric, device)
    # Only what trains is wrapped for DDP: the head alone when the backbone is frozen.
    trained = prepare_model(model.head if frozen else model) if prepare_model else (model.head if frozen else model)

    train_images = to_device(train.images, device)
    train_labels = torch.as_tensor(train.labels, device=device)
    val_images = to_device(val.images, device) if val is not None else None
    val_labels = torch.as_tensor(val.labels_in(train.class_names, val.name), device=device) if val is not None else None
    if probe_split is not None:
        probe_images = to_device(probe_split.images, device)
        probe_labels = torch.as_tensor(probe_split.labels, device=device)
    cached = features_once(cfg)
    if cached:
        train_features = extract_features(model.backbone, train_images, placement)
        val_features = extract_features(model.backbone, val_images, placement) if val_images is not None else None
    policy = parse_policy(cfg.augmentation)
    n_steps = max(1, len(train) // cfg.batch_size)

    def logits_of(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if cached:
            return trained(train_features.index_select(0, rows))
        x = to_unit_float(train_images.index_select(0, rows))
        x = to_channels_last(normalize(augment(x, policy, generator) if policy else x), cfg)
        if frozen:
            with torch.no_grad():
                features = model.backbone(x)
            return trained(features)
        return trained(x)

    guard = DivergenceGuard("train_loss", cfg.lr, placement)
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(train))
        generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)) + placement.rank)
        model.train()
        if frozen:
            model.backbone.eval()  # a frozen backbone keeps its BatchNorm statistics
        guard.start_epoch(epoch)
        sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss * n, correct, n
        for step in range(n_steps):
            rows = torch.as_tensor(batch_rows(order, step, cfg.batch_size, placement), device=device)
            labels = train_labels.index_select(0, rows)
            with autocast(cfg, device):
                logits = logits_of(rows, generator)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums[0] += loss.detach() * len(rows)
            sums[1] += correct_count(logits.detach(), labels)
            sums[2] += len(rows)
            guard.step(step + 1, loss)
        guard.flush()
        scheduler.step()
        loss_sum, correct, seen = all_reduce_sum(sums.tolist(), device)
        train_loss = loss_sum / seen

        model.eval()
        if val_images is None:
            score, ci95 = probe_accuracy(model.backbone, probe_images, probe_labels, cfg.probe_k, placement)
        else:
            if cached:
                with torch.no_grad():  # every rank holds all of val's features: each scores all of it
                    right = float(correct_count(model.head(val_features), val_labels))
            else:
                right = _val_correct(model, val_images, val_labels, placement)
            score, ci95 = ci95_from_sums(right, right, len(val_labels))
        weights = cpu_weights(model)
        if score > best[metric] or cfg.keep == "last":
            best = {metric: score, f"{metric}_ci95": ci95, "epoch": epoch + 1, "model": weights}
        metrics = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": correct / seen,
            metric: score,
            f"{metric}_ci95": ci95,
            f"best_{metric}": best[metric],
            f"best_{metric}_ci95": best[f"{metric}_ci95"],
            "best_epoch": best["epoch"],
            "current_lr": optimizer.param_groups[0]["lr"],
            "local_steps": n_steps,
            "epoch_time_s": time.perf_counter() - started,
        }
        state = epoch_state(weights, optimizer, scheduler, epoch + 1, best, cfg, CLASSIFIER_FORMAT)
        report(metrics, state)
    return metrics


@torch.no_grad()
def _val_correct(model: Classifier, images: torch.Tensor, labels: torch.Tensor, placement: Placement) -> float:
    """Correct predictions on the whole val split, each rank scoring its share."""
    rows = torch.as_tensor(rank_share(images.shape[0], placement), device=images.device)
    correct = torch.zeros((), device=placement.device)
    for i in range(0, len(rows), 256):
        chunk = rows[i : i + 256]
        logits = unwrap(model)(normalize(to_unit_float(images.index_select(0, chunk))))
        correct += correct_count(logits, labels.index_select(0, chunk))
    return all_reduce_sum([float(correct)], placement.device)[0]
