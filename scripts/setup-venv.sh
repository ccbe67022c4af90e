#!/usr/bin/env bash
# Create ./.venv once and install the project with its test and benchmark tools into it. A rerun with an unchanged
# pyproject.toml and script returns at once (a stamp file records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.fsl-installed"
want=$(cat pyproject.toml scripts/setup-venv.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"' || {
  echo "error: $PYTHON is $("$PYTHON" --version 2>&1); Python 3.11 or newer is needed (set PYTHON=...)" >&2
  exit 2
}
echo "Setting up $VENV (first run only: about 2 minutes; log in $VENV/install.log) ..." >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() {
  "$VENV/bin/python" -m pip install --quiet "$@" >> "$VENV/install.log" 2>&1 || {
    tail -n 30 "$VENV/install.log" >&2
    echo "error: pip install $* failed; the whole log is in $VENV/install.log" >&2
    exit 1
  }
}
: > "$VENV/install.log"
pip_install --upgrade pip
# torch is pinned and installed first: left to itself pip may fetch a newer (multi-GB) CUDA build.
pip_install "torch==2.14.1" "torchvision==0.29.1"
# The test tools, and the peers bench/ compares against: the tests run a quick pass of every benchmark.
pip_install -e ".[test,bench]"
echo "$want" > "$STAMP"
echo "Environment ready: $VENV" >&2
