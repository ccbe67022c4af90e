"""Planning a ProtoNet study: read and check the data and episodes, the search space and the untrained
baseline, all before Ray starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsl.data.episodes import check_episode_fits
from fsl.data.study_data import EpisodeShape, StudyData, load_study_data
from fsl.study.runner import StudyOptions, StudyPlan, check_options
from fsl.study.space import Dimension, apply_params, default_space
from fsl.train.config import ProtoNetConfig
from fsl.train.entries import run_protonet
from fsl.train.evaluate import evaluate_episodes
from fsl.train.protonet_method import build_model

# The ProtoNet paper's recipe, evaluated first so every study measures the known-good baseline.
PAPER_RECIPE = {"lr": 1e-3, "augment": "none", "head_depth": 0, "distance": "euclidean", "train_way": 30}


def max_value(base: ProtoNetConfig, space: dict[str, Dimension], name: str) -> Any:
    if name in space:
        return max(space[name].values_to_check())
    return getattr(base, name)


def untrained_accuracy(base: ProtoNetConfig, data: StudyData) -> tuple[float, float]:
    """An untrained Conv4 (no head, Euclidean) on the same fixed episodes: the floor a study must beat."""
    torch.manual_seed(base.seed)
    model = build_model(base.replace(head_depth=0, distance="euclidean"))
    episodes = data.val_episodes.with_shots(base.k_shot)
    result = evaluate_episodes(model, torch.from_numpy(data.val.images), episodes)
    return result.mean, result.ci95


def paper_recipe_point(base: ProtoNetConfig, space: dict[str, Dimension]) -> list[dict[str, Any]]:
    if not space:
        return []
    point = {}
    for name, dim in space.items():
        value = PAPER_RECIPE.get(name, getattr(base, name))
        if name == "train_way" and dim.kind == "int":
            value = int(np.clip(value, dim.low, dim.high))
        if not dim.contains(value):
            return []
        point[name] = value
    return [point]


def plan_study(
    data_root: Path,
    base: ProtoNetConfig,
    params: list[str],
    options: StudyOptions,
    cache_dir: Path | None = None,
) -> StudyPlan:
    """Validate everything and load the data; raises ValueError / FileNotFoundError with a one-line message."""
    check_options(options)
    base, space = apply_params(base, default_space(), params)
    data = load_study_data(
        data_root,
        base.image_size,
        EpisodeShape(base.n_way, base.k_shot, base.n_query),
        max_train_way=base.n_way,
        n_eval_episodes=base.eval_episodes,
        seed=base.seed,
        cache_dir=cache_dir,
    )
    n_train_classes = len(data.train.class_names)
    if "train_way" in space and space["train_way"].kind == "int" and space["train_way"].high > n_train_classes:
        # The default range ends at 30-way; smaller data sets search up to their number of classes.
        space["train_way"] = Dimension(
            "train_way", "int", min(space["train_way"].low, n_train_classes), n_train_classes
        )
    way = int(max_value(base, space, "train_way"))
    try:
        check_episode_fits(
            data.train.labels, data.train.class_names, way, base.k_shot, base.n_query, str(data.root / "train")
        )
    except ValueError as err:
        raise ValueError(f"train_way={way}: {err}") from None
    return StudyPlan(
        options=options,
        base=base,
        space=space,
        entry=run_protonet,
        shared={"train": data.train, "val": data.val, "val_episodes": data.val_episodes},
        metric="val_acc",
        evaluation=f"{base.n_way}-way {base.k_shot}-shot, {len(data.val_episodes)} fixed episodes",
        data_root=data.root,
        baseline=untrained_accuracy(base, data),
        baseline_name="untrained Conv4",
        initial_points=tuple(paper_recipe_point(base, space)),
        study_params={"episodes_file": str(data.episodes_file)},
    )


def describe_data(plan: StudyPlan) -> str:
    train, val, episodes = plan.shared["train"], plan.shared["val"], plan.shared["val_episodes"]
    base = plan.base
    return (
        f"Data: {len(train)} train images / {len(train.class_names)} classes, {len(val)} val images / "
        f"{len(val.class_names)} classes at {base.image_size} px; {len(episodes)} fixed "
        f"{episodes.n_way}-way {episodes.k_shot}-shot episodes from {plan.study_params['episodes_file']}"  # type: ignore[attr-defined]
    )
