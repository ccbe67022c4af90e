"""Running bench/run_all.py --quick from a test: the one subprocess call and the row lookups that
test_bench.py and test_bench_study.py share."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class QuickRun:
    rows: list[dict[str, Any]]  # latest.json's rows
    table: str  # latest.md
    stdout: str

    def rows_of(self, key: str) -> list[dict[str, Any]]:
        """The rows of benchmark `key` (b1, ...); fails when it produced none."""
        mine = [row for row in self.rows if row["name"].startswith(f"{key} ")]
        assert mine, f"no row for {key} in {[row['name'] for row in self.rows]}"
        return mine


def run_quick(keys: tuple[str, ...], results_dir: Path, timeout_s: int) -> QuickRun:
    """`run_all.py --quick --only <keys>`, which must exit 0, with its table and rows."""
    result = subprocess.run(
        [sys.executable, "bench/run_all.py", "--quick", "--only", ",".join(keys), "--results-dir", str(results_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((results_dir / "latest.json").read_text())
    assert payload["quick"] is True
    table = (results_dir / "latest.md").read_text()
    for row in payload["rows"]:
        assert f"| {row['name']} |" in table
    return QuickRun(payload["rows"], table, result.stdout)
