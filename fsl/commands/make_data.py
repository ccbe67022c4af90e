#!/usr/bin/env python
"""Generate image data in the DLCV HW4 layout, nothing downloaded.

By default: the demo sets the studies make on first use (Mini-ImageNet-like 64 + 16 classes at 32 px, the
Office-Home-like set), under the cache folder. With --full-size: stand-ins with the shapes of the real data
sets, to measure what a study costs at full size (bench/b9_full_size.py runs on them):

  mini    64 / 16 / 20 classes x 600 JPEG images at 84 px (train, val, test) and val_testcase.csv
  office  65 classes, about 15,500 JPEG images of 200 to 420 px a side, train and val

The folders are printed; pass them as --data (protonet_search.py, byol_search.py, office_settings.py) and
--pretrain-data (office_settings.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

KINDS = ("mini", "office")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="the full-size stand-ins instead of the demo sets")
    parser.add_argument("--kind", default="mini,office", help="which: mini, office or both (default mini,office)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed (default 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write OUT/mini and OUT/office (default: under the cache folder, $FSL_CACHE_DIR or ~/.cache/fsl, "
        "where a second call finds them made)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes that draw images (default: every core)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kinds = [k.strip() for k in args.kind.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        return _fail(f"--kind {args.kind}: expected mini, office or mini,office")
    if args.workers is not None and args.workers < 1:
        return _fail(f"--workers {args.workers}: expected at least 1")
    if args.out is not None:
        taken = [args.out / k for k in kinds if (args.out / k).exists()]
        if taken:
            return _fail(f"--out {args.out}: {taken[0]} already exists; remove it or choose another folder")

    from fsl.data import demo, standins  # after the checks: numpy and PIL are slow to import on a small machine

    for kind in kinds:
        started = time.perf_counter()
        root = args.out / kind if args.out is not None else None
        if args.full_size:
            root = standins.ensure_standin(kind, args.seed, root, workers=args.workers)
        elif root is None:
            root = (demo.ensure_demo_dataset if kind == "mini" else demo.ensure_office_demo_dataset)(seed=args.seed)
        else:
            write = demo.write_demo_dataset if kind == "mini" else demo.write_office_demo_dataset
            root = demo.generate_once(root, standins.LAST_FILE[kind], partial(write, seed=args.seed))
        images = sum(_rows(csv) for csv in sorted(root.glob("*.csv")) if csv.stem in ("train", "val", "test"))
        print(f"{kind}: {root} ({images:,} images; {time.perf_counter() - started:.0f} s)")
    return 0


def _rows(csv: Path) -> int:
    with csv.open() as lines:
        return sum(1 for _ in lines) - 1


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
