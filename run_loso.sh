#!/usr/bin/env bash
# Leave one training speaker out: how well settings carry over to a speaker the model has not heard, measured
# without the test speakers. For a recipe with a speaker split (corpus.split=speakers, e.g. FSDD), each training
# speaker in turn becomes the dev set of a fold trained on the others, with the recipe's dev speakers as the
# fold's test set; the test speakers are used by no fold. Then one table of the mean and min-max over the folds.
# Every key=value argument is a hydra override, as for run.sh.
set -euo pipefail

help_message="Usage: $0 [key=value ...]

Runs ./run.sh --stop-stage 0 (data preparation) for the recipe's own split, to find its training and dev
speakers, then for the k-th training speaker H (k = 0, 1, ...) all stages of ./run.sh with
corpus.train_speakers=[the others] corpus.dev_speakers=[H] corpus.test_speakers=[the recipe's dev speakers]
train.seed=<train.seed + k> paths.data=<paths.data>/loso/H paths.exp=<paths.exp>/loso/H
paths.results=<paths.exp>/loso/H/RESULTS.md, and writes <paths.results without .md>_loso.md from the folds'
decode dirs and training summaries. The seed differs by fold, so the spread holds the speakers' and the seeds'
variation. A fold whose stages are done is skipped stage by stage, as run.sh skips them, so a killed run
resumes.

Options:
  -h, --help        this message

Example (the ablation rows of recipes/fsdd/README.md):
  $0 corpus.root=../shared/corpora/fsdd 'decode.decoders=[greedy]' 'train.compare_ctc_inits=[]'"

overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) echo "${help_message}"; exit 0 ;;
    --*) echo "$0: unknown option $1" >&2; echo "${help_message}" >&2; exit 2 ;;
    *) overrides+=("$1"); shift ;;
  esac
done

cd "$(dirname "$0")"
. ./path.sh
mapfile -t settings < <(python steps/get_config.py paths.data paths.exp train.seed corpus.split -- \
  ${overrides[@]+"${overrides[@]}"} || echo "__failed__")
[ "${settings[-1]}" != "__failed__" ] || { echo "$0: bad configuration (see above)" >&2; exit 1; }
data=${settings[0]}
exp=${settings[1]}
seed=${settings[2]}
[ "${settings[3]}" = speakers ] || {
  echo "$0: needs a corpus split by speakers (corpus.split=speakers), not corpus.split=${settings[3]}" >&2
  exit 2
}

./run.sh --stop-stage 0 ${overrides[@]+"${overrides[@]}"}
mapfile -t train_speakers < <(cut -d' ' -f1 "${data}/train/spk2utt")
dev_speakers=$(cut -d' ' -f1 "${data}/dev/spk2utt" | paste -sd, -)
[ "${#train_speakers[@]}" -ge 2 ] || {
  echo "$0: ${data}/train has ${#train_speakers[@]} speaker(s); leaving one out needs at least 2" >&2
  exit 2
}

k=0
for held in "${train_speakers[@]}"; do
  others=$(printf '%s\n' "${train_speakers[@]}" | grep -vxF "${held}" | paste -sd, -)
  fold_seed=$((seed + k))
  echo "$(date '+%Y-%m-%dT%H:%M:%S') fold ${held}: train ${others}, dev ${held}, test ${dev_speakers}," \
    "train.seed=${fold_seed} -> ${exp}/loso/${held}"
  ./run.sh ${overrides[@]+"${overrides[@]}"} "corpus.train_speakers=[${others}]" "corpus.dev_speakers=[${held}]" \
    "corpus.test_speakers=[${dev_speakers}]" "train.seed=${fold_seed}" "paths.data=${data}/loso/${held}" \
    "paths.exp=${exp}/loso/${held}" "paths.results=${exp}/loso/${held}/RESULTS.md"
  k=$((k + 1))
done
python steps/seed_table.py --folds "${train_speakers[*]}" --test-speakers "${dev_speakers}" "${exp}/loso" \
  ${overrides[@]+"${overrides[@]}"}
