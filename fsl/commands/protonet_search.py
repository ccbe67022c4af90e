#!/usr/bin/env python
"""Hyperparameter study of a Prototypical Network (Conv4) on Ray Tune + Optuna + ASHA, tracked in MLflow.

With no arguments it runs on a generated demo data set (made on first use) with a local Ray and a local
MLflow store (sqlite:///<working folder>/mlflow.db). Point --data at a folder in the DLCV HW4 layout
(train.csv, val.csv, train/, val/, val_testcase.csv, val_testcase_gt.csv) or an ImageFolder tree
(train/<class>/*.jpg, val/<class>/*.jpg) to run on your own data; --address attaches to a Ray cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsl.data.demo import ensure_demo_dataset
from fsl.study.cli import add_compute_args, add_output_args, add_search_args, fail, print_outcome, study_options
from fsl.study.protonet_study import describe_data, plan_study
from fsl.study.runner import StudyPlan, run_study
from fsl.study.space import default_space
from fsl.study.study_file import parse_study_args
from fsl.study.waiting import StudyWaitedTooLong
from fsl.train.config import ProtoNetConfig

STUDY_PREFIX = "protonet"


def build_parser() -> argparse.ArgumentParser:
    space = ", ".join(f"{n} {d.describe()}" for n, d in default_space().items())
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"Default search space: {space}.\n"
            "--param NAME=VALUE fixes a dimension or sets another config field (e.g. --param lr=0.001 "
            "--param distance=euclidean);\nNAME=LOW..HIGH narrows a numeric range; NAME=A,B,C searches a list. "
            "Other fields: head_width, temperature,\nlearn_temperature, optimizer (adam|sgd), momentum, "
            "weight_decay, schedule (step|cosine|none), lr_step_epochs, lr_gamma;\nfor GPUs precision (fp32|bf16) "
            "and channels_last."
        ),
    )
    data = parser.add_argument_group("data and episodes")
    data.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data folder in the HW4 layout or an ImageFolder tree (default: the generated demo data)",
    )
    data.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="images are resized to S x S (default: 32 for the demo data, 84 otherwise)",
    )
    data.add_argument("--n-way", type=int, default=5, help="evaluation way (default 5; training way is train_way)")
    data.add_argument("--k-shot", type=int, default=1, help="support images per class (default 1)")
    data.add_argument("--n-query", type=int, default=15, help="query images per class (default 15)")
    data.add_argument(
        "--eval-episodes",
        type=int,
        default=600,
        help="fixed validation episodes per evaluation (default 600, as in HW4)",
    )

    search = add_search_args(parser, 12, "trials in the study (default 12)", warm_start=True)
    search.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per trial, the ASHA maximum (default 8 on the demo data, 20 otherwise)",
    )
    search.add_argument(
        "--episodes-per-epoch",
        type=int,
        default=None,
        help="training episodes per epoch (default 20 on the demo data, 100 otherwise)",
    )
    search.add_argument(
        "--grace-period",
        type=int,
        default=None,
        help="ASHA: epochs every trial runs before it can be stopped (default epochs/4)",
    )
    add_compute_args(parser)
    add_output_args(parser, experiment="protonet", prefix=STUDY_PREFIX)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        plan = plan_from_args(parse_study_args(build_parser(), argv, "fsl-protonet-search"))
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    return run_plan(plan)


def plan_from_args(args: argparse.Namespace) -> StudyPlan:
    """The checked study plan of the parsed flags (the demo data made on first use); raises ValueError or
    FileNotFoundError with a one-line message on bad input, before Ray starts."""
    demo = args.data is None
    image_size = args.image_size or (32 if demo else 84)
    data_root = ensure_demo_dataset(seed=0, image_size=image_size) if demo else args.data
    base = ProtoNetConfig(
        epochs=args.epochs or (8 if demo else 20),
        episodes_per_epoch=args.episodes_per_epoch or (20 if demo else 100),
        n_way=args.n_way,
        k_shot=args.k_shot,
        n_query=args.n_query,
        eval_episodes=args.eval_episodes,
        image_size=image_size,
        seed=args.seed,
    )
    options = study_options(args, STUDY_PREFIX, grace_period=args.grace_period)
    print(f"Preparing study {options.study_name!r}: data {data_root}")
    return plan_study(data_root, base, args.param, options)


def run_plan(plan: StudyPlan) -> int:
    """Run a planned study and print its summary; the exit status."""
    print_plan_header(plan)
    try:
        outcome = run_study(plan)
    except ValueError as err:  # resource checks against the running cluster
        return fail(err)
    except StudyWaitedTooLong as err:
        return fail(err, status=3)
    return print_outcome(plan, outcome)


def print_plan_header(plan: StudyPlan) -> None:
    print(describe_data(plan))
    print(f"Untrained Conv4 on these episodes: val_acc {plan.baseline[0]:.4f} ± {plan.baseline[1]:.4f}")
    searched = ", ".join(f"{n} {d.describe()}" for n, d in plan.space.items()) or "nothing (all fixed)"
    print(
        f"Searching {searched}; {plan.options.num_samples} trials x up to {plan.base.epochs} epochs of "
        f"{plan.base.episodes_per_epoch} episodes"
    )


if __name__ == "__main__":
    sys.exit(main())
