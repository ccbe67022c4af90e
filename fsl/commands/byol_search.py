#!/usr/bin/env python
"""Hyperparameter study of BYOL self-supervised pre-training (ResNet) on Ray Train + Tune + Optuna + ASHA,
tracked in MLflow.

Every epoch each trial reports probe_acc: a k-NN probe of its online backbone's frozen features on the
labelled val split (leave-one-out), the study's objective; byol_loss and z_std (the spread of the normalised
projections: near 0 means collapse) are logged beside it. The best backbone of every trial is an MLflow
artifact (checkpoint/best_model.pt) that studies/office_settings.py takes as --ssl-checkpoint.

With no arguments it runs on the generated demo data (ResNet18, 32 px) with a local Ray and a local MLflow
store; --data takes a folder in the HW4 layout (train.csv, val.csv) or an ImageFolder tree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsl.data.demo import ensure_demo_dataset
from fsl.models.resnet import ARCHITECTURES
from fsl.study.cli import add_compute_args, add_output_args, add_search_args, fail, print_outcome, study_options
from fsl.study.pretraining_study import describe_data, plan_byol_study
from fsl.study.runner import run_study
from fsl.study.space import byol_space
from fsl.study.study_file import parse_study_args
from fsl.study.waiting import StudyWaitedTooLong
from fsl.train.config import BYOLConfig

STUDY_PREFIX = "byol"
# Sized for a 2-core laptop: 8 trials, up to 6 epochs of 30 steps each, in about 10 minutes.
DEMO = {"image_size": 32, "arch": "resnet18", "epochs": 6, "steps_per_epoch": 30, "num_samples": 8}
FULL = {"image_size": 84, "arch": "resnet50", "epochs": 100, "steps_per_epoch": 0, "num_samples": 16}


def build_parser() -> argparse.ArgumentParser:
    space = ", ".join(f"{n} {d.describe()}" for n, d in byol_space().items())
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"Default search space: {space}.\n"
            "--param NAME=VALUE fixes a dimension or sets another field (e.g. --param tau=0.996); NAME=LOW..HIGH "
            "narrows a range;\nNAME=A,B,C searches a list. Other fields: head_width, projection_dim, optimizer "
            "(adam|sgd), momentum,\nweight_decay, schedule (cosine|step|none), sync_batchnorm; for GPUs precision "
            "(fp32|bf16) and channels_last."
        ),
    )
    data = parser.add_argument_group("data and model")
    data.add_argument(
        "--data", type=Path, default=None, help="pre-training data (HW4 layout or ImageFolder; default: the demo data)"
    )
    data.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="images are resized to S x S (default 32 on the demo, 84 otherwise)",
    )
    data.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default=None,
        help="backbone (default resnet18 on the demo data, resnet50 otherwise)",
    )
    search = add_search_args(
        parser, None, "trials in the study (default 8 on the demo data, 16 otherwise)", warm_start=True
    )
    search.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial, the ASHA maximum (default 6 on the demo, 100 else)"
    )
    search.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="optimizer steps per epoch (default 30 on the demo; otherwise one pass over the images)",
    )
    search.add_argument(
        "--grace-period", type=int, default=None, help="ASHA: epochs before a trial can be stopped (default epochs/4)"
    )
    add_compute_args(parser)
    add_output_args(parser, experiment="byol", prefix=STUDY_PREFIX)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_study_args(build_parser(), argv, "fsl-byol-search")
        demo = args.data is None
        defaults = DEMO if demo else FULL
        image_size = args.image_size or defaults["image_size"]
        data_root = ensure_demo_dataset(seed=0, image_size=image_size) if demo else args.data
        if args.num_samples is None:
            args.num_samples = defaults["num_samples"]
        options = study_options(args, STUDY_PREFIX, grace_period=args.grace_period)
        base = BYOLConfig(
            arch=args.arch or defaults["arch"],
            epochs=args.epochs or defaults["epochs"],
            steps_per_epoch=defaults["steps_per_epoch"] if args.steps_per_epoch is None else args.steps_per_epoch,
            image_size=image_size,
            seed=args.seed,
        )
        print(f"Preparing study {options.study_name!r}: data {data_root}")
        plan = plan_byol_study(data_root, base, args.param, options)
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    print(describe_data(plan))
    print(f"Untrained {plan.base.arch}: probe_acc {plan.baseline[0]:.4f} ± {plan.baseline[1]:.4f}")
    searched = ", ".join(f"{n} {d.describe()}" for n, d in plan.space.items()) or "nothing (all fixed)"
    print(f"Searching {searched}; {options.num_samples} trials x up to {plan.base.epochs} epochs")
    try:
        outcome = run_study(plan)
    except ValueError as err:  # resource checks against the running cluster
        return fail(err)
    except StudyWaitedTooLong as err:
        return fail(err, status=3)
    code = print_outcome(plan, outcome)
    if outcome.best is not None and outcome.best.get("mlflow_run_id"):
        print(
            f"Best backbone: runs:/{outcome.best['mlflow_run_id']}/checkpoint/best_model.pt "
            "(studies/office_settings.py --ssl-checkpoint takes it)"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
