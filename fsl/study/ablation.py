"""ProtoNet ablations, the seed report's tables as studies: which distance, how many shots, which training way.

Every cell of a table (a distance, a K, a training way) gets the same number of trials, each cell its own
small Optuna search over the other hyperparameters (fsl.study.cell_search), and no early stopping, so cells
are compared on equal budgets. Each cell's best trial is then evaluated on one set of report episodes that
no trial was selected on: the same episodes for every cell, so that differences are paired.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fsl.data.decoded import DecodedSplit
from fsl.data.episodes import FixedEpisodes, check_episode_fits, draw_fixed_episodes
from fsl.data.study_data import EpisodeShape, load_study_data
from fsl.models.distances import DISTANCES
from fsl.study.protonet_study import paper_recipe_point, untrained_accuracy
from fsl.study.runner import Cells, StudyOptions, StudyOutcome, StudyPlan, check_options
from fsl.study.space import Dimension, apply_params, default_space, parse_scalar
from fsl.train.config import ProtoNetConfig
from fsl.train.entries import run_protonet
from fsl.train.evaluate import evaluate_episodes

# Report episodes are drawn from their own seed stream, apart from the episodes trials are selected on.
REPORT_SEED_OFFSET = 7919


@dataclass(frozen=True)
class Ablation:
    name: str  # --study
    key: str  # the ProtoNetConfig field that differs between cells
    values: tuple[Any, ...]  # the default cells
    label: str  # a cell's name, formatted from its config
    title: str  # the table's first column

    def cells(self, values: tuple[Any, ...] | None = None) -> Cells:
        return Cells(self.key, tuple(values or self.values), self.label)


ABLATIONS = {
    "distance": Ablation("distance", "distance", DISTANCES, "{distance}", "distance"),
    "shots": Ablation("shots", "k_shot", (1, 5, 10), "{k_shot}-shot", "shots (K)"),
    # The anchors: training way matters most at 1-shot (30-way training gives the paper's 49%, 5-way ~45%).
    "ways": Ablation("ways", "train_way", (5, 20, 30), "{train_way}-way", "training way"),
}


def ablation_space() -> dict[str, Dimension]:
    """lr and augmentation: what every cell searches by default (the cell fixes the dimension it studies)."""
    space = default_space()
    return {name: space[name] for name in ("lr", "augment")}


@dataclass(frozen=True)
class AblationPlan:
    study: StudyPlan
    ablation: Ablation
    report_episodes: FixedEpisodes  # drawn at the largest K; every cell is evaluated on them
    val: DecodedSplit


def parse_cells(ablation: Ablation, text: str | None) -> tuple[Any, ...] | None:
    """'5,20,30' -> (5, 20, 30), typed as the ablation's config field."""
    if text is None:
        return None
    kind = ProtoNetConfig.field_types()[ablation.key]
    values = tuple(dict.fromkeys(parse_scalar(kind, ablation.key, part, "--cells") for part in text.split(",")))
    if len(values) < 2:
        raise ValueError(f"--cells {text}: an ablation compares at least 2 values of {ablation.key}")
    return values


def plan_ablation(
    data_root: Path,
    base: ProtoNetConfig,
    ablation: Ablation,
    cell_values: tuple[Any, ...] | None,
    params: list[str],
    options: StudyOptions,
    report_episodes: int,
    cache_dir: Path | None = None,
) -> AblationPlan:
    """Check everything and load the data before Ray starts; ValueError / FileNotFoundError on bad input."""
    check_options(options)
    cells = ablation.cells(cell_values)
    for text in params:
        if text.partition("=")[0].strip() == ablation.key:
            raise ValueError(
                f"--param {text}: --study {ablation.name} varies {ablation.key}; choose its values with --cells"
            )
    if report_episodes < 1:
        raise ValueError(f"--report-episodes must be >= 1, got {report_episodes}")
    base, space = apply_params(base, ablation_space(), params)
    for value in cells.values:
        try:
            base.replace(**{cells.key: value})
        except ValueError as err:
            raise ValueError(f"--cells: {err}") from None
    if not space:
        # Nothing searched: each cell is one fixed configuration, and more trials would repeat it.
        options = replace(options, num_samples=1)
    k_max = max(cells.values) if cells.key == "k_shot" else base.k_shot
    max_way = max(cells.values) if cells.key == "train_way" else base.train_way
    data = load_study_data(
        data_root,
        base.image_size,
        EpisodeShape(base.n_way, k_max, base.n_query),
        max_train_way=base.n_way,
        n_eval_episodes=base.eval_episodes,
        seed=base.seed,
        cache_dir=cache_dir,
    )
    try:
        check_episode_fits(
            data.train.labels, data.train.class_names, max_way, k_max, base.n_query, str(data.root / "train")
        )
    except ValueError as err:
        raise ValueError(f"train_way={max_way}, k_shot={k_max}: {err}") from None
    report = draw_fixed_episodes(
        data.val.labels, base.n_way, k_max, base.n_query, report_episodes, base.seed + REPORT_SEED_OFFSET
    )
    shots = "K-shot (each cell's K)" if cells.key == "k_shot" else f"{base.k_shot}-shot"
    evaluation = f"{base.n_way}-way {shots}, {len(data.val_episodes)} fixed episodes"
    smallest_k = min(cells.values) if cells.key == "k_shot" else base.k_shot
    study = StudyPlan(
        options=options,
        base=base.replace(**{cells.key: cells.values[0]}),
        space=space,
        entry=run_protonet,
        shared={"train": data.train, "val": data.val, "val_episodes": data.val_episodes},
        metric="val_acc",
        evaluation=evaluation,
        data_root=data.root,
        baseline=untrained_accuracy(base.replace(k_shot=smallest_k), data),
        baseline_name="untrained Conv4",
        initial_points=tuple(paper_recipe_point(base, space)),
        cells=cells,
        early_stopping=False,  # cells differ in accuracy level; one ASHA across them would starve the low ones
        study_params={
            "ablation": ablation.name,
            "cells": ", ".join(map(str, cells.values)),
            "episodes_file": str(data.episodes_file),
            "report_episodes": report_episodes,
        },
        tags={"fsl.ablation": ablation.name},
    )
    return AblationPlan(study, ablation, report, data.val)


@dataclass(frozen=True)
class CellResult:
    cell: str
    value: Any
    trials: int
    best: dict[str, Any] | None  # the cell's best trial's row of the results table
    accuracies: np.ndarray | None  # its best model on the report episodes, per episode


def best_per_cell(table: pd.DataFrame, cells: Cells, metric: str) -> dict[Any, tuple[int, dict[str, Any] | None]]:
    """For every cell value: its number of trials and its best finished trial (None when none finished); a
    failed trial is not one, whatever it scored before it failed (it logged no best model)."""
    key = f"best_{metric}"
    out: dict[Any, tuple[int, dict[str, Any] | None]] = {}
    for value in cells.values:
        rows = table[table[cells.key] == value] if not table.empty else table
        finished = rows[rows["status"] != "ERROR"].dropna(subset=[key]) if not rows.empty else rows
        best = finished.sort_values(key, ascending=False).iloc[0].to_dict() if not finished.empty else None
        out[value] = (len(rows), best)
    return out


def evaluate_cells(plan: AblationPlan, outcome: StudyOutcome) -> list[CellResult]:
    """Each cell's best model (its MLflow checkpoint) on the shared report episodes."""
    from fsl.tracking.uri import resolve_checkpoint
    from fsl.train.protonet_method import load_best_model

    study = plan.study
    cells = study.cells
    assert cells is not None
    images = torch.from_numpy(plan.val.images)
    results = []
    for value, (trials, best) in best_per_cell(outcome.table, cells, study.metric).items():
        accuracies = None
        if best is not None:
            uri = f"runs:/{best['mlflow_run_id']}/checkpoint/best_model.pt"
            model, cfg, _ = load_best_model(resolve_checkpoint(uri, study.options.tracking_uri))
            episodes = plan.report_episodes.with_shots(cfg.k_shot)
            accuracies = evaluate_episodes(model, images, episodes).accuracies
        name = cells.name({**study.base.to_dict(), cells.key: value})
        results.append(CellResult(name, value, trials, best, accuracies))
    return results
