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
import time
from pathlib import Path

from fsl.data.demo import ensure_demo_dataset
from fsl.distributed.protonet_train import TrialResources
from fsl.study.cli import fail, print_outcome
from fsl.study.runner import (
    StudySettings,
    latest_study,
    normalise_storage,
    plan_study,
    run_study,
)
from fsl.study.space import default_space
from fsl.tracking.uri import resolve_tracking_uri
from fsl.train.config import ProtoNetConfig

STUDY_PREFIX = "protonet"


def build_parser() -> argparse.ArgumentParser:
    space = ", ".join(f"{n} {d.describe()}" for n, d in default_space().items())
    parser = argparse.ArgumentParser(
        prog="protonet_search.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"Default search space: {space}.\n"
            "--param NAME=VALUE fixes a dimension or sets another config field (e.g. --param lr=0.001 "
            "--param distance=euclidean);\nNAME=LOW..HIGH narrows a numeric range; NAME=A,B,C searches a list. "
            "Other fields: head_width, temperature,\nlearn_temperature, optimizer (adam|sgd), momentum, "
            "weight_decay, schedule (step|cosine|none), lr_step_epochs, lr_gamma."
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

    search = parser.add_argument_group("search")
    search.add_argument("--num-samples", type=int, default=12, help="trials in the study (default 12)")
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
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fix or narrow a search dimension (repeatable; see below)",
    )
    search.add_argument(
        "--grace-period",
        type=int,
        default=None,
        help="ASHA: epochs every trial runs before it can be stopped (default epochs/4)",
    )
    search.add_argument(
        "--seed", type=int, default=0, help="seeds torch, the episode samplers and the Optuna sampler (default 0)"
    )

    compute = parser.add_argument_group("compute")
    compute.add_argument(
        "--workers-per-trial", type=int, default=1, help="Ray Train workers per trial; more than 1 runs DDP (default 1)"
    )
    compute.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per worker (default 1)")
    compute.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs per worker; a fraction packs single-worker trials on one GPU (default 0)",
    )
    compute.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="trials at once (default: as many as the cluster's resources fit)",
    )
    compute.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all cores; not with --address)"
    )
    compute.add_argument(
        "--address",
        default=None,
        help="attach to a running Ray cluster (e.g. auto or ray://host:10001); default a local Ray",
    )

    output = parser.add_argument_group("results and tracking")
    output.add_argument(
        "--storage",
        default="fsl-results",
        help="where Ray keeps studies, trials and checkpoints: a folder or s3://... (default ./fsl-results)",
    )
    output.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)",
    )
    output.add_argument("--experiment", default="protonet", help="MLflow experiment name (default protonet)")
    output.add_argument(
        "--study-name",
        default=None,
        help="name of the study: its folder under --storage and its MLflow parent run (default protonet-<date>-<time>)",
    )
    output.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study (the named one, or the latest under --storage)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        demo = args.data is None
        image_size = args.image_size or (32 if demo else 84)
        data_root = ensure_demo_dataset(seed=0, image_size=image_size) if demo else args.data
        storage = normalise_storage(args.storage)
        study_name = args.study_name
        if study_name is None:
            study_name = latest_study(storage, STUDY_PREFIX) if args.resume else None
            if args.resume and study_name is None:
                raise ValueError(f"--resume: no study to resume under {storage}")
            study_name = study_name or time.strftime(f"{STUDY_PREFIX}-%Y%m%d-%H%M%S")
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
        settings = StudySettings(
            study_name=study_name,
            storage=storage,
            tracking_uri=resolve_tracking_uri(args.tracking_uri),
            experiment=args.experiment,
            num_samples=args.num_samples,
            max_concurrent=args.max_concurrent,
            resources=TrialResources(args.workers_per_trial, args.cpus_per_worker, args.gpus_per_worker),
            address=args.address,
            num_cpus=args.num_cpus,
            resume=args.resume,
            seed=args.seed,
            grace_period=args.grace_period,
        )
        if args.resume:
            print(
                f"Resuming study {study_name!r}: it keeps the search space, epochs and number of trials it was "
                "started with; unfinished trials continue from their last checkpoint"
            )
        print(f"Preparing study {study_name!r}: data {data_root}")
        plan = plan_study(data_root, base, args.param, settings)
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    print_plan_header(plan)
    try:
        outcome = run_study(plan)
    except ValueError as err:  # resource checks against the running cluster
        return fail(err)
    return print_outcome(plan, outcome)


def print_plan_header(plan) -> None:  # noqa: ANN001
    data = plan.data
    print(
        f"Data: {len(data.train)} train images / {len(data.train.class_names)} classes, {len(data.val)} val images / "
        f"{len(data.val.class_names)} classes at {plan.base.image_size} px; {len(data.val_episodes)} fixed "
        f"{plan.base.n_way}-way {plan.base.k_shot}-shot episodes from {data.episodes_file}"
    )
    print(f"Untrained Conv4 on these episodes: val_acc {plan.untrained[0]:.4f} ± {plan.untrained[1]:.4f}")
    searched = ", ".join(f"{n} {d.describe()}" for n, d in plan.space.items()) or "nothing (all fixed)"
    print(
        f"Searching {searched}; {plan.settings.num_samples} trials x up to {plan.base.epochs} epochs of "
        f"{plan.base.episodes_per_epoch} episodes"
    )


if __name__ == "__main__":
    sys.exit(main())
