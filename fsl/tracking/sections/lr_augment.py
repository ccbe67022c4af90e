"""A search study's section: each trial's best metric against its learning rate, per augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsl.tracking.report_figures import plot_lr_augment
from fsl.tracking.report_section import ReportSection, format_value, register_section
from fsl.tracking.study_reader import StudyRuns

LR_AUGMENT_PNG = "lr.png"
AUGMENT_PARAMS = ("augment", "augment_strength")  # ProtoNet's policy names, BYOL's strength


def lr_augment_column(runs: StudyRuns) -> str | None:
    return next((f"params.{n}" for n in AUGMENT_PARAMS if f"params.{n}" in runs.trials), None)


def lr_augment_section(runs: StudyRuns, out: Path, files: list[Path]) -> list[str]:
    """Every search study's: how the best metric moves with the learning rate, per augmentation."""
    return ["## Accuracy against learning rate per augmentation", "", _lr_augment_text(runs, out, files)]


def _lr_augment_text(runs: StudyRuns, out: Path, files: list[Path]) -> str:
    trials = runs.trials
    scored = trials[np.isfinite(trials[runs.value_key].astype(float))] if not trials.empty else trials
    augment = lr_augment_column(runs)
    if "params.lr" not in runs.trials or augment is None:
        missing = " and ".join(
            n for n, present in (("lr", "params.lr" in runs.trials), ("augment", augment)) if not present
        )
        return f"Skipped: the trials have no {missing} parameter."
    if scored.empty:
        return "Skipped: no trial reported a score."
    lrs = scored["params.lr"]
    if lrs.nunique() < 2:
        return f"Skipped: every scored trial used lr {format_value(lrs.iloc[0])}."
    files.append(plot_lr_augment(runs, augment, out / LR_AUGMENT_PNG))
    return (
        f"Each trial's best `{runs.metric}` against its learning rate, coloured by "
        f"`{augment.removeprefix('params.')}`.\n\n![{runs.metric} against lr]({LR_AUGMENT_PNG})"
    )


register_section(ReportSection("lr_augment", 10, (LR_AUGMENT_PNG,), lr_augment_section))
