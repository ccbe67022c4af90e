"""Planning the Office-Home settings study: five ways to train a classifier, each on the same budget.

    A  no pre-training      full fine-tuning
    B  supervised           full fine-tuning
    C  BYOL                 full fine-tuning
    D  supervised           frozen backbone, classifier only
    E  BYOL                 frozen backbone, classifier only

C and E use the first registered self-supervised method (BYOL, as the course's study does); every other one
adds its own pair, named after it: C-simclr and E-simclr for SimCLR (fsl.train.registry).

Each setting runs `num_samples` trials (a fixed configuration for one, a random search over lr for more, the
same for every setting so the comparison is fair), with no early stopping. The backbones come from
checkpoints the user has, or from pre-training studies run first (see studies/office_settings.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from fsl.data.study_data import load_labelled_splits
from fsl.study.runner import StudyOptions, StudyPlan, check_options
from fsl.study.space import Dimension, apply_params
from fsl.train.config import ClassifierConfig
from fsl.train.method import SUPERVISED
from fsl.train.registry import MethodEntry, pretraining_methods, self_supervised_methods


def all_settings() -> dict[str, tuple[str, str]]:
    """Every setting's (pre-training, fine-tuning), from the registered pre-training methods."""
    supervised = next(iter(pretraining_methods(SUPERVISED)))
    first, *others = self_supervised_methods()
    options = {
        "A": ("none", "full"),
        "B": (supervised, "full"),
        "C": (first, "full"),
        "D": (supervised, "frozen"),
        "E": (first, "frozen"),
    }
    for name in others:
        options.update({f"C-{name}": (name, "full"), f"E-{name}": (name, "frozen")})
    return options


SETTINGS = all_settings()
DEFAULT_SETTINGS = ("A", "B", "C", "D", "E")  # the course's study


def parse_settings(text: str) -> tuple[str, ...]:
    """'A,c,E-simclr' -> ('A', 'C', 'E-simclr'); 'C-byol' is C. An unknown setting is an error naming the flag."""
    first = next(iter(self_supervised_methods()))
    chosen = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        letter, _, method = part.partition("-")
        chosen.append(letter.upper() + (f"-{method.lower()}" if method and method.lower() != first else ""))
    chosen = list(dict.fromkeys(chosen))
    unknown = [s for s in chosen if s not in SETTINGS]
    if unknown or not chosen:
        raise ValueError(f"--settings {text}: expected some of {', '.join(SETTINGS)} separated by commas")
    return tuple(chosen)


def setting_pretraining(config: dict[str, Any]) -> str:
    return SETTINGS[config["setting"]][0]


def setting_finetune(config: dict[str, Any]) -> str:
    return SETTINGS[config["setting"]][1]


def backbones_needed(chosen: tuple[str, ...]) -> set[str]:
    return {SETTINGS[s][0] for s in chosen} - {"none"}


def plan_office_study(
    data_root: Path,
    base: ClassifierConfig,
    params: list[str],
    options: StudyOptions,
    chosen: tuple[str, ...] = DEFAULT_SETTINGS,
    backbones: dict[str, dict[str, torch.Tensor]] | None = None,
    backbone_sources: dict[str, str] | None = None,
    cache_dir: Path | None = None,
) -> StudyPlan:
    """Validate everything and load the data; backbones still missing are filled in by `with_backbones`."""
    check_options(options)
    # One trial per setting trains at the default lr; more search lr at random, as many per setting.
    space = {"lr": Dimension("lr", "loguniform", 1e-4, 1e-2)} if options.num_samples > 1 else {}
    base, space = apply_params(base, space, params)
    root, train, val = load_labelled_splits(data_root, base.image_size, cache_dir)
    val.labels_in(train.class_names, str(root / "val.csv") if (root / "val.csv").is_file() else str(root / "val"))
    if base.batch_size > len(train):
        raise ValueError(f"batch_size={base.batch_size}: larger than the {len(train)} images in {root / 'train'}")
    sources = backbone_sources or {}
    return StudyPlan(
        options=options,
        base=base,
        space=space,
        entry=MethodEntry("supervised"),
        shared={"train": train, "val": val, "backbones": dict(backbones or {})},
        metric="val_acc",
        evaluation=f"top-1 on {len(val)} val images, {len(train.class_names)} classes",
        data_root=root,
        grid={"setting": chosen},
        derived={"pretraining": setting_pretraining, "finetune": setting_finetune},
        early_stopping=False,
        study_params={f"{name}_checkpoint": source for name, source in sources.items()},
        tags={"fsl.method": "settings"},
        trial_tags=("setting", "pretraining", "finetune"),
    )


def with_backbones(
    plan: StudyPlan, backbones: dict[str, dict[str, torch.Tensor]], sources: dict[str, str]
) -> StudyPlan:
    """The plan with pre-trained backbones added (from the pre-training studies run before it)."""
    shared = {**plan.shared, "backbones": {**plan.shared["backbones"], **backbones}}
    params = {**plan.study_params, **{f"{name}_checkpoint": source for name, source in sources.items()}}
    return dataclasses.replace(plan, shared=shared, study_params=params)
