"""A study's summary: the results table (CSV and Markdown) and the accuracy plot, written at its end."""

from __future__ import annotations

import math
import re
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


def error_line(trial: Any) -> str | None:
    """The last line of a failed trial's latest error: the exception without its module and its message, e.g.
    'TrainingDiverged: train_loss became nan at epoch 1 step 3 (lr=10.0)'; None when there is none."""
    text = ""
    try:
        local = trial.error_file
    except Exception:  # a trial read back from storage without Ray (a replay) has no driver copy
        local = None
    if local and Path(local).is_file():
        # The driver's own copy: written before callbacks hear of the error, while the copy in the study's
        # storage (what trial.get_error() reads) is only synced later.
        text = Path(local).read_text(errors="replace")
    if not text.strip():
        try:
            text = str(trial.get_error() or "")
        except Exception:  # unreadable storage: a summary without the reason rather than none
            text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )", "", lines[-1])[:5000]


def results_table(trials: list[Any], runs: RunLookup) -> pd.DataFrame:
    """One row per trial, best first and failed trials last: its searched parameters, best metric +- ci95
    (a failed trial's from the epochs it finished), epochs, status and, for a failed trial, its error."""
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
            "error": error_line(trial) if trial.status == "ERROR" else None,
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        order = table.assign(_failed=table["status"] == "ERROR")
        order = order.sort_values(["_failed", key], ascending=[True, False], na_position="last", kind="stable")
        table = table.loc[order.index].reset_index(drop=True)
    return table


def best_row(table: pd.DataFrame, metric: str) -> dict[str, Any] | None:
    """The best trial of a results table: the highest finite best_<metric> of a trial that did not fail."""
    if table.empty:
        return None
    scored = table[(table["status"] != "ERROR") & table[f"best_{metric}"].notna()]
    return scored.iloc[0].to_dict() if not scored.empty else None


def markdown_table(table: pd.DataFrame) -> str:
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_curves(ax: Any, curves: list[tuple[str, list[tuple[int, float]]]], best_trial: str | None) -> None:
    """One line per trial's (epoch, value) history; the best trial's bold and labelled."""
    for trial_id, history in curves:
        if not history:
            continue
        steps, values = zip(*history, strict=True)
        is_best = best_trial is not None and trial_id == best_trial
        ax.plot(
            steps,
            values,
            marker="o",
            markersize=3,
            linewidth=2.5 if is_best else 1,
            alpha=1.0 if is_best else 0.5,
            label=f"best: {trial_id}" if is_best else None,
        )


def plot_accuracy(trials: list[Any], runs: RunLookup, best_trial: str | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw_curves(ax, [(trial.trial_id, runs.metric_history(trial.trial_id)) for trial in trials], best_trial)
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
    best = best_row(table, runs.metric)
    table.to_csv(folder / RESULTS_CSV, index=False)
    (folder / RESULTS_MD).write_text(markdown_table(table))
    files = [folder / RESULTS_CSV, folder / RESULTS_MD]
    files.append(plot_accuracy(trials, runs, best["trial_id"] if best else None, folder / f"{runs.metric}.png"))
    if "setting" in table.columns:
        from fsl.tracking.settings_table import write_settings_table

        files += write_settings_table(table, runs.metric, folder)
    return StudySummary(table, best, files)
