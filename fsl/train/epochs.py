"""The one epoch runner: trains any `Method` (fsl.train.method) for cfg.epochs, calling `report(metrics, state)`
after every epoch, so the same run happens in a unit test, directly in a Tune trial, or on N Ray Train workers.

It owns what every method shares: the seed (the same initial weights on every rank and for every resume),
precision and memory format, optimizer and schedule, resume, the DDP wrap, the divergence guard, the all-reduce
of the step statistics (so every rank reports the same numbers), the best epoch, and the state to checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fsl.train.method import Method
from fsl.train.optim import build_optimizer, build_scheduler
from fsl.train.parallel import all_reduce_sum
from fsl.train.precision import float32_outputs, to_channels_last
from fsl.train.run_state import DivergenceGuard, Report, cpu_weights, epoch_state, restore


def run_epochs(
    method: Method,
    report: Report,
    resume_state: dict[str, Any] | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Train for cfg.epochs (continuing from resume_state); returns the last epoch's metrics.

    `prepare_model` wraps what trains for data-parallel training (DDP); by default it trains as it is."""
    cfg, placement, metric = method.cfg, method.placement, method.metric
    device = placement.device
    torch.manual_seed(cfg.seed)
    model = to_channels_last(method.build_model(), cfg)
    float32_outputs(cfg, *method.float32_modules(model))
    optimizer = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    scheduler = build_scheduler(cfg, optimizer)
    start_epoch, best = restore(model, optimizer, scheduler, resume_state, metric, device)
    trained = method.trained_module(model)
    trained = prepare_model(trained) if prepare_model else trained
    n_steps = method.setup(model)

    guard = DivergenceGuard(method.loss_name, cfg.lr, placement)
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        method.begin_epoch(epoch, model, trained)
        guard.start_epoch(epoch)
        sums: torch.Tensor | None = None
        for step in range(n_steps):
            loss, stats = method.train_step(trained, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.after_step(trained, step)
            sums = stats if sums is None else sums + stats
            guard.step(step + 1, loss)
        guard.flush()
        scheduler.step()
        local = [*sums.tolist(), float(n_steps)] if sums is not None else [float(n_steps)]
        train = method.train_metrics(local, all_reduce_sum(local, device))

        # In float32 whatever the precision: the score is what the saved float32 weights get when reloaded.
        score, ci95 = method.evaluate(model)
        weights = cpu_weights(model)
        if score > best[metric] or cfg.keep == "last":
            best = {metric: score, f"{metric}_ci95": ci95, "epoch": epoch + 1, "model": method.best_weights(weights)}
        seconds = time.perf_counter() - started
        metrics = {
            "epoch": epoch + 1,
            **train,
            metric: score,
            f"{metric}_ci95": ci95,
            f"best_{metric}": best[metric],
            f"best_{metric}_ci95": best[f"{metric}_ci95"],
            "best_epoch": best["epoch"],
            "current_lr": optimizer.param_groups[0]["lr"],  # after this epoch's schedule step
            "local_steps": n_steps,  # this rank's own share: shows that every rank trained
            **method.epoch_metrics(epoch + 1, seconds),
            "epoch_time_s": seconds,
        }
        report(metrics, epoch_state(weights, optimizer, scheduler, epoch + 1, best, cfg, method.best_format))
    return metrics
