#!/usr/bin/env bash
# Run the test suite, setting up .venv if needed. Arguments go to pytest.
# Chromium (for the MLflow UI browser test) is installed only where that needs no password: as root, with
# passwordless sudo, or under CI (which must run the browser test). Elsewhere without it the browser test
# skips with a one-line reason and everything else runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  :
elif [ -n "${CI:-}" ] || [ "$(id -u)" = 0 ] || { command -v sudo > /dev/null && sudo -n true 2> /dev/null; }; then
  bash scripts/setup-browser.sh
else
  echo "browser test skipped: no chromium and no root to install it (bash scripts/setup-browser.sh installs it)" >&2
fi
exec .venv/bin/python -m pytest "$@"
