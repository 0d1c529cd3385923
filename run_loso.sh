#!/usr/bin/env bash
# Leave one training speaker out (conf/sweep/loso.yaml): stage 0 of the recipe's own split finds its training
# speakers, then one fold per speaker by ./run.sh -m sweep=loso, and RESULTS_loso.md. Arguments as for run.sh -m
# (an option with its value in one word: --stop-stage=5); a setting swept beside the folds (cell=lstm,gru) gives
# one table of its values side by side, over the folds:
#   ./run_loso.sh corpus.root=../shared/corpora/fsdd 'decode.decoders=[greedy]' 'train.compare_ctc_inits=[]'
#   ./run_loso.sh corpus.root=../shared/corpora/fsdd cell=lstm,gru sweep_name=loso_cells
set -euo pipefail
cd "$(dirname "$0")"
recipe=()  # the recipe's own overrides: not run.sh's options (--stop-stage 5), the sweep's hydra settings, nor
# the settings swept beside the folds (cell=lstm,gru: a comma outside brackets), which stage 0 does not read
for arg in "$@"; do
  [[ "${arg}" == -* || "${arg}" == hydra[./]* ]] && continue
  value=${arg#*=}
  while [[ "${value}" =~ (.*)\[[^][]*\](.*) ]]; do value="${BASH_REMATCH[1]}${BASH_REMATCH[2]}"; done
  [[ "${value}" == *,* ]] || recipe+=("${arg}")
done
./run.sh --stop-stage 0 ${recipe[@]+"${recipe[@]}"}
data=$(. ./path.sh && python steps/get_config.py paths.data -- ${recipe[@]+"${recipe[@]}"})
exec ./run.sh -m sweep=loso "corpus.held_out_speaker=$(cut -d' ' -f1 "${data}/train/spk2utt" | paste -sd, -)" "$@"
