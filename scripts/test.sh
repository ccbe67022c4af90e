#!/usr/bin/env bash
# Run the test suite, setting up .venv if needed. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
bash scripts/setup-browser.sh
exec .venv/bin/python -m pytest "$@"
