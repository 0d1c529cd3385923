#!/usr/bin/env bash
# Seed ranges: the recipe's stages 2-5 once per seed (train.seed), each in its own exp dir, then one table of the
# mean and min-max over the seeds of every model and decoder (dev and test) beside the recipe's RESULTS.md.
# Every key=value argument is a hydra override, as for run.sh; the data and features (stages 0-1) are shared.
set -euo pipefail

seeds="0 1 2"
help_message="Usage: $0 [--seeds \"0 1 2\"] [key=value ...]

Runs ./run.sh --stop-stage 1 once, then for each seed S ./run.sh --stage 2 train.seed=S
paths.exp=<paths.exp>/seeds/seed<S> paths.results=<paths.exp>/seeds/seed<S>/RESULTS.md, and writes
<paths.results without .md>_seeds.md from the seeds' decode dirs and training summaries. A seed whose
stages are done is skipped stage by stage, as run.sh skips them, so a killed run resumes.

Options:
  --seeds \"S ...\"   the seeds (default: ${seeds})
  -h, --help        this message

Example:
  $0 recipe=timit_sample corpus.root=../shared/corpora/timit_sample"

overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="${2:?--seeds needs a value}"; shift 2 ;;
    --seeds=*) seeds="${1#*=}"; shift ;;
    -h|--help) echo "${help_message}"; exit 0 ;;
    --*) echo "$0: unknown option $1" >&2; echo "${help_message}" >&2; exit 2 ;;
    *) overrides+=("$1"); shift ;;
  esac
done
read -r -a seeds <<< "${seeds}"
for s in "${seeds[@]}"; do
  [[ "${s}" =~ ^[0-9]+$ ]] || { echo "$0: seeds must be integers, got '${s}'" >&2; exit 2; }
done

cd "$(dirname "$0")"
. ./path.sh
mapfile -t settings < <(python steps/get_config.py paths.exp -- ${overrides[@]+"${overrides[@]}"} || echo "__failed__")
[ "${settings[-1]}" != "__failed__" ] || { echo "$0: bad configuration (see above)" >&2; exit 1; }
exp=${settings[0]}

./run.sh --stop-stage 1 ${overrides[@]+"${overrides[@]}"}
for s in "${seeds[@]}"; do
  echo "$(date '+%Y-%m-%dT%H:%M:%S') seed ${s}: stages 2-5 -> ${exp}/seeds/seed${s}"
  ./run.sh --stage 2 ${overrides[@]+"${overrides[@]}"} "train.seed=${s}" "paths.exp=${exp}/seeds/seed${s}" \
    "paths.results=${exp}/seeds/seed${s}/RESULTS.md"
done
python steps/seed_table.py --seeds "${seeds[*]}" "${exp}/seeds" ${overrides[@]+"${overrides[@]}"}
