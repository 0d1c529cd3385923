# shellcheck shell=bash
# Sourced by run.sh and tools/run_tests.sh (Kaldi's path.sh): the project's environment.
# Sets up .venv on first use (tools/setup_env.sh), then puts it and src/ on the paths.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"${_root}/tools/setup_env.sh"
export VIRTUAL_ENV="${_root}/.venv"
export PATH="${VIRTUAL_ENV}/bin:${PATH}"
export PYTHONPATH="${_root}/src${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
# Two cores: each process gets one thread unless a step sets its own count.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
unset _root
