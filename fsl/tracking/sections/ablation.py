"""An ablation's section: the best trial of each cell (tag fsl.cell), and the ablation's own table."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fsl.tracking.report_section import ReportSection, format_value, register_section, table_markdown
from fsl.tracking.study_reader import StudyRuns


def cell_table(runs: StudyRuns) -> pd.DataFrame:
    """One row per fsl.cell: its number of trials and its best trial."""
    if "tags.fsl.cell" not in runs.trials:
        return pd.DataFrame()
    rows = []
    for cell, trials in runs.trials.dropna(subset=["tags.fsl.cell"]).groupby("tags.fsl.cell", sort=True):
        best = trials.iloc[0]  # trials are sorted best first
        value, ci95 = best[runs.value_key], best[runs.ci_key]
        rows.append(
            {
                "cell": cell,
                "trials": len(trials),
                runs.metric: "-" if not math.isfinite(value) else f"{value:.4f} ± {ci95:.4f}",
                "best trial": best["trial_id"],
                **{name: format_value(best.get(f"params.{name}")) for name in runs.shown if name != "cell"},
            }
        )
    return pd.DataFrame(rows)


def cells_section(runs: StudyRuns, out: Path, files: list[Path]) -> list[str]:
    cells = cell_table(runs)
    if cells.empty:
        return []
    return ["## Best trial per cell", "", table_markdown(cells).rstrip(), *_ablation_table(runs)]


def _ablation_table(runs: StudyRuns) -> list[str]:
    """The ablation's own table (each cell's best model on the shared report episodes, paired differences), as
    the study logged it on its parent run; the per-cell table above is the search's selection scores."""
    import tempfile

    import mlflow

    try:
        with tempfile.TemporaryDirectory() as folder:
            path = mlflow.artifacts.download_artifacts(
                f"runs:/{runs.parent_id}/results/ablation.md", dst_path=folder, tracking_uri=runs.tracking_uri
            )
            text = Path(path).read_text()
    except Exception:  # an ablation that has not finished has no table yet
        return ["", "The ablation's table on its report episodes is not on the parent run (not finished?)."]
    return ["", "## The ablation's table (report episodes, paired differences)", "", text.rstrip()]


register_section(ReportSection("ablation_cells", 30, (), cells_section))
