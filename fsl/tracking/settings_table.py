"""The seed report's table of the Office-Home settings A-E (setting, pre-training, fine-tuning, validation
accuracy), from a settings study's results, and its bar chart."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsl.train.method import SUPERVISED
from fsl.train.registry import pretraining_methods, self_supervised_methods

SETTINGS_CSV, SETTINGS_MD, SETTINGS_PNG = "settings.csv", "settings.md", "settings.png"
PRETRAINING_TEXT = {
    "none": "none (random init)",
    **{
        name: f"{m.label} (pre-training data's labels)"
        if m.pretrains == SUPERVISED
        else f"{m.label} (pre-training data, no labels)"
        for name, m in pretraining_methods().items()
    },
}
SELF_SUPERVISED_COLOURS = [("orange", "#dd8452"), ("green", "#55a868"), ("purple", "#8172b3"), ("brown", "#937860")]
# Bar colours: grey no pre-training, blue supervised, then one per self-supervised method.
COLOURS = {
    "none": ("grey", "#9e9e9e"),
    **{name: ("blue", "#4c72b0") for name in pretraining_methods(SUPERVISED)},
    **dict(
        zip(
            self_supervised_methods(),
            [("orange", "#dd8452"), ("green", "#55a868"), ("purple", "#8172b3")],
            strict=False,
        )
    ),
}
FINETUNE_TEXT = {"full": "full network", "frozen": "classifier only (backbone frozen)"}


def settings_table(results: pd.DataFrame, metric: str = "val_acc") -> pd.DataFrame:
    """One row per setting: its best trial's accuracy and ci95 (results are sorted best first); a failed trial's
    epochs before its failure do not count."""
    key = f"best_{metric}"
    if "status" in results:
        results = results[results["status"] != "ERROR"]
    finished = results.dropna(subset=[key])
    rows = []
    for setting, trials in finished.groupby("setting", sort=True):
        best = trials.iloc[0]
        rows.append(
            {
                "setting": setting,
                "pretraining": best["pretraining"],
                "finetune": best["finetune"],
                metric: best[key],
                f"{metric}_ci95": best[f"{key}_ci95"],
                "trials": len(trials),
                "best_trial": best["trial_id"],
            }
        )
    return pd.DataFrame(rows)


def settings_markdown(table: pd.DataFrame, metric: str = "val_acc") -> str:
    lines = [
        "| Setting | Pre-training | Fine-tuning | Validation accuracy |",
        "|---|---|---|---|",
    ]
    for _, row in table.iterrows():
        lines.append(
            f"| {row['setting']} | {PRETRAINING_TEXT.get(row['pretraining'], row['pretraining'])} | "
            f"{FINETUNE_TEXT.get(row['finetune'], row['finetune'])} | "
            f"{row[metric]:.4f} ± {row[f'{metric}_ci95']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot_settings(table: pd.DataFrame, path: Path, metric: str = "val_acc") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = [COLOURS.get(p, ("red", "#c44e52"))[1] for p in table["pretraining"]]
    hatches = ["" if f == "full" else "//" for f in table["finetune"]]
    bars = ax.bar(table["setting"], table[metric], yerr=table[f"{metric}_ci95"], capsize=4, color=colours)
    for bar, hatch in zip(bars, hatches, strict=True):
        bar.set_hatch(hatch)
    for bar, value in zip(bars, table[metric], strict=True):
        ax.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(f"{metric} (± 95% CI)")
    ax.set_ylim(0, min(1.0, max(table[metric].max() * 1.25, 0.1)))
    shown = dict.fromkeys(table["pretraining"])
    legend = ", ".join(f"{COLOURS[p][0]} {PRETRAINING_TEXT[p].split(' (')[0]}" for p in shown if p in COLOURS)
    ax.set_title(f"Settings: {legend}; hatched = frozen backbone", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_settings_table(results: pd.DataFrame, metric: str, folder: Path) -> list[Path]:
    table = settings_table(results, metric)
    if table.empty:
        return []
    table.to_csv(folder / SETTINGS_CSV, index=False)
    (folder / SETTINGS_MD).write_text(settings_markdown(table, metric))
    return [folder / SETTINGS_CSV, folder / SETTINGS_MD, plot_settings(table, folder / SETTINGS_PNG, metric)]
