#!/usr/bin/env bash
# Create .venv and install alcampaign with its test tools. Idempotent and quick when
# nothing changed. Installs Python packages only; with --browser (scripts/test.sh passes
# it) also the system's chromium for the dashboard's browser tests. torch is installed first and pinned (torch==2.13.0 is a CPU build);
# an unpinned torch pulled in by chgnet would be a several-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) browser=1 ;;
    *) echo "setup.sh: unknown argument $arg (only --browser)" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.alcampaign-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing alcampaign into .venv (first time: a few minutes)..."
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
# The dashboard's browser tests drive Debian's chromium through chromedriver (no
# Selenium Manager download). They fail, rather than skip, without it, unless
# ALCAMPAIGN_SKIP_BROWSER=1. Only the test command installs it (a system package).
if [ "$browser" = 1 ] && [ "${ALCAMPAIGN_SKIP_BROWSER:-0}" != 1 ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  echo "installing chromium and chromium-driver for the browser tests..."
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null
fi
