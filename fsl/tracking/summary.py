"""A study's summary: the results table (CSV and Markdown) and the accuracy plot, written at its end."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"


class RunLookup(Protocol):
    searched: list[str]
    metric: str

    def metric_history(self, trial_id: str, key: str | None = None) -> list[tuple[int, float]]: ...

    def child_run_id(self, trial_id: str) -> str | None: ...


@dataclass
class StudySummary:
    table: pd.DataFrame
    best: dict[str, Any] | None
    files: list[Path] = field(default_factory=list)


def results_table(trials: list[Any], runs: RunLookup) -> pd.DataFrame:
    """One row per trial, best first: its searched parameters, best metric +- ci95, epochs and status."""
    rows = []
    key = f"best_{runs.metric}"
    for trial in trials:
        result = trial.last_result or {}
        best = result.get(key)
        row = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            **{name: trial.config.get(name) for name in runs.searched},
            key: best if best is not None and math.isfinite(best) else float("nan"),
            f"{key}_ci95": result.get(f"{key}_ci95", float("nan")),
            "best_epoch": result.get("best_epoch"),
            "epochs_run": result.get("epoch", 0),
            "epochs": trial.config.get("epochs"),
            "mlflow_run_id": runs.child_run_id(trial.trial_id),
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(key, ascending=False, na_position="last").reset_index(drop=True)
    return table


def markdown_table(table: pd.DataFrame) -> str:
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy(trials: list[Any], runs: RunLookup, best_trial: str | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for trial in trials:
        history = runs.metric_history(trial.trial_id)
        if not history:
            continue
        steps, values = zip(*history, strict=True)
        is_best = trial.trial_id == best_trial
        ax.plot(
            steps,
            values,
            marker="o",
            markersize=3,
            linewidth=2.5 if is_best else 1,
            alpha=1.0 if is_best else 0.5,
            label=f"best: {trial.trial_id}" if is_best else None,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(runs.metric)
    ax.set_title(f"{runs.metric} per trial (early-stopped trials end early)")
    ax.grid(alpha=0.3)
    if best_trial:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_study_summary(trials: list[Any], runs: RunLookup, folder: Path) -> StudySummary:
    folder.mkdir(parents=True, exist_ok=True)
    table = results_table(trials, runs)
    finished = table.dropna(subset=[f"best_{runs.metric}"]) if not table.empty else table
    best = finished.iloc[0].to_dict() if not finished.empty else None
    table.to_csv(folder / RESULTS_CSV, index=False)
    (folder / RESULTS_MD).write_text(markdown_table(table))
    files = [folder / RESULTS_CSV, folder / RESULTS_MD]
    files.append(plot_accuracy(trials, runs, best["trial_id"] if best else None, folder / f"{runs.metric}.png"))
    if "setting" in table.columns:
        from fsl.tracking.settings_table import write_settings_table

        files += write_settings_table(table, runs.metric, folder)
    return StudySummary(table, best, files)
