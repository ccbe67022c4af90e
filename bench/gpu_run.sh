#!/usr/bin/env bash
# Every GPU measurement in one go, on a CUDA machine that has torch, torchvision, numpy, pandas and pillow
# (Ray, MLflow and Optuna are not needed) plus the bench extra's peers (easyfsl, byol-pytorch):
#   1. bench/gpu_check.py: the ProtoNet and BYOL loops on CUDA, fp32 / bf16 / channels_last, checked and timed;
#   2. b1 and b6 with BENCH_DEVICE=cuda: ours against easyfsl and byol-pytorch, both sides on the GPU.
#
#   bash bench/gpu_run.sh [OUTDIR]      # logs and latest.{md,json} land in OUTDIR (default bench/results/gpu)
#
# Each step has its own time limit (GPU_CHECK_TIMEOUT, BENCH_TIMEOUT seconds), so that one slow step still
# leaves the others' results on disk.
set -uo pipefail
out=${1:-bench/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 BENCH_DEVICE=${BENCH_DEVICE:-cuda}
export FSL_CACHE_DIR=${FSL_CACHE_DIR:-/tmp/fsl-cache}
python=${PYTHON:-python3}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$python" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
  echo "CPU cores: $(nproc)"
} 2>&1 | tee "$out/machine.txt"

status=0
timeout "${GPU_CHECK_TIMEOUT:-240}" "$python" bench/gpu_check.py 2>&1 | tee "$out/gpu_check.log" || status=1
timeout "${BENCH_TIMEOUT:-330}" "$python" bench/run_all.py --only b1,b6 --results-dir "$out" 2>&1 \
  | tee "$out/bench.log" || status=1
exit $status
