"""An ablation's table in the seed report's style: each cell's accuracy on the shared report episodes with its
95% interval, and its difference from the best cell with a paired 95% interval over the same episodes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsl.train.evaluate import mean_ci95, paired_difference_ci95

ABLATION_CSV, ABLATION_MD, ABLATION_PNG = "ablation.csv", "ablation.md", "ablation.png"


def ablation_table(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """`cells`: one dict per cell with "cell", "accuracies" (per report episode, or None when no trial of the
    cell finished) and any columns to carry (trials, the best trial's hyperparameters, ...). The best cell
    is the one with the highest mean; every other cell's difference is paired with it episode by episode."""
    means = {c["cell"]: mean_ci95(c["accuracies"]) for c in cells if c["accuracies"] is not None}
    best = max(means, key=lambda name: means[name][0]) if means else None
    rows = []
    for c in cells:
        row = {"cell": c["cell"], "val_acc": math.nan, "val_acc_ci95": math.nan}
        row |= {"diff_vs_best": math.nan, "diff_ci95": math.nan, "is_best": c["cell"] == best}
        if c["accuracies"] is not None:
            row["val_acc"], row["val_acc_ci95"] = means[c["cell"]]
            if c["cell"] != best:
                best_accuracies = next(x["accuracies"] for x in cells if x["cell"] == best)
                row["diff_vs_best"], row["diff_ci95"] = paired_difference_ci95(c["accuracies"], best_accuracies)
        row |= {k: v for k, v in c.items() if k not in ("cell", "accuracies")}
        rows.append(row)
    return pd.DataFrame(rows)


def _points(value: float) -> str:
    return f"{100 * value:.2f}"


def ablation_markdown(table: pd.DataFrame, title: str, episodes: str, searched: list[str]) -> str:
    """Accuracies in percent, as the seed report wrote them; a difference whose interval excludes 0 is real."""
    header = [title, f"accuracy % ({episodes}, 95% CI)", "vs best, points (paired 95% CI)", "trials"]
    lines = ["| " + " | ".join(header + searched) + " |", "|" + "---|" * (len(header) + len(searched))]
    for _, row in table.iterrows():
        if math.isnan(row["val_acc"]):
            accuracy, diff = "no trial finished", ""
        else:
            accuracy = f"{_points(row['val_acc'])} ± {_points(row['val_acc_ci95'])}"
            if row["is_best"]:
                diff = "best"
            else:
                excludes_zero = abs(row["diff_vs_best"]) > row["diff_ci95"]
                diff = f"{100 * row['diff_vs_best']:+.2f} ± {_points(row['diff_ci95'])}" + (
                    " *" if excludes_zero else ""
                )
        params = [_format(row.get(name)) for name in searched]
        lines.append("| " + " | ".join([str(row["cell"]), accuracy, diff, str(row.get("trials", ""))] + params) + " |")
    lines.append("")
    lines.append("\\* the paired interval excludes 0: the best cell is better on these episodes.")
    return "\n".join(lines) + "\n"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}"
    return "" if value is None else str(value)


def plot_ablation(table: pd.DataFrame, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = table.dropna(subset=["val_acc"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = ["#dd8452" if best else "#4c72b0" for best in done["is_best"]]
    bars = ax.bar(done["cell"].astype(str), done["val_acc"], yerr=done["val_acc_ci95"], capsize=4, color=colours)
    for bar, (_, row) in zip(bars, done.iterrows(), strict=True):
        text = f"{row['val_acc']:.3f}"
        if not row["is_best"]:
            text += f"\nΔ {100 * row['diff_vs_best']:+.1f} ± {100 * row['diff_ci95']:.1f}"
        x = bar.get_x() + bar.get_width() / 2
        ax.annotate(text, (x, row["val_acc"] + row["val_acc_ci95"]), ha="center", va="bottom", fontsize=8)
    top = float(np.nanmax(done["val_acc"] + done["val_acc_ci95"])) if not done.empty else 1.0
    ax.set_ylim(0, min(1.0, top * 1.2) if top > 0 else 1.0)
    ax.set_ylabel("val_acc on the report episodes (± 95% CI)")
    ax.set_xlabel(title)
    ax.set_title("Best trial of each cell; Δ = points vs the best cell (orange), paired 95% CI", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_ablation_files(
    table: pd.DataFrame, title: str, episodes: str, searched: list[str], folder: Path
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / ABLATION_CSV, index=False)
    (folder / ABLATION_MD).write_text(ablation_markdown(table, title, episodes, searched))
    return [folder / ABLATION_CSV, folder / ABLATION_MD, plot_ablation(table, title, folder / ABLATION_PNG)]


def log_ablation(tracking_uri: str, parent_run_id: str, files: list[Path], best_cell: str | None) -> None:
    """The table, plot and report episodes on the ablation's parent run (a rerun overwrites the same paths)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    for path in files:
        client.log_artifact(parent_run_id, str(path), artifact_path="results")
    if best_cell is not None:
        client.set_tag(parent_run_id, "fsl.best_cell", best_cell)
