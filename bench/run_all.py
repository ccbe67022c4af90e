"""Run the benchmarks in bench/ and print one table of ratios against their baselines.

    python bench/run_all.py                 # every bench/bN_*.py module, full size
    python bench/run_all.py --quick         # tiny sizes, a smoke test (well under 2 minutes)
    python bench/run_all.py --only b1,b3    # some of them

Every module `bench/bN_<name>.py` exposes `run(quick: bool) -> list[Row]` (bench/common.py). The table is
printed as markdown and written to bench/results/latest.md and bench/results/latest.json, with the machine's
description and its load average. Exit status: 0 when every module ran, 1 when one raised (its error is a row
of the table), 2 on bad usage. A target that is not met does not change the exit status (--strict makes it 1).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench.common import Row, bench_device, machine_description  # noqa: E402

MODULE_PATTERN = re.compile(r"^(b\d+)_\w+\.py$")


def discover() -> dict[str, str]:
    """{'b1': 'bench.b1_protonet_throughput', ...} in numeric order."""
    found = {}
    for path in BENCH_DIR.glob("b*_*.py"):
        match = MODULE_PATTERN.match(path.name)
        if match:
            found[match.group(1)] = f"bench.{path.stem}"
    return dict(sorted(found.items(), key=lambda item: int(item[0][1:])))


def fmt(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | ours | baseline | unit | ratio | target | met | note |",
        "|---|---:|---:|---|---:|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if math.isfinite(row.ratio) else "n/a"
        met = "yes" if row.met else "**no**"
        note = row.note.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {row.name} | {fmt(row.ours)} | {fmt(row.baseline)} | {row.unit} | {ratio} | {row.target} | {met} "
            f"| {note} |"
        )
    return "\n".join(lines)


def report(rows: list[Row], machine: dict[str, Any], quick: bool, timings: dict[str, float]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    described = ", ".join(f"{key}={value}" for key, value in machine.items())
    spent = ", ".join(f"{key} {seconds:.0f} s" for key, seconds in timings.items())
    return (
        f"# Benchmarks ({'quick smoke test, not a measurement' if quick else 'full'}), {when}\n\n"
        f"Machine: {described}\n\n"
        f"Time per module: {spent}\n\n"
        "Each ratio compares ours with its baseline measured in the same run, on the same data, threads and "
        "shapes (medians of interleaved repetitions); above 1 means ours is better.\n\n"
        f"{markdown_table(rows)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of every benchmark")
    parser.add_argument("--only", default="", help="comma-separated module keys, e.g. b1,b3")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    parser.add_argument(
        "--results-dir", type=Path, default=BENCH_DIR / "results", help="where latest.md/.json are written"
    )
    args = parser.parse_args(argv)

    modules = discover()
    wanted = [key.strip() for key in args.only.split(",") if key.strip()] or list(modules)
    unknown = [key for key in wanted if key not in modules]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(modules)}")

    try:
        bench_device()
    except RuntimeError as err:
        parser.error(str(err))
    machine = machine_description()
    rows: list[Row] = []
    timings: dict[str, float] = {}
    failed = False
    for key in wanted:
        started = time.perf_counter()
        print(f"[{key}] {modules[key]} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(modules[key])
            rows.extend(module.run(args.quick))
        except Exception as err:  # one broken benchmark must not hide the others' results
            failed = True
            traceback.print_exc()
            rows.append(
                Row(f"{key}: error", math.nan, math.nan, "", math.nan, "", False, f"{type(err).__name__}: {err}")
            )
        timings[key] = time.perf_counter() - started
        print(f"[{key}] done in {timings[key]:.0f} s", file=sys.stderr, flush=True)
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None

    text = report(rows, machine, args.quick, timings)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "latest.md").write_text(text)
    payload = {
        "quick": args.quick,
        "machine": machine,
        "seconds_per_module": timings,
        "rows": [row.to_dict() for row in rows],
    }
    (args.results_dir / "latest.json").write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    if failed:
        return 1
    if args.strict and not all(row.met for row in rows):
        return 1
    return 0


def with_worker_env() -> None:
    """Restart this process with the allocator settings a study's Ray workers get (fsl.distributed.worker_env),
    unless it already has them: glibc reads them only at start-up, and ours and every baseline (in-process
    loops, easyfsl, byol-pytorch) must run under the same allocator for a ratio to mean anything."""
    from fsl.distributed.worker_env import worker_env_vars

    wanted = worker_env_vars()
    if any(os.environ.get(name) != value for name, value in wanted.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **wanted})


if __name__ == "__main__":
    with_worker_env()
    sys.exit(main())
