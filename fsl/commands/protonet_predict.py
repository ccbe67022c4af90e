#!/usr/bin/env python
"""Predict the queries of fixed episodes with a trained ProtoNet and write them in the ground-truth format
(episode_id,query0,query1,...), as the DLCV HW4 grader expects.

The checkpoint is a best_model.pt written by a study: a file, an MLflow artifact URI such as
runs:/<run_id>/checkpoint/best_model.pt, or a model a study logged or registered (models:/NAME@champion,
models:/<model_id>, runs:/<run_id>/model), with --tracking-uri. Images are read from ROOT/<split>.csv and
ROOT/<split>/ (or an ImageFolder tree); episodes from ROOT/<split>_testcase.csv unless --testcase is given.
When a ground-truth file is present (ROOT/<split>_testcase_gt.csv) the accuracy is printed as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fsl.data.decoded import decode_split
from fsl.data.episodes import read_fixed_episodes, write_predictions_csv
from fsl.data.sources import read_split
from fsl.study.cli import fail
from fsl.tracking.uri import resolve_checkpoint
from fsl.train.evaluate import mean_ci95, predict_episodes
from fsl.train.protonet_method import load_best_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="best_model.pt, runs:/<run_id>/checkpoint/best_model.pt or models:/NAME@champion",
    )
    parser.add_argument("--data", type=Path, required=True, help="data folder (HW4 layout or ImageFolder tree)")
    parser.add_argument("--split", default="val", help="which split the episodes draw from (default val)")
    parser.add_argument("--testcase", type=Path, default=None, help="episodes file (default ROOT/<split>_testcase.csv)")
    parser.add_argument("--gt", type=Path, default=None, help="ground truth (default ROOT/<split>_testcase_gt.csv)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the predictions CSV")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for runs:/ and models:/ checkpoints")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model, cfg, info = load_best_model(resolve_checkpoint(args.checkpoint, args.tracking_uri))
        split = decode_split(read_split(args.data, args.split), cfg.image_size)
        testcase = args.testcase or args.data / f"{args.split}_testcase.csv"
        gt = args.gt or args.data / f"{args.split}_testcase_gt.csv"
        if not testcase.is_file():
            raise FileNotFoundError(f"{testcase}: episodes file not found")
        episodes = read_fixed_episodes(
            testcase, gt if gt.is_file() else None, {k: i for i, k in enumerate(split.ids)}, split.labels
        )
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    predictions = predict_episodes(model, torch.from_numpy(split.images), episodes)
    write_predictions_csv(episodes.episode_ids, predictions, args.out)
    print(f"Wrote {len(episodes)} episodes x {predictions.shape[1]} queries to {args.out}")
    if gt.is_file():
        accuracy, ci95 = mean_ci95((predictions == episodes.query_labels).mean(axis=1))
        print(f"Accuracy against {gt}: {accuracy:.4f} ± {ci95:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
