#!/usr/bin/env bash
# Set up (if needed, with the browser for the dashboard tests), then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider -m "slow or not slow" "$@"
