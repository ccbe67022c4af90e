#!/usr/bin/env bash
# Run the ProtoNet study (default: the demo data, a local Ray, ./mlflow.db), setting up .venv if needed.
# Any arguments go to studies/protonet_search.py (see --help).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/setup-venv.sh"
exec "$here/.venv/bin/python" "$here/studies/protonet_search.py" "$@"
