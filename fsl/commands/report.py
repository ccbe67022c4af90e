#!/usr/bin/env python
"""A study's report rebuilt from MLflow alone: the best trials, the optimisation history, the learning curves,
Optuna's hyperparameter importance, accuracy against learning rate per augmentation, and the settings A-E
table and chart of a settings study (a best-per-cell table where trials carry fsl.cell).

It reads only the tracking store (the parent run and its children), so it reports a study run on another
machine given its tracking URI. It writes report.md with its figures beside it and logs them to the study's
parent run under report/ (a rerun overwrites them).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from fsl.study.cli import fail
from fsl.tracking.report import ARTIFACT_DIR, log_report, write_report
from fsl.tracking.study_reader import check_reachable, existing_tracking_uri, find_study, read_study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)",
    )
    parser.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME"),
        help="MLflow experiment name (default $MLFLOW_EXPERIMENT_NAME, else any experiment)",
    )
    parser.add_argument(
        "--study",
        default=None,
        help="the study's name (its parent run's name) or parent run id (default: the latest study)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default ./reports/<study>)")
    parser.add_argument(
        "--no-log", action="store_true", help=f"do not log the report to the parent run's {ARTIFACT_DIR}/"
    )
    parser.add_argument("--metric", default=None, help="the metric to rank trials by (default: the study's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the importance evaluator (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A server that does not answer should be one error line in seconds, not minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        uri = existing_tracking_uri(args.tracking_uri)
        client = MlflowClient(uri)
        check_reachable(client, uri)
        experiment, parent = find_study(client, args.experiment, args.study)
        runs = read_study(client, experiment, parent, uri, metric=args.metric)
    except (ValueError, FileNotFoundError, MlflowException) as err:
        return fail(err)
    out = args.out or Path("reports") / re.sub(r"[^A-Za-z0-9._-]+", "_", runs.study_name)
    report = write_report(runs, out, seed=args.seed)
    print(f"Study {runs.study_name!r} (experiment {runs.experiment_name!r}, parent run {runs.parent_id}):")
    print(f"  {len(runs.trials)} trials, metric {runs.metric}; report: {report.path}")
    if not args.no_log:
        try:
            log_report(client, runs.parent_id, report)
        except Exception as err:  # the artifact store may be another machine's folder, or read-only
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return fail(
                ValueError(
                    f"the report is in {out}, but logging it to run {runs.parent_id} failed ({first}); "
                    "--no-log skips that"
                )
            )
        print(f"  logged to the parent run's artifacts under {ARTIFACT_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
