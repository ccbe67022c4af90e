"""Planning a pre-training study: a self-supervised method's (BYOL, SimCLR: any registered one) search or fixed
run, and the fixed supervised pre-training beside it. Reads and checks the pre-training data, the search space
and the untrained baseline, all before Ray starts.

A self-supervised method uses the training split without its labels; the val split, with its labels, scores
each epoch through the k-NN probe (leave-one-out on the frozen backbone's features)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fsl.data.decoded import DecodedSplit
from fsl.data.study_data import load_labelled_splits
from fsl.models.resnet import build_backbone
from fsl.study.runner import StudyOptions, StudyPlan, check_options
from fsl.study.space import Dimension, apply_params
from fsl.train.config import BYOLConfig, ClassifierConfig, SelfSupervisedConfig
from fsl.train.entries import Entry
from fsl.train.evaluate import binomial_ci95
from fsl.train.parallel import Placement, to_device
from fsl.train.probe import extract_features, knn_accuracy
from fsl.train.registry import MethodEntry, method_named


def untrained_probe(arch: str, probe: DecodedSplit, k: int, seed: int) -> tuple[float, float]:
    """The k-NN probe of a randomly initialised backbone: what pre-training has to beat."""
    torch.manual_seed(seed)
    device = torch.device("cpu")
    features = extract_features(build_backbone(arch), to_device(probe.images, device), Placement(device))
    acc = knn_accuracy(features, torch.as_tensor(probe.labels), k)
    return binomial_ci95(acc, len(probe))


def _check_probe(probe: DecodedSplit, k: int, where: str) -> None:
    if len(probe.class_names) < 2 or len(probe) < k + 1:
        raise ValueError(
            f"{where}: the probe needs at least 2 classes and more than probe_k={k} labelled images, "
            f"found {len(probe.class_names)} classes and {len(probe)} images"
        )


def _check_batch(batch_size: int, n_train: int, workers: int, where: str) -> None:
    if batch_size > n_train:
        raise ValueError(f"batch_size={batch_size}: larger than the {n_train} training images in {where}")
    if batch_size // workers < 2:
        raise ValueError(
            f"batch_size={batch_size} with --workers-per-trial {workers}: fewer than 2 images per worker for BatchNorm"
        )


def plan_byol_study(
    data_root: Path,
    base: BYOLConfig,
    params: list[str],
    options: StudyOptions,
    space: dict[str, Dimension] | None = None,
    cache_dir: Path | None = None,
) -> StudyPlan:
    """A BYOL study (studies/byol_search.py): plan_self_supervised_study for BYOL."""
    return plan_self_supervised_study("byol", data_root, base, params, options, space, cache_dir)


def plan_self_supervised_study(
    name: str,
    data_root: Path,
    base: SelfSupervisedConfig,
    params: list[str],
    options: StudyOptions,
    space: dict[str, Dimension] | None = None,
    cache_dir: Path | None = None,
) -> StudyPlan:
    """Validate everything and load the data; raises ValueError / FileNotFoundError with a one-line message.
    `space` defaults to the method's search space; {} makes one fixed run (the settings study's pre-training).
    A search evaluates the method's known-good recipe first when the space holds it."""
    check_options(options)
    method = method_named(name)
    base, space = apply_params(base, method.search_space(0) if space is None else space, params)
    root, train, probe = load_labelled_splits(data_root, base.image_size, cache_dir)
    _check_probe(probe, base.probe_k, str(root / "val"))
    sizes = space["batch_size"].values_to_check() if "batch_size" in space else [base.batch_size]
    for size in sizes:
        _check_batch(int(size), len(train), options.resources.workers, str(root / "train"))
    initial = {key: method.recipe[key] for key in space if key in method.recipe}
    recipe_fits = len(initial) == len(space) and all(space[n].contains(v) for n, v in initial.items())
    return _probe_scored_plan(
        options,
        base,
        space,
        MethodEntry(name),
        root,
        train,
        probe,
        initial_points=(initial,) if space and recipe_fits else (),
        early_stopping=bool(space) and options.num_samples > 1,  # nothing to stop early in a single run
        tags={"fsl.method": name},
    )


def plan_supervised_pretraining(
    data_root: Path,
    base: ClassifierConfig,
    params: list[str],
    options: StudyOptions,
    cache_dir: Path | None = None,
) -> StudyPlan:
    """One fixed supervised run on the pre-training data's labels, scored by the same k-NN probe as BYOL."""
    check_options(options)
    base, _ = apply_params(base, {}, params)
    root, train, probe = load_labelled_splits(data_root, base.image_size, cache_dir)
    _check_probe(probe, base.probe_k, str(root / "val"))
    _check_batch(base.batch_size, len(train), options.resources.workers, str(root / "train"))
    return _probe_scored_plan(
        options,
        base,
        {},
        MethodEntry("supervised"),
        root,
        train,
        probe,
        early_stopping=False,
        tags={"fsl.method": "supervised"},
    )


def _probe_scored_plan(
    options: StudyOptions,
    base: SelfSupervisedConfig | ClassifierConfig,
    space: dict[str, Dimension],
    entry: Entry,
    root: Path,
    train: DecodedSplit,
    probe: DecodedSplit,
    **plan_fields: Any,
) -> StudyPlan:
    """A pre-training plan: trains on `train`, scores every epoch by the k-NN probe on `probe`, against the
    probe of an untrained backbone."""
    return StudyPlan(
        options=options,
        base=base,
        space=space,
        entry=entry,
        shared={"train": train, "probe": probe},
        metric="probe_acc",
        evaluation=f"{base.probe_k}-NN probe on {len(probe)} val images, {len(probe.class_names)} classes",
        data_root=root,
        baseline=untrained_probe(base.arch, probe, base.probe_k, base.seed),
        baseline_name=f"untrained {base.arch}",
        **plan_fields,
    )


def describe_data(plan: StudyPlan) -> str:
    train, probe = plan.shared["train"], plan.shared["probe"]
    return (
        f"Data: {len(train)} training images (labels unused by BYOL), probe {len(probe)} val images / "
        f"{len(probe.class_names)} classes, at {plan.base.image_size} px from {plan.data_root}"
    )
