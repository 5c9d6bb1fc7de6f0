#!/usr/bin/env bash
# Set up (if needed), then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check .
# The default run skips @pytest.mark.slow tests (CI budget: well under 15 minutes on
# 2 cores); `bash scripts/test.sh -m "slow or not slow"` runs every test.
.venv/bin/python -m pytest -q -p no:cacheprovider -m "not slow" "$@"
