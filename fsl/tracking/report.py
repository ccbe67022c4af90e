"""A study's report rebuilt from its MLflow runs alone (fsl.tracking.study_reader): a header, the best trials,
the optimisation history and learning curves, and Optuna's hyperparameter importance for every study; then the
sections a kind of study registers for itself (fsl.tracking.sections: accuracy against learning rate per
augmentation, the Office-Home settings table, an ablation's cells).

Nothing here reads Ray's results folder, so a study run on another machine is reported from its tracking URI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsl.tracking.importance import describe_distribution, importance_params, param_importances
from fsl.tracking.report_figures import plot_curves, plot_history, plot_importance
from fsl.tracking.report_section import escape, format_value, registered_sections, table_markdown
from fsl.tracking.study_reader import StudyRuns

REPORT_MD, TRIALS_CSV = "report.md", "trials.csv"
HISTORY_PNG, CURVES_PNG, IMPORTANCE_PNG = "history.png", "curves.png", "importance.png"
ARTIFACT_DIR = "report"


def report_files() -> list[str]:
    """Every file a report may write: a rerun removes those of an earlier run first, so none is stale."""
    own = [REPORT_MD, TRIALS_CSV, HISTORY_PNG, CURVES_PNG, IMPORTANCE_PNG]
    return own + [name for section in registered_sections() for name in section.files]


def _epoch_text(epoch: Any) -> str:
    return "-" if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)) else str(int(epoch))


def status_text(row: pd.Series) -> str:
    status = str(row["status"]).lower()
    if row.get("stopped_early"):
        status += ", stopped early"
    error = row.get("tags.fsl.error")
    if isinstance(error, str) and error:
        status += f": {error[:80]}"
    return status


def best_trials_table(runs: StudyRuns) -> pd.DataFrame:
    """Every trial, best first: rank, start order, the searched values, the best metric ± ci95, epochs, status."""
    rows = []
    for rank, (_, row) in enumerate(runs.trials.iterrows(), start=1):
        value, ci95 = row[runs.value_key], row[runs.ci_key]
        score = "-" if not math.isfinite(value) else f"{value:.4f}" + (f" ± {ci95:.4f}" if math.isfinite(ci95) else "")
        epochs = row.get("params.epochs")
        rows.append(
            {
                "rank": rank,
                "trial": row["trial_id"],
                "start #": row["start_order"],
                **{name: format_value(row.get(f"params.{name}")) for name in runs.shown},
                runs.metric: score,
                "best epoch": _epoch_text(row["best_epoch"]),
                "epochs": f"{row['epochs_run']}/{epochs}" if epochs is not None else str(row["epochs_run"]),
                "status": status_text(row),
                "run id": row["run_id"],
            }
        )
    return pd.DataFrame(rows)


@dataclass
class Report:
    path: Path
    files: list[Path] = field(default_factory=list)  # report.md first, then the CSV and the figures


def write_report(runs: StudyRuns, out: Path, seed: int = 0) -> Report:
    """report.md with its figures beside it, and trials.csv (every trial's row as read from MLflow): the parts every
    study has, then each registered section that has something for this study."""
    out.mkdir(parents=True, exist_ok=True)
    for name in report_files():
        (out / name).unlink(missing_ok=True)
    files: list[Path] = []
    trials, metric = runs.trials, runs.metric
    lines = [f"# Study report: {runs.study_name}", ""]
    lines += _header(runs)

    lines += ["", "## Best trials", ""]
    if trials.empty:
        lines.append("The study has no trial runs.")
    else:
        trials.to_csv(out / TRIALS_CSV, index=False)
        files.append(out / TRIALS_CSV)
        lines.append(
            f"Every trial, best first, scored by its best epoch's `{metric}` (± the 95% interval of that epoch). "
            f"All columns as read from MLflow: [{TRIALS_CSV}]({TRIALS_CSV})."
        )
        lines += ["", table_markdown(best_trials_table(runs)).rstrip()]

    scored = trials[np.isfinite(trials[runs.value_key].astype(float))] if not trials.empty else trials
    lines += ["", "## Optimisation history", ""]
    if scored.empty:
        lines.append("No trial reported a score, so there is no history to draw.")
    else:
        files.append(plot_history(runs, out / HISTORY_PNG))
        first_best = int(scored["start_order"].iloc[0])
        lines.append(
            f"Each trial's best `{metric}` in the order the trials started, and the best so far. The best "
            f"({scored[runs.value_key].iloc[0]:.4f}) came from trial {first_best} of {len(trials)}."
        )
        lines += ["", f"![Optimisation history]({HISTORY_PNG})", ""]
        files.append(plot_curves(runs, out / CURVES_PNG))
        lines += [f"![{metric} per epoch]({CURVES_PNG})"]

    lines += ["", "## Hyperparameter importance", ""]
    importance = param_importances(trials, importance_params(runs), runs.value_key, runs.space, seed)
    if not importance.importances:
        lines.append(f"Not computed: {importance.note}.")
    else:
        files.append(plot_importance(importance, out / IMPORTANCE_PNG))
        text = (
            f"{importance.evaluator} of each searched parameter for `{metric}`, over the {importance.n_trials} "
            "scored trials rebuilt as an Optuna study (each scored by its best epoch)."
        )
        if trials["stopped_early"].any():
            text += " Trials stopped early by ASHA count with their shorter training."
        if importance.n_trials < 20:
            text += f" With {importance.n_trials} trials this is a rough guide."
        lines.append(text)
        table = pd.DataFrame(
            [
                {
                    "parameter": n,
                    "importance": f"{v:.3f}",
                    "distribution": describe_distribution(importance.distributions[n]),
                }
                for n, v in importance.importances.items()
            ]
        )
        lines += ["", table_markdown(table).rstrip(), "", f"![Hyperparameter importance]({IMPORTANCE_PNG})"]

    for section in registered_sections():
        section_lines = section.write(runs, out, files)
        if section_lines:
            lines += ["", *section_lines]

    (out / REPORT_MD).write_text("\n".join(lines) + "\n")
    return Report(out / REPORT_MD, [out / REPORT_MD, *files])


def _header(runs: StudyRuns) -> list[str]:
    trials, metric = runs.trials, runs.metric
    p, tags = runs.parent_params, runs.parent_tags
    lines = [
        f"- Tracking URI `{runs.tracking_uri}`, experiment `{runs.experiment_name}` ({runs.experiment_id}), "
        f"parent run `{runs.parent_id}` ({runs.parent_status.lower()})",
        f"- Metric `{metric}`, maximised" + (f", measured on {p['evaluation']}" if "evaluation" in p else ""),
    ]
    baseline = runs.parent_metrics.get(f"untrained_{metric}")
    if baseline is not None:
        ci = runs.parent_metrics.get(f"untrained_{metric}_ci95")
        lines.append(f"- Untrained model on the same data: {baseline:.4f}" + (f" ± {ci:.4f}" if ci is not None else ""))
    if "search_space" in p:
        lines.append(
            f"- Search space: {escape(p['search_space'])}" + (f"; grid {escape(p['grid'])}" if "grid" in p else "")
        )
    provenance = [f"data `{p.get('data', tags.get('fsl.dataset'))}`"] if "data" in p or "fsl.dataset" in tags else []
    provenance += [
        f"{label} `{tags[tag]}`"
        for label, tag in (("hash", "fsl.dataset_hash"), ("code", "fsl.code_version"), ("hardware", "fsl.hardware"))
        if tag in tags
    ]
    if provenance:
        lines.append("- " + ", ".join(provenance))
    if not trials.empty:
        counts = trials["status"].str.lower().value_counts().sort_index().to_dict()
        stopped = int(trials["stopped_early"].sum())
        text = f"- Trials: {len(trials)} ({', '.join(f'{v} {k}' for k, v in counts.items())}"
        text += f"; {stopped} stopped early)" if stopped else ")"
        lines.append(text)
    if runs.left_out:
        lines.append(
            f"- Left out: {runs.left_out} run(s) tagged fsl.orphaned (trials that Tune reran under another id "
            "after a crash; their rerun is in the table)"
        )
    return lines


def log_report(client: Any, parent_id: str, report: Report) -> None:
    """The report's files on the parent run under report/ (a rerun overwrites the same paths)."""
    for path in report.files:
        client.log_artifact(parent_id, str(path), artifact_path=ARTIFACT_DIR)
