#!/usr/bin/env bash
# Run one of the study scripts with the project's environment, setting up .venv if needed:
#   bash scripts/run.sh byol_search [args]      bash scripts/run.sh office_settings [args]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ] || [ ! -f "$here/studies/$1.py" ]; then
    echo "usage: bash scripts/run.sh STUDY [args]; STUDY is one of: $(cd "$here/studies" && ls [a-z]*.py | sed 's/\.py$//' | tr '\n' ' ')" >&2
    exit 2
fi
study="$1"
shift
bash "$here/scripts/setup-venv.sh"
exec "$here/.venv/bin/python" "$here/studies/$study.py" "$@"
