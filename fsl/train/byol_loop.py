"""The BYOL pre-training loop: two augmented views per image, the symmetric loss, the EMA target on a cosine
tau schedule, and once per epoch a k-NN probe of the online backbone on a labelled split.

Plain PyTorch, with the same contract as the ProtoNet loop: `report(metrics, state)` after every epoch, so it
runs in a unit test, in a Tune trial, or on N Ray Train workers (DDP: each rank takes its slice of every
global batch, and the metrics are all-reduced).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fsl.data.augment import normalize, to_unit_float
from fsl.data.byol_augment import byol_views
from fsl.data.decoded import DecodedSplit
from fsl.methods.byol import BYOL, cosine_tau
from fsl.train.config import BYOLConfig
from fsl.train.evaluate import unwrap
from fsl.train.optim import build_optimizer, build_scheduler
from fsl.train.parallel import Placement, all_reduce_sum, batch_rows, to_device
from fsl.train.precision import autocast, float32_outputs, to_channels_last
from fsl.train.probe import probe_accuracy
from fsl.train.run_state import DivergenceGuard, Report, cpu_weights, epoch_state, restore

BACKBONE_FORMAT = "fsl.backbone/1"


def build_byol(cfg: BYOLConfig) -> BYOL:
    return BYOL(cfg.arch, cfg.head_depth, cfg.head_width, cfg.projection_dim)


def steps_per_epoch(cfg: BYOLConfig, n_images: int) -> int:
    """cfg.steps_per_epoch, or one pass over the images in whole global batches."""
    return cfg.steps_per_epoch or max(1, n_images // cfg.batch_size)


def train_byol(
    cfg: BYOLConfig,
    train: DecodedSplit,
    probe_split: DecodedSplit,
    report: Report,
    placement: Placement | None = None,
    resume_state: dict[str, Any] | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Pre-train for cfg.epochs (continuing from resume_state); the training labels are never used."""
    placement = placement or Placement(torch.device("cpu"))
    device = placement.device
    if cfg.batch_size // placement.world_size < 2:
        raise ValueError(f"batch_size={cfg.batch_size} leaves fewer than 2 images per worker for BatchNorm")
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and for every resume
    model = build_byol(cfg)
    if placement.world_size > 1 and device.type == "cuda" and cfg.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = to_channels_last(model, cfg)
    float32_outputs(cfg, model.predictor, model.target_projector)  # the normalised MSE in float32
    optimizer = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    scheduler = build_scheduler(cfg, optimizer)
    start_epoch, best = restore(model, optimizer, scheduler, resume_state, "probe_acc", device)
    trained = prepare_model(model) if prepare_model else model

    train_images = to_device(train.images, device)
    probe_images = to_device(probe_split.images, device)
    probe_labels = torch.as_tensor(probe_split.labels, device=device)
    n_steps = steps_per_epoch(cfg, len(train))
    total_steps = n_steps * cfg.epochs

    guard = DivergenceGuard("byol_loss", cfg.lr, placement)
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        # The same permutation on every rank; batches depend only on (seed, epoch), so a resume repeats them.
        rng = np.random.default_rng([cfg.seed, epoch])
        order = np.concatenate([rng.permutation(len(train)) for _ in range(-(-n_steps * cfg.batch_size // len(train)))])
        generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)) + placement.rank)
        trained.train()
        guard.start_epoch(epoch)
        sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss, z_std
        for step in range(n_steps):
            rows = torch.as_tensor(batch_rows(order, step, cfg.batch_size, placement), device=device)
            view_1, view_2 = byol_views(
                to_unit_float(train_images.index_select(0, rows)), generator, cfg.augment_strength
            )
            with autocast(cfg, device):
                loss, z_std = trained(
                    to_channels_last(normalize(view_1), cfg), to_channels_last(normalize(view_2), cfg)
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            unwrap(trained).update_target(cosine_tau(epoch * n_steps + step + 1, total_steps, cfg.tau))
            sums += torch.stack([loss.detach(), z_std]).double()
            guard.step(step + 1, loss)
        guard.flush()
        scheduler.step()
        loss_total, z_std_total, count = all_reduce_sum([*sums.tolist(), float(n_steps)], device)
        byol_loss = loss_total / count

        online = unwrap(trained)
        acc, ci95 = probe_accuracy(online.backbone, probe_images, probe_labels, cfg.probe_k, placement)
        weights = cpu_weights(online)
        if acc > best["probe_acc"] or cfg.keep == "last":
            backbone = {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}
            best = {"probe_acc": acc, "probe_acc_ci95": ci95, "epoch": epoch + 1, "model": backbone}
        metrics = {
            "epoch": epoch + 1,
            "byol_loss": byol_loss,
            "z_std": z_std_total / count,
            "tau": cosine_tau((epoch + 1) * n_steps, total_steps, cfg.tau),
            "probe_acc": acc,
            "probe_acc_ci95": ci95,
            "best_probe_acc": best["probe_acc"],
            "best_probe_acc_ci95": best["probe_acc_ci95"],
            "best_epoch": best["epoch"],
            "current_lr": optimizer.param_groups[0]["lr"],
            "local_steps": n_steps,
            "epoch_time_s": time.perf_counter() - started,
            "images_per_s": n_steps * cfg.batch_size / (time.perf_counter() - started),
        }
        state = epoch_state(weights, optimizer, scheduler, epoch + 1, best, cfg, BACKBONE_FORMAT)
        report(metrics, state)
    return metrics
