#!/usr/bin/env bash
# One command: set up (first time) and run the offline test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config`.
set -euo pipefail
EXTRAS=test
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"
export PERSONA_DOTENV=0
exec .venv/bin/python -m pytest -ra "$@"
