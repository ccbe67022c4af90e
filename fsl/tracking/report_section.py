"""The report's sections that only some studies have, and the Markdown helpers every section uses.

A kind of study adds what its report should show as a ReportSection in its own module under
fsl/tracking/sections/ (the Office-Home settings table, an ablation's cells, accuracy against learning rate),
registered there; fsl.tracking.report writes every registered section after the parts all studies share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsl.tracking.study_reader import StudyRuns
from fsl.tracking.summary import markdown_table


@dataclass(frozen=True)
class ReportSection:
    """write(runs, out, files) returns the section's Markdown lines, its "## " title first, or [] when the study
    has nothing for it; it appends each file it writes to files (logged with the report)."""

    name: str
    order: int  # where it goes among the registered sections, lowest first
    files: tuple[str, ...]  # every file it may write: a rerun removes them first, so none is stale
    write: Callable[[StudyRuns, Path, list[Path]], list[str]]


SECTIONS: dict[str, ReportSection] = {}


def register_section(section: ReportSection) -> ReportSection:
    SECTIONS[section.name] = section
    return section


def registered_sections() -> list[ReportSection]:
    import fsl.tracking.sections  # noqa: F401  (each study kind's module registers its section on import)

    return sorted(SECTIONS.values(), key=lambda section: section.order)


def format_value(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.3g}" if math.isfinite(value) else "-"
    return "-" if value is None else str(value)


def escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def table_markdown(table: pd.DataFrame) -> str:
    return markdown_table(table.map(lambda v: escape(v) if isinstance(v, str) else v))
