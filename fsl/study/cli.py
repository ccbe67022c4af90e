"""What the study scripts print: one-line errors and the end-of-study summary."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from fsl.distributed.train_trial import TrialResources
from fsl.study.runner import StudyOptions, latest_study, normalise_storage
from fsl.study.study_file import add_config_arg, saved_flags
from fsl.tracking.uri import open_ui_line, resolve_tracking_uri


def add_search_args(
    parser: argparse.ArgumentParser, num_samples: int | None, what: str, warm_start: bool = False
) -> Any:
    """--num-samples, --param, --seed: the flags every study's search takes; --warm-start for the studies an
    Optuna sampler searches."""
    search = parser.add_argument_group("search")
    search.add_argument("--num-samples", type=int, default=num_samples, help=what)
    search.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fix or narrow a search dimension, or set another config field (repeatable; see below)",
    )
    search.add_argument(
        "--seed", type=int, default=0, help="seeds torch, the data order and the Optuna sampler (default 0)"
    )
    if warm_start:
        search.add_argument(
            "--warm-start",
            default=None,
            metavar="STUDY",
            help="seed the Optuna sampler with the finished trials of an earlier study under --storage on the same "
            "data (those inside this search space)",
        )
    return search


def add_compute_args(parser: argparse.ArgumentParser) -> Any:
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
        help="trials at once (default: as many as the cluster fits; on an autoscaling cluster, at its largest)",
    )
    compute.add_argument(
        "--wait-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="how long the study waits, with no trial running, for the cluster to add the nodes its trials ask for; "
        "then it stops, saved for --resume (default 1800)",
    )
    compute.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all cores; not with --address)"
    )
    compute.add_argument(
        "--address",
        default=None,
        help="attach to a running Ray cluster (e.g. auto or ray://host:10001); default a local Ray",
    )
    return compute


def add_output_args(parser: argparse.ArgumentParser, experiment: str, prefix: str) -> None:
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
    output.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment,
        help=f"MLflow experiment name (default $MLFLOW_EXPERIMENT_NAME, else {experiment})",
    )
    output.add_argument(
        "--study-name",
        default=None,
        help=f"its folder under --storage and its MLflow parent run name (default {prefix}-<date>-<time>)",
    )
    output.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study (the named one, or the latest under --storage)",
    )
    add_config_arg(output)
    output.add_argument(
        "--register-model",
        default=None,
        metavar="NAME",
        help="register the best trial's model as a version of NAME in MLflow's registry, alias 'champion' "
        "(default: logged as a model of its run, not registered)",
    )
    output.add_argument(
        "--ui-port", type=int, default=5000, help="the port in the printed `mlflow ui` command (default 5000)"
    )
    output.add_argument(
        "-v", "--verbose", action="store_true", help="also print Ray's, Tune's, Optuna's and MLflow's own log lines"
    )


def study_options(args: argparse.Namespace, prefix: str, grace_period: int | None = None) -> StudyOptions:
    """The StudyOptions of the shared flags; a new study is named <prefix>-<date>-<time>."""
    storage = normalise_storage(args.storage)
    study_name = args.study_name
    if study_name is None:
        study_name = latest_study(storage, prefix) if args.resume else None
        if args.resume and study_name is None:
            raise ValueError(f"--resume: no study to resume under {storage}")
        study_name = study_name or time.strftime(f"{prefix}-%Y%m%d-%H%M%S")
    if args.resume:
        print(
            f"Resuming study {study_name!r}: it keeps the search space, epochs and number of trials it was "
            "started with; unfinished trials continue from their last checkpoint"
        )
    return StudyOptions(
        study_name=study_name,
        storage=storage,
        tracking_uri=resolve_tracking_uri(args.tracking_uri),
        experiment=args.experiment,
        num_samples=args.num_samples,
        max_concurrent=args.max_concurrent,
        resources=TrialResources(args.workers_per_trial, args.cpus_per_worker, args.gpus_per_worker),
        address=args.address,
        num_cpus=args.num_cpus,
        wait_timeout_s=args.wait_timeout,
        resume=args.resume,
        seed=args.seed,
        warm_start=getattr(args, "warm_start", None),
        grace_period=grace_period,
        verbose=args.verbose,
        ui_port=args.ui_port,
        register_model=args.register_model,
        command=getattr(args, "command", ""),
        flags=saved_flags(args),
    )


def fail(err: BaseException, status: int = 2) -> int:
    """Bad input: one line on stderr, no traceback, exit status 2 (3: the study waited too long for resources)."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
    if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in message:
        message = f"{err.filename}: {message}"
    print(f"error: {message}", file=sys.stderr)
    return status


def print_failures(table: Any) -> None:
    """How many trials failed and why: one line per distinct reason, with the trials it ended."""
    if table.empty:
        return
    failed = table[table["status"] == "ERROR"]
    if failed.empty:
        return
    print(f"Failed: {len(failed)} trial{'s' if len(failed) > 1 else ''} (not counted for the best)")
    unknown = "unknown error (see the trial's error.txt)"
    reasons = failed["error"].fillna(unknown) if "error" in failed else [unknown] * len(failed)
    for reason, trials in failed.groupby(reasons, sort=False)["trial_id"]:
        print(f"  {', '.join(map(str, trials))}: {reason}")


def print_outcome(plan: Any, outcome: Any) -> int:
    """The end-of-study summary. Returns 0 when a trial finished (also when others failed, as printed), else 1."""
    s, metric = plan.options, plan.metric
    print()
    if outcome.best is None:
        print(f"No trial finished an epoch; see {outcome.results_csv} and the trial errors above.")
        print_failures(outcome.table)
        return 1
    best = outcome.best
    params = " ".join(
        f"{name}={best[name]:.3g}" if isinstance(best[name], float) else f"{name}={best[name]}" for name in plan.shown
    )
    score = best[f"best_{metric}"]
    print(f"Best trial {best['trial_id']} ({params or 'fixed configuration'}):")
    print(
        f"  {metric} {score:.4f} ± {best[f'best_{metric}_ci95']:.4f} "
        f"({plan.evaluation}, epoch {int(best['best_epoch'])})"
    )
    if plan.baseline is not None:
        base_score, base_ci = plan.baseline
        print(
            f"  {plan.baseline_name} on the same data: {base_score:.4f} ± {base_ci:.4f} "
            f"({100 * (score - base_score):+.1f} points)"
        )
    counts = outcome.table["status"].value_counts().to_dict() if not outcome.table.empty else {}
    stopped = int((outcome.table["epochs_run"] < outcome.table["epochs"]).sum()) if not outcome.table.empty else 0
    print(
        f"Trials: {len(outcome.table)} ({', '.join(f'{v} {k.lower()}' for k, v in counts.items())}"
        + (f"; {stopped} stopped early by ASHA)" if plan.early_stopping else ")")
    )
    print_failures(outcome.table)
    print(f"Results table: {outcome.results_csv}")
    if outcome.tracking_error:
        print(f"MLflow: {s.tracking_uri} did not answer at the end ({outcome.tracking_error}); see the warning above")
        return 0
    print(
        f"MLflow: {s.tracking_uri}, experiment {s.experiment!r}, parent run {s.study_name!r} ({outcome.parent_run_id})"
    )
    if outcome.model_uri:
        print(f"  best model: {outcome.model_uri}  (mlflow.pytorch.load_model; fsl-predict --checkpoint takes it)")
    print(open_ui_line(s.tracking_uri, outcome.experiment_id, s.ui_port))
    return 0
