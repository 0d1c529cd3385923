#!/usr/bin/env bash
# Phone recognition recipe: corpus -> Kaldi data dirs -> features -> ... , stage by stage.
# Every key=value argument is a hydra override that each step receives verbatim (see conf/).
set -euo pipefail

stage=0
stop_stage=100
ngpu=1
nnodes=1
node_rank=0
rdzv_endpoint=""
multirun=false

help_message="Usage: $0 [--stage N] [--stop-stage M] [--ngpu N] [--nnodes N --node-rank R --rdzv-endpoint HOST:PORT]
       [-m] [key=value ...]

Stages:
  0  data preparation: corpus (corpus.root, or a download; recipe=kaldi: your data dirs and dict dir) ->
     <paths.data>/{train,dev,test,lang} (test where the corpus has a test set); with train.speed_perturb, <paths.data>/train_sp: train and its speed-perturbed copies, which stages 1-3 use
  1  features: <paths.data>/{train,dev,test} -> <paths.data>/<features.name>/{train,dev,test}
  2  Viterbi training (flat start, re-alignment): features -> <paths.exp>/viterbi
  3  CTC training (from the Viterbi model): features -> <paths.exp>/ctc; and from each of
     train.compare_ctc_inits (RESULTS.md compares them) -> <paths.exp>/ctc_<init>
  4  decoding of dev and test by each of decode.decoders: greedy, with a phone n-gram LM (weights tuned on dev
     only), and for the digit recipes words: <paths.exp>/{viterbi,ctc} -> .../decode_<split>_<decoder>
  5  scoring (PER, WER) and the recipe's RESULTS.md: decode dirs -> per.json, per.txt, <paths.results>
  6  model bundles, for steps/transcribe.py, steps/align.py and phonerec.inference.load_model:
     <paths.exp>/{viterbi,ctc} -> <paths.exp>/<model>/bundle
  7  forced alignment of the test set (or dev, where there is none) with each bundle: CTM and Praat TextGrids
     (and, for TIMIT, TextGrids of the hand labels and the alignment accuracy): <paths.data>/test ->
     <paths.exp>/<model>/align_test
  8  the whole corpus aligned by the Viterbi model's bundle, as an aligner writes it: a TextGrid per recording
     (laid out as an MFA corpus folder is), CTMs, the utterances that could not be aligned, alignment scores:
     <paths.data>/{train,dev,test} -> <paths.exp>/viterbi/align_corpus

Options:
  --stage N        first stage to run (default ${stage})
  --stop-stage M   last stage to run (default ${stop_stage})
  --ngpu N         train stages 2-3 in N processes (torchrun, DistributedDataParallel): one per GPU, or with
                   train.device=cpu N shares of the CPU's train.num_threads (default ${ngpu})
  --nnodes N       train stages 2-3 on N machines (torchrun's c10d rendezvous), --ngpu processes on each; run.sh
                   is started on every machine with the same arguments, the exp and data dirs on a filesystem they
                   share (default ${nnodes})
  --node-rank R    this machine's number, 0 to N-1: machine 0 hosts the rendezvous, takes the locks and runs every
                   stage; the others take part in stages 2-3 alone (default ${node_rank})
  --rdzv-endpoint HOST:PORT   where machine 0 hosts the rendezvous (with --nnodes > 1)
  -m, --multirun   a hydra sweep (steps/sweep.py): a job per combination of the values of key=a,b,... overrides
                   (and of conf/sweep/'s: sweep=seeds, criteria, cells), each in its own exp dir
                   <paths.exp>/<sweep_name>/<its swept settings>, run by hydra's launcher (hydra/launcher=joblib:
                   side by side; slurm: Slurm jobs); the stages 0-1 they share run once, first (README, Sweeps)
  -h, --help       this message

Any other argument is a hydra override passed to every step, for example
  $0 corpus.root=/data/fsdd                 use an existing copy instead of downloading
  $0 recipe=fsdd_connected nj=2             connected digits
  $0 recipe=timit_sample corpus.root=../shared/corpora/timit_sample     the TIMIT sample
  $0 recipe=kaldi corpus.name=mine corpus.train_dir=data/mine_train corpus.dict_dir=data/mine_dict   your own
  $0 --stage 1 features=fbank features.kaldi.num_mel_bins=80
  $0 --stage 2 --ngpu 4 recipe=timit corpus.root=/data/timit train.precision=bf16     4 GPUs, mixed precision
  $0 -m train.seed=0,1,2 model.hidden_size=128,256         six runs, one after the other"

log() {
  # A timestamp and the caller's file:line, as ESPnet's recipes print them (echo without -e: an override's
  # backslashes print as typed).
  echo "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}) $*"
}

overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage="${2:?--stage needs a value}"; shift 2 ;;
    --stage=*) stage="${1#*=}"; shift ;;
    --stop-stage|--stop_stage) stop_stage="${2:?--stop-stage needs a value}"; shift 2 ;;
    --stop-stage=*|--stop_stage=*) stop_stage="${1#*=}"; shift ;;
    --ngpu) ngpu="${2:?--ngpu needs a value}"; shift 2 ;;
    --ngpu=*) ngpu="${1#*=}"; shift ;;
    --nnodes) nnodes="${2:?--nnodes needs a value}"; shift 2 ;;
    --nnodes=*) nnodes="${1#*=}"; shift ;;
    --node-rank|--node_rank) node_rank="${2:?--node-rank needs a value}"; shift 2 ;;
    --node-rank=*|--node_rank=*) node_rank="${1#*=}"; shift ;;
    --rdzv-endpoint|--rdzv_endpoint) rdzv_endpoint="${2:?--rdzv-endpoint needs a value}"; shift 2 ;;
    --rdzv-endpoint=*|--rdzv_endpoint=*) rdzv_endpoint="${1#*=}"; shift ;;
    -m|--multirun) multirun=true; shift ;;
    -h|--help) echo "${help_message}"; exit 0 ;;
    --*) echo "$0: unknown option $1" >&2; echo "${help_message}" >&2; exit 2 ;;
    *) overrides+=("$1"); shift ;;
  esac
done
for n in "${stage}" "${stop_stage}"; do
  [[ "${n}" =~ ^[0-9]+$ ]] || { echo "$0: stage numbers must be integers, got '${n}'" >&2; exit 2; }
done
[ "${stage}" -le "${stop_stage}" ] || {
  echo "$0: --stop-stage ${stop_stage} is before --stage ${stage}: no stage to run" >&2; exit 2; }
[[ "${ngpu}" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --ngpu must be a number of processes >= 1, got '${ngpu}'" >&2; exit 2; }
[[ "${nnodes}" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --nnodes must be a number of machines >= 1, got '${nnodes}'" >&2; exit 2; }
[[ "${node_rank}" =~ ^[0-9]+$ ]] && [ "${node_rank}" -lt "${nnodes}" ] || {
  echo "$0: --node-rank must be 0 to $((nnodes - 1)) (--nnodes ${nnodes}), got '${node_rank}'" >&2; exit 2; }
if [ "${nnodes}" -gt 1 ]; then
  [[ "${rdzv_endpoint}" =~ ^[^:]+:[0-9]+$ ]] || {
    echo "$0: --nnodes ${nnodes} needs --rdzv-endpoint HOST:PORT (machine 0's), got '${rdzv_endpoint}'" >&2; exit 2; }
  [ "${multirun}" = false ] || { echo "$0: -m runs its jobs by hydra's launcher, not with --nnodes" >&2; exit 2; }
fi

cd "$(dirname "$0")"   # relative paths in the config and on the command line are relative to the repo root
. ./path.sh

if [ "${multirun}" = true ]; then  # hydra's sweeper and launcher run this script once per job
  exec python steps/sweep.py --stage "${stage}" --stop-stage "${stop_stage}" --ngpu "${ngpu}" \
    ${overrides[@]+"${overrides[@]}"}
fi

# run_step <log file> <command...>: a failing step stops the pipeline with the tail of its log (and of the logs
# of its other training processes, <log>.rank<N>.log). Logs append across reruns, so each run first marks its
# start in them, and only what follows the mark is shown: never an earlier run's errors.
run_step() {
  local logfile=$1 mark status; shift
  mark="==== $(date '+%Y-%m-%dT%H:%M:%S') run.sh (pid $$): a new run of this step starts here"
  mkdir -p "$(dirname "${logfile}")"
  for f in "${logfile}" "${logfile%.log}".rank*.log; do
    [ "${f}" = "${logfile}" ] || [ -f "${f}" ] || continue
    echo "${mark}" >> "${f}"
  done
  # In the background (its SIGINT back to the default, which bash sets to ignored there), so that a signal to run.sh
  # runs its trap at once; wait returns early when a trap runs, so it is called again until the step has ended.
  (trap - INT; exec "$@" --log "${logfile}" ${overrides[@]+"${overrides[@]}"}) &
  step_pid=$!
  while :; do
    status=0
    wait "${step_pid}" || status=$?
    kill -0 "${step_pid}" 2> /dev/null || break
  done
  step_pid=""
  [ -z "${stopped_by}" ] || stop
  if [ "${status}" -ne 0 ]; then
    log "ERROR: step failed: $*"
    for f in "${logfile}" "${logfile%.log}".rank*.log; do
      [ -f "${f}" ] || continue
      log "The last lines of ${f} (this run's):"
      # The lines after this run's mark (all of a file this run created), the last 20 of them.
      awk -v mark="${mark}" '$0 == mark { n = 0; next } { line[n++] = $0 }
        END { for (i = (n > 20 ? n - 20 : 0); i < n; i++) print line[i] }' "${f}" >&2 || true
    done
    exit 1
  fi
}

# Stages 2 and 3 start their training in one process, or with --ngpu N in N under torchrun: on one machine, or on
# --nnodes machines that meet at machine 0's rendezvous (each training a rendezvous of its own, named by its stage;
# a machine waits there up to 6 hours, as long as the ranks wait for each other, for machine 0 to finish stages 0-1).
train_python=(python)
if [ "${nnodes}" -gt 1 ]; then
  is_host=$([ "${node_rank}" -eq 0 ] && echo true || echo false)
  train_python=(torchrun --nnodes "${nnodes}" --nproc-per-node "${ngpu}" --rdzv-backend c10d
    --rdzv-endpoint "${rdzv_endpoint}" --rdzv-conf "is_host=${is_host},join_timeout=21600" --rdzv-id)
elif [ "${ngpu}" -gt 1 ]; then
  train_python=(torchrun --standalone --nproc-per-node "${ngpu}" --)  # --: the step's options are its own
fi
trainer() {  # trainer <training's name>: train_cmd, what starts that training step (its rendezvous id across machines)
  train_cmd=("${train_python[@]}")
  [ "${nnodes}" -eq 1 ] || train_cmd+=("phonerec-$1" --)
}

# Compose the config once up front: a bad override fails here, before any stage runs.
preflight=(--preflight)  # the dirs claimed (machine 0's: the other machines write nothing but their ranks' logs)
[ "${node_rank}" -eq 0 ] || preflight=()
mapfile -t settings < <(python steps/get_config.py ${preflight[@]+"${preflight[@]}"} recipe_name corpus.name paths.data features.name paths.exp \
  paths.results decode.splits decode.decoders models train.ctc.init train.compare_ctc_inits train.speed_perturb \
  corpus_kind corpus_splits hmm.pronunciations paths.lm -- ${overrides[@]+"${overrides[@]}"} || echo "__failed__")
if [ "${settings[-1]}" = "__failed__" ]; then
  log "ERROR: bad configuration (see above); overrides: ${overrides[*]:-none}"
  exit 1
fi
recipe=${settings[0]} corpus=${settings[1]} data=${settings[2]} feats=${settings[3]} exp=${settings[4]}
results=${settings[5]}
# The lists (printed as ['dev', 'test']: names without spaces) become arrays.
read -r -a decode_splits <<< "$(tr -d "[],'" <<< "${settings[6]}")"
read -r -a decoders <<< "$(tr -d "[],'" <<< "${settings[7]}")"
read -r -a models <<< "$(tr -d "[],'" <<< "${settings[8]}")"
ctc_init=${settings[9]}
read -r -a compare_ctc_inits <<< "$(tr -d "[],'" <<< "${settings[10]}")"
read -r -a speed_perturb <<< "$(tr -d "[],'" <<< "${settings[11]}")"
corpus_kind=${settings[12]}   # local/<kind>/prepare_data.py prepares the corpus
read -r -a splits <<< "${settings[13]}"   # the data dirs stage 0 writes: train dev test, or train dev (no test)
lm_dir=${settings[15]} lm_transcripts=()   # the phone LMs, from the training transcripts
if [ "${settings[14]}" = variants ] && [[ " ${models[*]} " == *" viterbi "* ]]; then
  # from the pronunciations the Viterbi run's alignments chose: this experiment's own
  lm_dir=${exp}/lm lm_transcripts=(--transcripts "${exp}/viterbi/phones.train.txt")
fi
data_splits=("${splits[@]}")   # (splits gets train_sp too, with speed perturbation)
align_split="test"   # stage 7 aligns the test set, or dev where the corpus has no test set
[[ " ${splits[*]} " == *" test "* ]] || align_split=dev
train_set=train   # what stages 2 and 3 train on
if [ "${#speed_perturb[@]}" -gt 0 ]; then
  train_set=$(python -c 'from phonerec.base.schema import SPEED_PERTURBED_TRAIN; print(SPEED_PERTURBED_TRAIN)')
  splits+=("${train_set}")
fi
commas() { local IFS=,; echo "$*"; }  # commas a b c: a,b,c (the lists in log lines)
start_time=${SECONDS}
training="$([ "${ngpu}" -eq 1 ] || echo ", training in ${ngpu} processes")"
if [ "${nnodes}" -gt 1 ]; then
  training=", training in ${ngpu} process(es) on each of ${nnodes} machines (this one: ${node_rank})"
fi
if [ "${node_rank}" -gt 0 ]; then  # takes part in the trainings alone: machine 0 takes the locks and runs the rest
  [ "${stage}" -ge 2 ] || stage=2
  [ "${stop_stage}" -le 3 ] || stop_stage=3
fi
log "Recipe ${recipe}: stages ${stage} to ${stop_stage}${training}; overrides: ${overrides[*]:-none}"

# One lock set per run, taken before anything is written and held until the run ends (its steps, torchrun's
# ranks included, inherit it): an exclusive lock on every dir the run's stages write, a shared one on every dir
# they read, and a shared one on the dirs above either, up to paths.data and paths.exp. A second run that would
# write what this one reads or writes (or read what it writes) is refused at once, before it touches anything;
# runs that only read the same inputs (a sweep of training settings on one feature dir) go side by side. The lock
# files are <dir>/.run.lock (the steps' own per-dir .lock stays theirs: one process at a time within a dir).
declare -A lock_mode=()
want_lock() {  # want_lock x|s <dir> <root> (on machine 0 alone)
  local mode=$1 dir root
  [ "${node_rank}" -eq 0 ] || return 0
  dir=$(realpath -m "$2"); root=$(realpath -m "$3")
  [ "${mode}" = x ] && lock_mode[${dir}]=x || lock_mode[${dir}]=${lock_mode[${dir}]:-s}
  while [ "${dir}" != "${root}" ] && [[ "${dir}" == "${root}"/* ]]; do
    dir=$(dirname "${dir}")
    lock_mode[${dir}]=${lock_mode[${dir}]:-s}
  done
}
in_range() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
if in_range 0; then want_lock x "${data}" "${data}"; fi
for split in "${splits[@]}"; do
  if in_range 1; then want_lock s "${data}/${split}" "${data}"; want_lock x "${data}/${feats}/${split}" "${data}"; fi
done
for split in "${train_set}" dev "${decode_splits[@]}"; do
  if in_range 2 || in_range 3 || in_range 4; then want_lock s "${data}/${feats}/${split}" "${data}"; fi
done
for n in 1 2 3 4 6; do in_range "${n}" && want_lock s "${data}/lang" "${data}"; done
if in_range 2; then want_lock x "${exp}/viterbi" "${exp}"; fi
if in_range 3 && [[ " ${models[*]} " == *" ctc "* ]]; then
  want_lock s "${exp}/viterbi" "${exp}"
  want_lock x "${exp}/ctc" "${exp}"
  for init in "${compare_ctc_inits[@]}"; do
    [ "${init}" = ctc ] || want_lock x "${exp}/ctc_${init}" "${exp}"
  done
fi
if in_range 4; then want_lock x "${lm_dir}" "$(dirname "${lm_dir}")"; fi
for model in "${models[@]}"; do
  for n in 4 5 6; do in_range "${n}" && want_lock s "${exp}/${model}" "${exp}"; done
  for split in "${decode_splits[@]}"; do
    for decoder in "${decoders[@]}"; do
      in_range 4 && want_lock x "${exp}/${model}/decode_${split}_${decoder}" "${exp}"
    done
  done
  if in_range 6; then want_lock s "${lm_dir}" "$(dirname "${lm_dir}")"; want_lock x "${exp}/${model}/bundle" "${exp}"; fi
  if in_range 7; then
    want_lock s "${exp}/${model}/bundle" "${exp}"; want_lock s "${data}/${align_split}" "${data}"
    want_lock x "${exp}/${model}/align_${align_split}" "${exp}"
  fi
done
if in_range 8; then
  want_lock s "${exp}/viterbi/bundle" "${exp}"; want_lock x "${exp}/viterbi/align_corpus" "${exp}"
  for split in "${data_splits[@]}"; do want_lock s "${data}/${split}" "${data}"; done
fi
if in_range 5; then want_lock x "${exp}" "${exp}"; fi
held_locks=()
# In sorted order, one NUL-terminated path at a time: a path may hold spaces (or any other byte but NUL).
lock_dirs=()
if [ "${#lock_mode[@]}" -gt 0 ]; then  # (printf would print one empty path for none)
  mapfile -d '' -t lock_dirs < <(printf '%s\0' "${!lock_mode[@]}" | LC_ALL=C sort -z)
fi
for dir in "${lock_dirs[@]}"; do
  mode=${lock_mode[${dir}]}
  if [ "${mode}" = x ]; then
    mkdir -p "${dir}"
  elif [ ! -d "${dir}" ]; then
    continue  # an input that does not exist yet: its stage will say so
  fi
  exec {fd}>>"${dir}/.run.lock"
  if ! flock -n "-${mode}" "${fd}"; then
    what=$([ "${mode}" = x ] && echo "writes" || echo "reads")
    log "ERROR: ${dir} is in use by another run (this run ${what} it); nothing was done. Wait for that run, or give this one other paths.data / paths.exp"
    exit 1
  fi
  held_locks+=("${fd}")
done
if in_range 5; then  # the results file, which runs of other exp dirs may share a folder with
  mkdir -p "$(dirname "${results}")"
  exec {fd}>>"$(dirname "${results}")/.$(basename "${results}").run.lock"
  flock -n -x "${fd}" || { log "ERROR: ${results} is being written by another run; nothing was done"; exit 1; }
fi

# SIGINT and SIGTERM from here on: passed on to the running step (torchrun passes them on to its ranks), which
# run.sh waits for, then one line and exit 130 or 143; a rerun resumes. run_step runs each step in the background,
# as bash runs no trap while a foreground command runs.
step_pid="" stopped_by="" stage_now=${stage}
in_terminal_foreground() {  # run.sh is in its terminal's foreground process group (where a Ctrl-C goes)
  local pgid tpgid
  read -r pgid tpgid < <(ps -o pgid=,tpgid= -p $$ 2> /dev/null) && [ "${pgid}" = "${tpgid}" ]
}
stop() {
  log "stopped in stage ${stage_now}; rerun the same command to resume"
  if [ "${stopped_by}" = INT ]; then exit 130; else exit 143; fi
}
on_signal() {  # on_signal INT|TERM
  stopped_by=$1
  [ -n "${step_pid}" ] || stop
  # A Ctrl-C in a terminal reached the step itself (run.sh's process group): a second SIGINT would break into its
  # handling of the first.
  if [ "$1" = TERM ] || ! in_terminal_foreground; then kill -s "$1" "${step_pid}" 2> /dev/null || true; fi
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  stage_now=0
  log "Stage 0: data preparation: corpus ${corpus} -> ${data}/{$(commas "${splits[@]}"),lang}"
  run_step "${data}/log/prepare_data.log" python "local/${corpus_kind}/prepare_data.py" "${data}"
  if [ "${#speed_perturb[@]}" -gt 0 ]; then
    log "Stage 0: speed perturbation ($(commas "${speed_perturb[@]}")): ${data}/train -> ${data}/${train_set}"
    run_step "${data}/${train_set}/log/perturb_speed.log" python steps/perturb_speed.py "${data}/train" "${data}/${train_set}"
  fi
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  stage_now=1
  log "Stage 1: features (${feats}): ${data}/{$(commas "${splits[@]}")} -> ${data}/${feats}/{$(commas "${splits[@]}")}"
  for split in "${splits[@]}"; do
    run_step "${data}/${feats}/${split}/log/make_features.log" \
      python steps/make_features.py "${data}/${split}" "${data}/${feats}/${split}" --lang "${data}/lang"
  done
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  stage_now=2
  log "Stage 2: Viterbi training: ${data}/${feats}/{${train_set},dev} -> ${exp}/viterbi"
  trainer viterbi
  run_step "${exp}/viterbi/log/train.log" \
    "${train_cmd[@]}" steps/train_viterbi.py "${data}/${feats}/${train_set}" "${data}/${feats}/dev" "${data}/lang" "${exp}/viterbi"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ] && [[ " ${models[*]} " != *" ctc "* ]]; then
  log "Stage 3: CTC training skipped: models ($(commas "${models[@]}")) holds no ctc"
elif [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  stage_now=3
  log "Stage 3: CTC training: ${data}/${feats}/{${train_set},dev}, ${exp}/viterbi -> ${exp}/ctc"
  trainer ctc
  run_step "${exp}/ctc/log/train.log" \
    "${train_cmd[@]}" steps/train_ctc.py "${data}/${feats}/${train_set}" "${data}/${feats}/dev" "${data}/lang" "${exp}/viterbi" "${exp}/ctc"
  for init in "${compare_ctc_inits[@]}"; do   # the same training from other inits, for RESULTS.md's comparison
    [ "${init}" != "${ctc_init}" ] || continue
    log "Stage 3: CTC training from init ${init} (train.compare_ctc_inits): -> ${exp}/ctc_${init}"
    trainer "ctc_${init}"
    run_step "${exp}/ctc_${init}/log/train.log" \
      "${train_cmd[@]}" steps/train_ctc.py --init "${init}" "${data}/${feats}/${train_set}" "${data}/${feats}/dev" "${data}/lang" \
      "${exp}/viterbi" "${exp}/ctc_${init}"
  done
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  stage_now=4
  [ "${align_split}" = test ] || log "Stage 4: the corpus has no test set (corpus.test_dir=null): decoding dev alone"
  log "Stage 4: decoding ($(commas "${decoders[@]}")): ${exp}/{$(commas "${models[@]}")}, ${data}/${feats}/{$(commas "${decode_splits[@]}")} -> ${exp}/<model>/decode_<split>_<decoder>"
  run_step "${lm_dir}/log/make_lm.log" python steps/make_lm.py "${data}/train" "${lm_dir}" ${lm_transcripts[@]+"${lm_transcripts[@]}"}
  tune_split=${decode_splits[0]}   # the first split (dev) tunes the weights of the tuned decoders
  for model in "${models[@]}"; do
    for split in "${decode_splits[@]}"; do
      for decoder in "${decoders[@]}"; do
        tuned=()
        [ "${split}" = "${tune_split}" ] || tuned=(--tuned-dir "${exp}/${model}/decode_${tune_split}_${decoder}")
        run_step "${exp}/${model}/decode_${split}_${decoder}/log/decode.log" \
          python steps/decode.py --decoder "${decoder}" "${data}/${feats}/${split}" "${data}/lang" "${exp}/${model}" \
          "${lm_dir}" "${exp}/${model}/decode_${split}_${decoder}" ${tuned[@]+"${tuned[@]}"}
      done
    done
  done
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  stage_now=5
  log "Stage 5: scoring: ${exp}/{$(commas "${models[@]}")}/decode_<split>_{$(commas "${decoders[@]}")} -> per.json or wer.json, reports; ${results}"
  run_step "${exp}/log/score.log" python steps/score.py "${data}" "${exp}"
  grep -h "^| " "${results}" | head -n 8 || true
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
  stage_now=6
  log "Stage 6: model bundles: ${exp}/{$(commas "${models[@]}")} -> ${exp}/<model>/bundle"
  for model in "${models[@]}"; do
    run_step "${exp}/${model}/bundle/log/make_bundle.log" python steps/make_bundle.py \
      "${data}/${feats}/${train_set}" "${data}/lang" "${lm_dir}" "${exp}/${model}" "${exp}/${model}/bundle"
  done
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
  stage_now=7
  log "Stage 7: forced alignment: ${data}/${align_split}, ${exp}/{$(commas "${models[@]}")}/bundle -> ${exp}/<model>/align_${align_split}"
  for model in "${models[@]}"; do
    run_step "${exp}/${model}/align_${align_split}/log/align.log" \
      python steps/align_data_dir.py "${exp}/${model}" "${data}/${align_split}" "${exp}/${model}/align_${align_split}"
  done
fi

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then
  stage_now=8
  log "Stage 8: the whole corpus aligned: ${data}/{$(commas "${data_splits[@]}")}, ${exp}/viterbi/bundle -> ${exp}/viterbi/align_corpus"
  run_step "${exp}/viterbi/align_corpus/log/align_corpus.log" \
    python steps/align_corpus.py "${exp}/viterbi" "${data}" "${exp}/viterbi/align_corpus"
fi

log "Done in $((SECONDS - start_time)) s"
