#!/usr/bin/env python3
"""Kaldi interop: a Viterbi model's frame log-likelihoods (log-posteriors minus decode.prior_scale x the log state
priors) of recordings, as a Kaldi archive that Kaldi's decoders (decode-faster-mapped, latgen-faster-mapped) and
kaldiio read: <out-dir>/loglikes.ark and loglikes.scp, one matrix per utterance, frames x HMM states, columns in
the order of lang/states.txt (copied to <out-dir>/states.txt: state id = column). The recordings: audio files, a
--wav-scp or a --data-dir (per-speaker CMVN through its utt2spk, as in training). A CTC model is refused.

  steps/compute_loglikes.py exp/fsdd/viterbi --data-dir data/fsdd/test --out-dir exp/fsdd/viterbi/loglikes_test
"""

import argparse
import logging
import shlex
import sys
from pathlib import Path

import kaldiio
import torch

from phonerec.inference import load_model, read_recordings
from phonerec.pipeline.cli import run_guarded, setup_logging
from phonerec.pipeline.files import copy_atomic

log = logging.getLogger("phonerec")


def main(args) -> None:
    torch.set_num_threads(args.num_threads)
    model = load_model(args.exp_dir, args.device)
    recordings = read_recordings(model.sample_rate, args.wavs, args.wav_scp, args.data_dir)
    scores = model.log_likelihoods(recordings)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    ark, scp = (args.out_dir / "loglikes.ark").resolve(), args.out_dir / "loglikes.scp"
    scp.unlink(missing_ok=True)
    tmp_scp = scp.with_name("loglikes.scp.tmp")
    with kaldiio.WriteHelper(f"ark,scp:{ark},{tmp_scp}") as writer:
        for rec, frames in sorted(zip(recordings, scores, strict=True), key=lambda pair: pair[0].utt):
            writer(rec.utt, frames.numpy())
    tmp_scp.replace(scp)  # loglikes.scp appears when the archive is whole
    copy_atomic(model.lang_dir / "states.txt", args.out_dir / "states.txt")
    log.info("%s: log-likelihoods of %d utterances, %d states", scp, len(recordings), scores[0].shape[1])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dir", type=Path, help="a Viterbi model's experiment dir (with bundle/) or a bundle dir")
    p.add_argument("wavs", type=Path, nargs="*", help="audio files")
    p.add_argument("--wav-scp", type=Path, help="a wav.scp: <utterance> <audio file> lines")
    p.add_argument("--data-dir", type=Path, help="a data dir (its wav.scp and utt2spk)")
    p.add_argument("--out-dir", type=Path, required=True, help="where loglikes.ark, loglikes.scp, states.txt go")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--log", type=Path, help="log file")
    return p


if __name__ == "__main__":
    arguments = parser().parse_args()
    setup_logging(arguments.log)
    log.info("Running: %s", shlex.join(sys.argv))
    run_guarded(lambda: main(arguments))
