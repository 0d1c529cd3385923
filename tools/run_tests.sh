#!/usr/bin/env bash
# The project's test command: sets up .venv if needed, then lint and the pytest suite.
# Extra arguments go to pytest, e.g. tools/run_tests.sh -k features -x
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
ruff check .
ruff format --check .
python -m pytest "$@"
