#!/usr/bin/env python
"""Replay into MLflow what a study could not log while its tracking store was away (a stopped server, a lost
network): child runs, epochs, trial ends and the study's summary, from the results Ray kept in the study's
folder. Only what MLflow lacks is added, so running it twice changes nothing.

    python studies/sync_mlflow.py fsl-results/protonet-20261129-101500
    python studies/sync_mlflow.py s3://bucket/studies/my-study --tracking-uri http://10.0.0.5:5000
"""

from __future__ import annotations

import argparse
import sys

from fsl.study.cli import fail


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="the study's folder, <storage>/<study name> (a local path or a URI)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI to write to (default: the one the study was run with)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fsl.tracking.sync import sync_study

    try:
        report = sync_study(args.study, args.tracking_uri)
    except ValueError as err:
        return fail(err)
    if report.changed:
        print(
            f"Synced study {report.study_name!r} ({report.trials} trials) to MLflow at {report.tracking_uri}: "
            f"{report.children_created} child runs created, {report.epochs_logged} epochs logged, "
            f"{report.runs_closed} runs closed"
        )
    else:
        print(f"MLflow at {report.tracking_uri} already had study {report.study_name!r} ({report.trials} trials)")
    if not report.study_finished:
        print("Some trials have not ended: the study can be resumed (--resume); sync again after it ends.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
