#!/usr/bin/env bash
# The training criteria side by side: the Viterbi stage by frame cross-entropy and by full sum, with and without
# learned transition probabilities and the soft prior, and CTC with torch's loss and the own one. Each variant
# runs stages 2-5 in its own exp dir per seed; then one table (epochs to a target, dev/test PER, alignment accuracy
# where the corpus has hand labels, seconds per epoch) and one plot of dev PER and loss per epoch.
# Every key=value argument is a hydra override, as for run.sh, given to every variant.
set -euo pipefail

seeds="0"
variants="ce ce_learned fullsum fullsum_learned fullsum_prior fullsum_prior_learned ctc_own"
help_message="Usage: $0 [--seeds \"0 1 2\"] [--variants \"ce ...\"] [key=value ...]

Runs ./run.sh --stop-stage 1 once, then for each variant V and seed S ./run.sh --stage 2 with V's settings,
train.seed=S, paths.exp=<paths.exp>/criteria/V/seed<S> and paths.results=<that dir>/RESULTS.md, and writes
<paths.results without .md>_criteria.md and _criteria.png from every variant's seeds found there (so runs with
other --seeds or --variants add to one table). Only ce and ctc_own train CTC; the others stop at the Viterbi
model (models=[viterbi]). A run whose stages are done is skipped stage by stage, as run.sh skips them.

Variants:
  ce                     train.viterbi.criterion=ce hmm.transitions=none
  ce_learned             + hmm.transitions=learned (re-estimated from the best paths each round)
  fullsum                train.viterbi.criterion=fullsum train.viterbi.fullsum_prior_scale=0.0 (no prior)
  fullsum_learned        + hmm.transitions=learned (trained by the gradient)
  fullsum_prior          train.viterbi.criterion=fullsum train.viterbi.fullsum_prior_scale=1.0 (the default)
  fullsum_prior_learned  + hmm.transitions=learned
  ctc_own                ce, with train.ctc.loss=own

Options:
  --seeds \"S ...\"      the seeds (default: ${seeds})
  --variants \"V ...\"   the variants (default: all)
  -h, --help           this message

Example (the experiment of recipes/fsdd/README.md):
  $0 corpus.root=../shared/corpora/fsdd recipe=fsdd_connected"

overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="${2:?--seeds needs a value}"; shift 2 ;;
    --seeds=*) seeds="${1#*=}"; shift ;;
    --variants) variants="${2:?--variants needs a value}"; shift 2 ;;
    --variants=*) variants="${1#*=}"; shift ;;
    -h|--help) echo "${help_message}"; exit 0 ;;
    --*) echo "$0: unknown option $1" >&2; echo "${help_message}" >&2; exit 2 ;;
    *) overrides+=("$1"); shift ;;
  esac
done
read -r -a seeds <<< "${seeds}"
read -r -a variants <<< "${variants}"
for s in "${seeds[@]}"; do
  [[ "${s}" =~ ^[0-9]+$ ]] || { echo "$0: seeds must be integers, got '${s}'" >&2; exit 2; }
done

# Every variant spells out its criterion, prior and transitions, so that a recipe's own choice (the TIMIT recipes
# train by the full sum) cannot turn one variant into another.
variant_settings() {
  local ce="train.viterbi.criterion=ce hmm.transitions=none"
  local fullsum="train.viterbi.criterion=fullsum train.viterbi.fullsum_prior_scale=0.0 hmm.transitions=none"
  local fullsum_prior="train.viterbi.criterion=fullsum train.viterbi.fullsum_prior_scale=1.0 hmm.transitions=none"
  case "$1" in
    ce) echo "${ce} train.compare_ctc_inits=[]" ;;
    ce_learned) echo "${ce/=none/=learned} models=[viterbi]" ;;
    fullsum) echo "${fullsum} models=[viterbi]" ;;
    fullsum_learned) echo "${fullsum/=none/=learned} models=[viterbi]" ;;
    fullsum_prior) echo "${fullsum_prior} models=[viterbi]" ;;
    fullsum_prior_learned) echo "${fullsum_prior/=none/=learned} models=[viterbi]" ;;
    ctc_own) echo "${ce} train.ctc.loss=own train.compare_ctc_inits=[]" ;;
    *) return 1 ;;
  esac
}
for v in "${variants[@]}"; do
  variant_settings "${v}" > /dev/null || { echo "$0: no variant '${v}' (see --help)" >&2; exit 2; }
done

cd "$(dirname "$0")"
. ./path.sh
mapfile -t settings < <(python steps/get_config.py paths.exp -- ${overrides[@]+"${overrides[@]}"} || echo "__failed__")
[ "${settings[-1]}" != "__failed__" ] || { echo "$0: bad configuration (see above)" >&2; exit 1; }
exp=${settings[0]}

./run.sh --stop-stage 1 ${overrides[@]+"${overrides[@]}"}
for v in "${variants[@]}"; do
  read -r -a extra <<< "$(variant_settings "${v}")"
  for s in "${seeds[@]}"; do
    dir="${exp}/criteria/${v}/seed${s}"
    echo "$(date '+%Y-%m-%dT%H:%M:%S') variant ${v}, seed ${s}: stages 2-5 -> ${dir}"
    mkdir -p "${dir}"
    echo "${extra[*]}" > "${exp}/criteria/${v}/settings"
    ./run.sh --stage 2 ${overrides[@]+"${overrides[@]}"} ${extra[@]+"${extra[@]}"} "train.seed=${s}" \
      "paths.exp=${dir}" "paths.results=${dir}/RESULTS.md"
  done
done
python steps/comparison_table.py --comparison criteria "${exp}/criteria" ${overrides[@]+"${overrides[@]}"}
