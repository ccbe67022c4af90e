"""The report's figures, each drawn from a study read back from MLflow (fsl.tracking.study_reader)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fsl.tracking.importance import Importance
from fsl.tracking.study_reader import StudyRuns
from fsl.tracking.summary import draw_curves


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def running_best(values: Sequence[float]) -> list[float]:
    """The best (highest) value so far after each trial; NaN until the first finite value."""
    best, out = float("nan"), []
    for value in values:
        if value is not None and math.isfinite(value) and not (best >= value):
            best = float(value)
        out.append(best)
    return out


def plot_history(runs: StudyRuns, path: Path) -> Path:
    """Each trial's best metric in start order, and the best so far."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    trials = runs.trials.sort_values("start_order")
    order, values = trials["start_order"].to_numpy(), trials[runs.value_key].astype(float).to_numpy()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter(order, values, s=28, color="#4c72b0", zorder=3, label=f"trial's best {runs.metric}")
    ax.step(order, running_best(values), where="post", color="#dd8452", linewidth=2, label="best so far")
    baseline = runs.parent_metrics.get(f"untrained_{runs.metric}")
    if baseline is not None:
        ax.axhline(baseline, color="#9e9e9e", linestyle="--", linewidth=1, label="untrained model")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (in start order)")
    ax.set_ylabel(runs.metric)
    ax.set_title(f"Optimisation history of {runs.study_name}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(runs: StudyRuns, path: Path) -> Path:
    """The metric per epoch of every trial, the best one bold."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.2))
    trials = runs.trials
    best = trials["trial_id"].iloc[0] if math.isfinite(trials[runs.value_key].iloc[0]) else None
    draw_curves(ax, [(r.trial_id, runs.histories.get(r.run_id, [])) for r in trials.itertuples()], best)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(runs.metric)
    ax.set_title(f"{runs.metric} per epoch of every trial (early-stopped trials end early)", fontsize=10)
    ax.grid(alpha=0.3)
    if best is not None:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_importance(importance: Importance, path: Path) -> Path:
    plt = pyplot()
    names = list(importance.importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.4))
    ax.barh(names, [importance.importances[n] for n in names], color="#4c72b0")
    ax.set_xlabel("importance (sums to 1)")
    ax.set_title(f"Hyperparameter importance: {importance.evaluator}, {importance.n_trials} trials", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lr_augment(runs: StudyRuns, augment: str, path: Path) -> Path:
    """The best metric against lr (log axis), one colour per augmentation (a colour scale for a strength)."""
    plt = pyplot()
    trials = runs.trials[np.isfinite(runs.trials[runs.value_key].astype(float))]
    name = augment.removeprefix("params.")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    values = trials[augment]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        points = ax.scatter(trials["params.lr"], trials[runs.value_key], c=values.astype(float), cmap="viridis", s=36)
        fig.colorbar(points, ax=ax, label=name)
    else:
        for value in sorted(values.dropna().unique(), key=str):
            chosen = trials[values == value]
            ax.scatter(chosen["params.lr"], chosen[runs.value_key], s=36, label=f"{name}={value}")
        ax.legend(fontsize=8, loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("lr (log scale)")
    ax.set_ylabel(f"best {runs.metric}")
    ax.set_title(f"best {runs.metric} against learning rate, by {name}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
