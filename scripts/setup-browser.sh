#!/usr/bin/env bash
# Install Debian's headless Chromium and its WebDriver once, for the browser test of the MLflow UI
# (tests/test_browser_mlflow.py). Does nothing when both are already there. Never asks for a password: it
# installs as root or with passwordless sudo (`sudo -n`), and otherwise says how. With CI set (.ci/run) a
# browser it cannot install is an error (exit 1); elsewhere a warning, and the browser test skips.
set -euo pipefail

fail() {
  echo "$1" >&2
  [ -n "${CI:-}" ] && exit 1
  echo "warning: the MLflow UI browser test will be skipped" >&2
  exit 0
}

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if ! command -v apt-get > /dev/null; then
  fail "error: no apt-get; install chromium and chromium-driver yourself (the browser test is skipped without them)"
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
    SUDO=(sudo -n)
  else
    fail "error: installing chromium and chromium-driver needs root: run sudo bash scripts/setup-browser.sh"
  fi
fi
echo "Installing chromium and chromium-driver (first run only; log in /tmp/fsl-setup-browser.log) ..." >&2
{
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      chromium chromium-driver
} > /tmp/fsl-setup-browser.log 2>&1 || {
  tail -n 30 /tmp/fsl-setup-browser.log >&2
  # CI must run the browser test; elsewhere the rest of the suite still runs and the browser test is skipped.
  fail "error: installing chromium and chromium-driver failed; the whole log is in /tmp/fsl-setup-browser.log"
}
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  fail "error: apt-get installed chromium and chromium-driver, but /usr/bin/chromium or /usr/bin/chromedriver is missing"
fi
echo "Chromium ready: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)" >&2
