"""bench/gpu_check.py on the CPU with --quick: it trains both loops in fp32 and bf16, prints its table and exits 0,
imports neither Ray nor MLflow, and refuses a CUDA run where there is no GPU."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.py"

# Runs the script as `python bench/gpu_check.py` would (its own sys.path set-up included), then reports which
# of the heavy layers it imported.
RUN_AND_LIST_IMPORTS = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:
    code = stop.code
imported = sorted({name.split(".")[0] for name in sys.modules} & {"ray", "mlflow", "optuna"})
print("imported:", ",".join(imported) or "none")
sys.exit(code)
"""


def test_quick_cpu_run_prints_a_passing_table_without_ray_or_mlflow():
    run = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_IMPORTS, str(SCRIPT), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",  # the script finds the project from its own path, not the working directory
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert f"torch {torch.__version__}" in out and "device cpu" in out and "TF32: matmul" in out
    header = "| loop | precision | channels_last | throughput | loss first -> last epoch | peak GiB | check |"
    table = out.split(header, 1)[1].strip().splitlines()[1:7]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert [(r[0].split()[0], r[1], r[2]) for r in rows] == [
        (loop, precision, cl)
        for loop in ("ProtoNet", "BYOL")
        for precision, cl in (("fp32", "no"), ("bf16", "no"), ("bf16", "yes"))
    ]
    for loop, _, _, throughput, losses, _, check in rows:
        unit = "episodes/s" if loop.startswith("ProtoNet") else "images/s"
        assert re.fullmatch(rf"[\d,]+\.\d {unit}", throughput)
        first, last = (float(x) for x in losses.split(" -> "))
        assert last < first and check == "pass"
    assert "6 of 6 rows passed" in out
    assert "imported: none" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_is_refused_with_a_clear_message():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "error: --device cuda: CUDA is not available here" in run.stderr
    assert "pass --device cpu" in run.stderr
