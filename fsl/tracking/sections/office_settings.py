"""The Office-Home settings study's section: one row per setting (A-E and the other pre-trainings' C-/E-)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsl.tracking.report_section import ReportSection, register_section
from fsl.tracking.settings_table import SETTINGS_PNG, plot_settings, settings_markdown, settings_table
from fsl.tracking.study_reader import StudyRuns


def settings_results(runs: StudyRuns) -> pd.DataFrame:
    """The trials in the shape fsl.tracking.settings_table reads (setting, pretraining, finetune, best first)."""
    trials = runs.trials
    if "tags.fsl.setting" not in trials:
        return pd.DataFrame()
    frame = trials.dropna(subset=["tags.fsl.setting"])

    def column(name: str) -> pd.Series:
        for key in (f"tags.fsl.{name}", f"params.{name}"):
            if key in frame:
                return frame[key]
        return pd.Series(["?"] * len(frame), index=frame.index)

    return pd.DataFrame(
        {
            "setting": frame["tags.fsl.setting"],
            "pretraining": column("pretraining"),
            "finetune": column("finetune"),
            runs.value_key: frame[runs.value_key],
            runs.ci_key: frame[runs.ci_key],
            "trial_id": frame["trial_id"],
        }
    )


def settings_section(runs: StudyRuns, out: Path, files: list[Path]) -> list[str]:
    settings = settings_results(runs)
    if settings.empty:
        return []
    table = settings_table(settings.sort_values(runs.value_key, ascending=False, na_position="last"), runs.metric)
    lines = ["## Settings A–E", ""]
    if table.empty:
        return [*lines, "No setting has a scored trial yet."]
    files.append(plot_settings(table, out / SETTINGS_PNG, runs.metric))
    return [*lines, settings_markdown(table, runs.metric).rstrip(), "", f"![Settings]({SETTINGS_PNG})"]


register_section(ReportSection("office_settings", 20, (SETTINGS_PNG,), settings_section))
