#!/usr/bin/env bash
# One command: set up (first time) and run the bot on the embedded local models.
# Extra arguments go to bot.py, e.g. `bash scripts/run.sh -t daily` or `--persona FILE`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"
exec .venv/bin/python bot.py "$@"
