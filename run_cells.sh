#!/usr/bin/env bash
# The recurrent cells side by side: each cell (model.cell; a gated-feedback one with its gate) at the parameter
# count of the recipe's LSTM (model.match_lstm_parameters), stages 2-5 in its own exp dir per seed; then one
# table (epochs to the LSTM's best, dev/test PER of both models, alignment accuracy where the corpus has hand
# labels, seconds per epoch, training frames per second, hidden size and parameters) and one plot of dev PER and
# loss per epoch. Every key=value argument is a hydra override, as for run.sh, given to every cell.
set -euo pipefail

seeds="0 1 2"
cells="lstm gru rnn_tanh rnn_relu gf_rnn:scalar gf_rnn:vector gf_gru:scalar gf_gru:vector gf_lstm:scalar gf_lstm:vector"
help_message="Usage: $0 [--seeds \"0 1 2\"] [--cells \"lstm gru ...\"] [key=value ...]

Runs ./run.sh --stop-stage 1 once, then for each cell C (a model.cell, or model.cell:model.gf_gate) and seed S
./run.sh --stage 2 --stop-stage 5 model.cell=... model.gf_gate=... model.match_lstm_parameters=true train.seed=S
paths.exp=<paths.exp>/cells/C/seed<S> (the variant dir named C with ':' as '_') and paths.results=<that
dir>/RESULTS.md, and writes <paths.results without .md>_cells.md and _cells.png from every cell's seeds found
there (so runs with other --seeds or --cells add to one table). A run whose stages are done is skipped stage by
stage, as run.sh skips them.

Options:
  --seeds \"S ...\"   the seeds (default: ${seeds})
  --cells \"C ...\"   the cells (default: ${cells})
  -h, --help        this message

Example (the experiment of recipes/timit/README.md):
  $0 recipe=timit_sample corpus.root=../shared/corpora/timit_sample"

overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="${2:?--seeds needs a value}"; shift 2 ;;
    --seeds=*) seeds="${1#*=}"; shift ;;
    --cells) cells="${2:?--cells needs a value}"; shift 2 ;;
    --cells=*) cells="${1#*=}"; shift ;;
    -h|--help) echo "${help_message}"; exit 0 ;;
    --*) echo "$0: unknown option $1" >&2; echo "${help_message}" >&2; exit 2 ;;
    *) overrides+=("$1"); shift ;;
  esac
done
read -r -a seeds <<< "${seeds}"
read -r -a cells <<< "${cells}"
for s in "${seeds[@]}"; do
  [[ "${s}" =~ ^[0-9]+$ ]] || { echo "$0: seeds must be integers, got '${s}'" >&2; exit 2; }
done

cd "$(dirname "$0")"
. ./path.sh
mapfile -t settings < <(python steps/get_config.py paths.exp -- ${overrides[@]+"${overrides[@]}"} || echo "__failed__")
[ "${settings[-1]}" != "__failed__" ] || { echo "$0: bad configuration (see above)" >&2; exit 1; }
exp=${settings[0]}
# Each cell's settings, checked (a bad cell or gate name is refused by the config's checks) before any run.
declare -A cell_settings
for c in "${cells[@]}"; do
  cell=${c%%:*}
  gate=scalar
  [ "${c}" = "${cell}" ] || gate=${c#*:}
  cell_settings[${c}]="model.cell=${cell} model.gf_gate=${gate} model.match_lstm_parameters=true"
  read -r -a extra <<< "${cell_settings[${c}]}"
  python steps/get_config.py model.cell -- ${overrides[@]+"${overrides[@]}"} "${extra[@]}" > /dev/null ||
    { echo "$0: bad cell '${c}' (see above)" >&2; exit 2; }
done

./run.sh --stop-stage 1 ${overrides[@]+"${overrides[@]}"}
for c in "${cells[@]}"; do
  read -r -a extra <<< "${cell_settings[${c}]}"
  for s in "${seeds[@]}"; do
    dir="${exp}/cells/${c/:/_}/seed${s}"
    echo "$(date '+%Y-%m-%dT%H:%M:%S') cell ${c}, seed ${s}: stages 2-5 -> ${dir}"
    mkdir -p "${dir}"
    echo "${extra[*]}" > "${exp}/cells/${c/:/_}/settings"
    ./run.sh --stage 2 --stop-stage 5 ${overrides[@]+"${overrides[@]}"} "${extra[@]}" "train.seed=${s}" \
      "paths.exp=${dir}" "paths.results=${dir}/RESULTS.md"
  done
done
python steps/comparison_table.py --comparison cells "${exp}/cells" ${overrides[@]+"${overrides[@]}"}
