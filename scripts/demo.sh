#!/usr/bin/env bash
# Set up, then run the bundled demo campaign (fcc Cu-Au, CHGNet prescreen, EMT oracle)
# to its stopping rule on the embedded store ($ALCAMPAIGN_HOME, default ~/.alcampaign).
# Installs Python packages into .venv only: no system package (no sudo, no apt).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
name=${1:-cuau-emt}
if .venv/bin/alcampaign status "$name" --json >/dev/null 2>&1; then
  echo "campaign $name exists already: resuming it (a stopped campaign just reports)"
  .venv/bin/alcampaign resume "$name"
else
  .venv/bin/alcampaign run examples/cuau_emt.yaml --name "$name"
fi
echo
echo "status as JSON:  .venv/bin/alcampaign status $name --json"
.venv/bin/alcampaign status "$name" --json
echo
echo "pictures of what it learned and spent: .venv/bin/alcampaign report $name --out report"
