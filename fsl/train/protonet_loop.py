"""The ProtoNet epoch loop: episodic training, then evaluation on the fixed episodes, once per epoch.

Plain PyTorch. The caller passes a `report(metrics, state)` callable that receives each epoch's metrics and a
checkpointable state, so the same loop runs in a unit test, directly in a Tune trial, or on N Ray Train
workers. With torch.distributed initialised, episodes and evaluation episodes are split across ranks and the
metrics are all-reduced, so every rank reports the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fsl.data.augment import augment, normalize, parse_policy, to_unit_float
from fsl.data.decoded import DecodedSplit
from fsl.data.episodes import EpisodeSampler, FixedEpisodes
from fsl.methods.protonet import ProtoNet, protonet_loss
from fsl.train.config import ProtoNetConfig
from fsl.train.evaluate import ci95_from_sums, evaluate_episodes, unwrap
from fsl.train.optim import build_optimizer, build_scheduler
from fsl.train.parallel import Placement, all_reduce_sum, to_device
from fsl.train.precision import autocast, float32_outputs, to_channels_last
from fsl.train.run_state import DivergenceGuard, Report, cpu_weights, epoch_state, restore

BEST_MODEL_FORMAT = "fsl.protonet/1"


def build_model(cfg: ProtoNetConfig) -> ProtoNet:
    return ProtoNet(
        image_size=cfg.image_size,
        head_depth=cfg.head_depth,
        head_width=cfg.head_width,
        distance=cfg.distance,
        temperature=cfg.temperature,
        learn_temperature=cfg.learn_temperature,
    )


def episodes_for_rank(total: int, rank: int, world_size: int) -> int:
    """An epoch's episodes split across ranks. Every rank takes the same number, rounded up: each training step
    is a DDP gradient all-reduce, so a rank with one step more would wait on collectives the others never join.
    An epoch of 10 episodes on 3 ranks is therefore 12."""
    return max(1, -(-total // world_size))  # ceiling division


def train_protonet(
    cfg: ProtoNetConfig,
    train: DecodedSplit,
    val: DecodedSplit,
    val_episodes: FixedEpisodes,
    report: Report,
    placement: Placement | None = None,
    resume_state: dict[str, Any] | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Train for cfg.epochs (continuing from resume_state), calling report() after every epoch.

    Returns the last epoch's metrics. `prepare_model` wraps the model for data-parallel training (DDP);
    by default the model is just moved to the device.
    """
    placement = placement or Placement(torch.device("cpu"))
    device = placement.device
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and for every resume
    model = to_channels_last(build_model(cfg), cfg)
    float32_outputs(cfg, model.head)  # the distances to prototypes are computed from float32 embeddings
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler = build_scheduler(cfg, optimizer)
    start_epoch, best = restore(model, optimizer, scheduler, resume_state, "val_acc", device)
    model = prepare_model(model) if prepare_model else model

    train_images = to_device(train.images, device)
    val_images = to_device(val.images, device)
    sampler = EpisodeSampler(train.labels, cfg.train_way, cfg.k_shot, cfg.n_query)
    # Episodes drawn at a larger K (an ablation over shots shares one set) are cut to this run's K.
    eval_episodes = val_episodes.with_shots(cfg.k_shot).head(cfg.eval_episodes)
    eval_shard = eval_episodes.shard(placement.rank, placement.world_size)
    policy = parse_policy(cfg.augment)
    n_steps = episodes_for_rank(cfg.episodes_per_epoch, placement.rank, placement.world_size)

    guard = DivergenceGuard("train_loss", cfg.lr, placement)
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        # Episodes depend only on (seed, epoch, rank): a resumed run sees the same data as an unbroken one.
        rng = np.random.default_rng([cfg.seed, epoch, placement.rank])
        generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
        model.train()
        guard.start_epoch(epoch)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        for step in range(n_steps):
            episode = sampler.sample(rng)
            rows = torch.as_tensor(np.concatenate([episode.support, episode.query]), device=device)
            x = to_unit_float(train_images.index_select(0, rows))
            x = to_channels_last(normalize(augment(x, policy, generator) if policy else x), cfg)
            labels = torch.as_tensor(episode.query_labels, device=device)
            with autocast(cfg, device):
                loss = protonet_loss(model(x, cfg.train_way, cfg.k_shot).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            guard.step(step + 1, loss)
        guard.flush()
        scheduler.step()

        # In float32 whatever the precision: val_acc is what the saved float32 weights score when reloaded.
        result = evaluate_episodes(model, val_images, eval_shard)
        acc = result.accuracies.astype(np.float64)
        loss_total, n_total, acc_sum, acc_sq, n_eval = all_reduce_sum(
            [float(loss_sum), float(n_steps), float(acc.sum()), float((acc**2).sum()), float(acc.size)], device
        )
        local_loss = float(loss_sum) / n_steps
        train_loss = loss_total / n_total
        val_acc, val_ci95 = ci95_from_sums(acc_sum, acc_sq, n_eval)
        weights = cpu_weights(unwrap(model))
        if val_acc > best["val_acc"]:
            best = {
                "val_acc": val_acc,
                "val_acc_ci95": val_ci95,
                "epoch": epoch + 1,
                "model": weights,
            }
        metrics = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_acc": val_acc,
            "val_acc_ci95": val_ci95,
            "best_val_acc": best["val_acc"],
            "best_val_acc_ci95": best["val_acc_ci95"],
            "best_epoch": best["epoch"],
            "current_lr": optimizer.param_groups[0]["lr"],  # after this epoch's schedule step
            # This rank's own share, before the all-reduce: shows that every rank trained.
            "local_steps": n_steps,  # episodes
            "local_train_loss": local_loss,
            "epoch_time_s": time.perf_counter() - started,
        }
        state = epoch_state(weights, optimizer, scheduler, epoch + 1, best, cfg, BEST_MODEL_FORMAT)
        report(metrics, state)
    return metrics
