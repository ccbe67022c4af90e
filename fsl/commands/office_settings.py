#!/usr/bin/env python
"""The Office-Home settings study (DLCV HW4 part 2): does pre-training help, and how should it be used?

    A  no pre-training            full fine-tuning
    B  supervised pre-training    full fine-tuning
    C  BYOL pre-training          full fine-tuning
    D  supervised pre-training    frozen backbone, classifier only
    E  BYOL pre-training          frozen backbone, classifier only

Every other registered self-supervised method adds its pair: C-simclr and E-simclr (SimCLR instead of BYOL).
Every setting gets the same budget (--num-samples trials each: one fixed run, or a random search over lr),
runs on Ray Train (--workers-per-trial > 1 is DDP), and is one MLflow child run tagged fsl.setting under one
parent that holds the settings table and its bar chart. Backbones come from --supervised-checkpoint,
--byol-checkpoint (also --ssl-checkpoint), --simclr-checkpoint (a file, e.g. the course's supervised ResNet50,
or an MLflow runs:/ URI); a missing one is pre-trained first on --pretrain-data (the self-supervised methods
without labels, supervised with them) as its own MLflow study.

With no arguments it runs on the generated demo data (an Office-Home-like set and the Mini-ImageNet-like set
for pre-training, ResNet18 at 32 px); --data takes Office-Home in the HW4 layout (ROOT/{train,val}.csv).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import torch

from fsl.data.demo import ensure_demo_dataset, ensure_office_demo_dataset
from fsl.models.resnet import ARCHITECTURES
from fsl.study.cli import add_compute_args, add_output_args, add_search_args, fail, print_outcome, study_options
from fsl.study.office_study import (
    DEFAULT_SETTINGS,
    SETTINGS,
    backbones_needed,
    parse_settings,
    plan_office_study,
    with_backbones,
)
from fsl.study.pretraining_study import plan_self_supervised_study, plan_supervised_pretraining
from fsl.study.runner import (
    DRIVER_CPU,
    StudyOptions,
    StudyPlan,
    normalise_storage,
    restorable,
    run_study,
    study_outcome,
)
from fsl.study.study_file import parse_study_args
from fsl.study.waiting import StudyWaitedTooLong
from fsl.tracking.settings_table import SETTINGS_MD
from fsl.tracking.uri import resolve_checkpoint, sync_command
from fsl.train.backbones import load_backbone_weights
from fsl.train.config import ClassifierConfig
from fsl.train.method import SELF_SUPERVISED
from fsl.train.registry import pretraining_methods

STUDY_PREFIX = "office"
PRETRAINING_SUFFIX = "-pretraining"
# The demo's pre-training is sized for a 2-core laptop (BYOL: 300 steps of 128 images, about 3 minutes).
DEMO = {"image_size": 32, "arch": "resnet18", "epochs": 12, "pretrain_epochs": 10, "ssl_steps": 30, "ssl_batch": 128}
FULL = {"image_size": 128, "arch": "resnet50", "epochs": 30, "pretrain_epochs": 100, "ssl_steps": 0, "ssl_batch": 64}
PRETRAINING = pretraining_methods()  # supervised, then the self-supervised methods: each has its own flags


SSL_FLAG = "--ssl-checkpoint"


def checkpoint_flag(method: str) -> str:
    return f"--{method}-checkpoint"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "--param sets a classifier field for every setting: lr, head_depth (hidden layers of the head; the "
            "seed: 1),\nhead_width (512), batch_size, augment (full fine-tuning, default flip+crop), "
            "frozen_augment (default none:\nfeatures are then extracted once), optimizer, weight_decay, schedule. "
            "--supervised-param, --byol-param, ...\nset the pre-training runs' fields (see byol_search.py --help)."
        ),
    )
    data = parser.add_argument_group("data, model and checkpoints")
    data.add_argument("--data", type=Path, default=None, help="Office-Home in the HW4 layout (default: demo data)")
    data.add_argument(
        "--pretrain-data",
        type=Path,
        default=None,
        help="Mini-ImageNet (HW4 layout) for pre-training missing backbones (default: the demo data)",
    )
    data.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"images are resized to S x S (default {DEMO['image_size']} on the demo, {FULL['image_size']} else)",
    )
    data.add_argument(
        "--arch", choices=ARCHITECTURES, default=None, help=f"backbone (default {DEMO['arch']} demo/{FULL['arch']})"
    )
    for name, method in PRETRAINING.items():
        used_by = ", ".join(s for s, (pretraining, _) in SETTINGS.items() if pretraining == name)
        data.add_argument(
            checkpoint_flag(name),
            default=None,
            help=f"{method.label} backbone for {used_by}: a file or runs:/<run_id>/<path>",
        )
    # The seed study's name for the backbone of C and E.
    data.add_argument(SSL_FLAG, default=None, help=f"the same as {checkpoint_flag(SETTINGS['C'][0])}")
    data.add_argument(
        "--settings",
        default=",".join(DEFAULT_SETTINGS),
        help=f"which settings to run, of {', '.join(SETTINGS)} (default {','.join(DEFAULT_SETTINGS)})",
    )
    search = add_search_args(parser, 1, "trials per setting: 1 trains at the default lr, more search lr (default 1)")
    search.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs per setting (default {DEMO['epochs']} on the demo, {FULL['epochs']} else)",
    )
    search.add_argument(
        "--pretrain-epochs",
        type=int,
        default=None,
        help=f"epochs of each pre-training run (default {DEMO['pretrain_epochs']} demo / {FULL['pretrain_epochs']})",
    )
    for name, method in PRETRAINING.items():
        search.add_argument(
            f"--{name}-param", action="append", default=[], metavar="NAME=VALUE", help=f"{method.label} pre-training"
        )
    compute = add_compute_args(parser)
    compute.add_argument(
        "--pretrain-cpus-per-worker",
        type=float,
        default=None,
        help="CPUs per worker of the pre-training runs, which run one at a time (default: all local cores)",
    )
    add_output_args(parser, experiment="office-settings", prefix=STUDY_PREFIX)
    return parser


def pretraining_storage(options: StudyOptions) -> str:
    """Where a settings study's pre-training runs live: beside it, in a folder of their own."""
    return f"{options.study_path}{PRETRAINING_SUFFIX}"


def pretraining_options(options: StudyOptions, method: str, cpus: float) -> StudyOptions:
    """A pre-training run is a one-trial study of its own, named after the settings study; it continues (or
    is reused) when the settings study is resumed or rerun."""
    storage = pretraining_storage(options)
    name = f"{options.study_name}-{method}"
    resources = dataclasses.replace(options.resources, cpus_per_worker=cpus)
    return dataclasses.replace(
        options,
        study_name=name,
        storage=storage,
        num_samples=1,
        resources=resources,
        resume=restorable(f"{storage}/{name}"),
        max_concurrent=1,
        # Its backbone is a model of its own kind: registered beside the settings' classifiers, not among them.
        register_model=f"{options.register_model}-{method}" if options.register_model else None,
    )


def latest_settings_study(storage: str) -> str | None:
    """For --resume without --study-name: the latest settings study under storage, also one that stopped
    while its pre-training ran (its settings folder does not exist yet)."""
    root = Path(normalise_storage(storage))
    if not root.is_dir():
        return None
    names = {
        p: p.name.removesuffix(PRETRAINING_SUFFIX)
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith(STUDY_PREFIX)
        and (p.name.endswith(PRETRAINING_SUFFIX) or restorable(str(p)))
    }
    return names[max(names, key=lambda p: p.stat().st_mtime)] if names else None


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_study_args(build_parser(), argv, "fsl-office-settings")
        demo = args.data is None
        defaults = DEMO if demo else FULL
        image_size = args.image_size or defaults["image_size"]
        arch = args.arch or defaults["arch"]
        office_root = ensure_office_demo_dataset(seed=0, image_size=image_size) if demo else args.data
        chosen = parse_settings(args.settings)
        if args.resume and args.study_name is None:
            args.study_name = latest_settings_study(args.storage)
            if args.study_name is None:
                raise ValueError(f"--resume: no study to resume under {normalise_storage(args.storage)}")
        options = study_options(args, STUDY_PREFIX)
        if options.resume and not restorable(options.study_path) and Path(pretraining_storage(options)).is_dir():
            # It stopped during pre-training: the settings study itself starts now, its pre-training continues.
            options = dataclasses.replace(options, resume=False)
        base = ClassifierConfig(
            arch=arch, epochs=args.epochs or defaults["epochs"], image_size=image_size, seed=args.seed
        )
        checkpoints = {name: getattr(args, f"{name}_checkpoint") for name in PRETRAINING}
        flags = {name: checkpoint_flag(name) for name in PRETRAINING}
        if args.ssl_checkpoint and not checkpoints[SETTINGS["C"][0]]:
            checkpoints[SETTINGS["C"][0]], flags[SETTINGS["C"][0]] = args.ssl_checkpoint, SSL_FLAG
        backbones, sources = {}, {}
        for method in sorted(backbones_needed(chosen)):
            if checkpoints[method]:
                flag = flags[method]
                path = resolve_checkpoint(checkpoints[method], options.tracking_uri, flag)
                try:
                    backbones[method] = load_backbone_weights(path, arch)
                except (ValueError, FileNotFoundError) as err:
                    raise ValueError(f"{flag} {err}") from None
                sources[method] = checkpoints[method]
        print(f"Preparing study {options.study_name!r}: data {office_root}, settings {', '.join(chosen)}")
        plan = plan_office_study(office_root, base, args.param, options, chosen, backbones, sources)
        pretraining = plan_pretraining(
            args, options, demo, defaults, arch, image_size, backbones_needed(chosen) - set(backbones)
        )
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    try:
        for method, pre_plan in pretraining.items():
            weights, source = run_pretraining(method, pre_plan, arch)
            plan = with_backbones(plan, {method: weights}, {method: source})
        print_settings_header(plan)
        outcome = run_study(plan)
    except ValueError as err:  # resource checks against the running cluster, a pre-training that failed
        return fail(err)
    except StudyWaitedTooLong as err:
        return fail(err, status=3)
    code = print_outcome(plan, outcome)
    table = plan.results_dir / SETTINGS_MD
    if table.is_file():
        print(f"\nSettings ({plan.evaluation}):\n{table.read_text()}")
    return code


def plan_pretraining(
    args: argparse.Namespace,
    options: StudyOptions,
    demo: bool,
    defaults: dict[str, Any],
    arch: str,
    image_size: int,
    missing: set[str],
) -> dict[str, StudyPlan]:
    """Plans (checked before Ray starts) of the pre-training runs for the backbones no checkpoint gave. Each is
    one run of fixed length whose final weights are used, as in the seed study (keep=last)."""
    if not missing:
        return {}
    root = args.pretrain_data or (ensure_demo_dataset(seed=0, image_size=image_size) if demo else None)
    if root is None:
        flags = " and ".join(checkpoint_flag(m) for m in PRETRAINING if m in missing)
        raise ValueError(f"--pretrain-data is needed to pre-train the backbones not given by {flags}")
    cpus = args.pretrain_cpus_per_worker or options.resources.cpus_per_worker
    if args.pretrain_cpus_per_worker is None and not options.address:
        # One run at a time on a local Ray: give it every core (a cluster's are unknown before Ray starts).
        workers = options.resources.workers
        driver = DRIVER_CPU if workers > 1 else 0.0
        cpus = max(cpus, ((options.num_cpus or os.cpu_count() or 1) - driver) / workers)
    epochs = args.pretrain_epochs or defaults["pretrain_epochs"]
    plans = {}
    for name in (m for m in PRETRAINING if m in missing):
        params, where = getattr(args, f"{name}_param"), pretraining_options(options, name, cpus)
        if PRETRAINING[name].pretrains == SELF_SUPERVISED:
            ssl = PRETRAINING[name].config_class(
                arch=arch,
                epochs=epochs,
                steps_per_epoch=defaults["ssl_steps"],
                batch_size=defaults["ssl_batch"],
                image_size=image_size,
                keep="last",
                seed=args.seed,
            )
            plans[name] = plan_self_supervised_study(name, root, ssl, params, where, space={})
        else:
            supervised = ClassifierConfig(arch=arch, epochs=epochs, image_size=image_size, keep="last", seed=args.seed)
            plans[name] = plan_supervised_pretraining(root, supervised, params, where)
    return plans


def run_pretraining(method: str, plan: StudyPlan, arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """Run (or reuse, or resume) one pre-training study; its best backbone, read back from MLflow."""
    done = (plan.results_dir / "results.csv").is_file()
    label = PRETRAINING[method].label
    if done:
        print(f"Reusing the finished {label} pre-training {plan.options.study_name!r}")
        outcome = study_outcome(plan)
    else:
        print(f"Pre-training the {label} backbone first ({plan.options.study_name!r}, {plan.base.epochs} epochs)")
        outcome = run_study(plan)
    if outcome.tracking_error:
        raise ValueError(
            f"the {label} pre-training {plan.options.study_name!r} ended, but its best backbone is read from MLflow, "
            f"which did not answer ({outcome.tracking_error}); once it does, run "
            f"{sync_command(plan.options.study_path, plan.options.tracking_uri)} and this command again "
            "(the pre-training is reused)"
        )
    if outcome.best is None or not outcome.best.get("mlflow_run_id"):
        raise ValueError(f"the {label} pre-training {plan.options.study_name!r} finished no epoch; see above")
    uri = f"runs:/{outcome.best['mlflow_run_id']}/checkpoint/best_model.pt"
    weights = load_backbone_weights(resolve_checkpoint(uri, plan.options.tracking_uri, label), arch)
    print(f"{label} backbone: {uri} (probe_acc {outcome.best['best_probe_acc']:.4f})")
    return weights, uri


def print_settings_header(plan: StudyPlan) -> None:
    train, val = plan.shared["train"], plan.shared["val"]
    print(
        f"Data: {len(train)} train / {len(val)} val images, {len(train.class_names)} classes at "
        f"{plan.base.image_size} px from {plan.data_root}"
    )
    print(
        f"Settings {', '.join(plan.grid['setting'])}: {plan.options.num_samples} trial(s) each x "
        f"{plan.base.epochs} epochs; "
        + ", ".join(f"{s} = {SETTINGS[s][0]} + {SETTINGS[s][1]}" for s in plan.grid["setting"])
    )


if __name__ == "__main__":
    sys.exit(main())
