"""bench/run_all.py --quick runs benchmarks 1-3 end to end and writes a table with a finite ratio on every row.

A smoke test of the benchmark code (the peers' APIs, the shims, the table), not of speed: --quick sizes are too
small to measure anything, and no figure is compared with its target here.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_run import ROOT, run_quick

OURS = ("b1", "b2", "b3")


def test_quick_run_writes_a_row_with_a_finite_ratio_per_benchmark(tmp_path: Path) -> None:
    pytest.importorskip("easyfsl", reason="the bench extra is not installed (pip install -e '.[bench]')")
    run = run_quick(OURS, tmp_path, timeout_s=600)
    for key in OURS:
        for row in run.rows_of(key):
            assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
            assert math.isfinite(row["ours"]) and math.isfinite(row["baseline"]), row
            assert row["target"].startswith(">="), row
            assert row["samples"]["ours"] and row["samples"]["baseline"], row
    assert "| benchmark | ours | baseline | unit | ratio | target | met | note |" in run.table
    for row in run.rows:
        assert f"| {row['name']} |" in run.stdout


def test_unknown_benchmark_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/run_all.py", "--only", "b99", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "unknown benchmark(s) b99" in result.stderr


def test_a_gpu_run_without_cuda_is_a_usage_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = subprocess.run(
        [sys.executable, "bench/run_all.py", "--quick", "--only", "b1", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "BENCH_DEVICE": "cuda"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "run_all.py: error: BENCH_DEVICE=cuda: CUDA is not available here"
    assert not (tmp_path / "latest.json").exists()
