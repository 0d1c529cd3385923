#!/usr/bin/env bash
# The GPU check, one command on a GPU machine that has torch 2.11 and torchaudio 2.11 with CUDA and Python 3.12
# but no network (benchmarks/RESULTS.md, "GPU"):
#   benchmarks/gpu_check.sh --prepare [TIMIT sample dir]   here, with PyPI: cp312 wheels of what such a machine
#                       lacks and a copy of the TIMIT sample, into .gpu_check/ (git-ignored), 64 MiB at most
#   benchmarks/gpu_check.sh                                 there, from the repository root (.gpu_check carried):
#                       the wheels into /tmp/site, the TIMIT sample's training on the GPU in fp32 and bf16 and on
#                       the CPU (benchmarks/gpu_check.py), then the HMM kernels against forced_align on CUDA
#                       (benchmarks/bench_align.py --device cuda); about 5 minutes on an H200
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.gpu_check
# What the GPU machine lacks (its package list: /work/.library/device/KINDS.md), at the versions .venv pins.
wheels=(hydra-core==1.3.8 omegaconf==2.3.1 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 jiwer==4.0.0
  rapidfuzz==3.14.6 kaldiio==2.18.1 flashlight-text==0.0.7)
antlr=antlr4-python3-runtime==4.9.3   # omegaconf's parser: an sdist only, built into a wheel here

if [ "${1:-}" = "--prepare" ]; then
  corpus=${2:-../shared/corpora/timit_sample}
  [ -d "${corpus}" ] || { echo "$0: no TIMIT sample at ${corpus}" >&2; exit 1; }
  rm -rf "${kit}"
  mkdir -p "${kit}/wheels"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "${kit}/wheels" "${wheels[@]}"
  python3 -m pip wheel --quiet --no-deps -w "${kit}/wheels" "${antlr}"
  cp -rL "${corpus}" "${kit}/timit_sample"
  size=$(du -sm "${kit}" | cut -f1)
  ls -1 "${kit}/wheels"
  echo "${kit}: ${size} MiB"
  [ "${size}" -le 64 ] || { echo "$0: ${kit} is over the 64 MiB a device call carries" >&2; exit 1; }
  exit 0
fi

[ -d "${kit}/wheels" ] || { echo "$0: no ${kit}/wheels: run $0 --prepare first (where PyPI is reachable)" >&2; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  "${kit}"/wheels/*.whl
export PYTHONPATH="${PWD}/src:/tmp/site" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi -L || true
python3 -c 'import torch, torchaudio; print("torch", torch.__version__, "torchaudio", torchaudio.__version__,
  "CUDA", torch.cuda.is_available())'
python3 benchmarks/gpu_check.py --corpus "${kit}/timit_sample" "$@"
python3 benchmarks/bench_align.py --device cuda --batches 256 32
