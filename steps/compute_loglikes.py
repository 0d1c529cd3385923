#!/usr/bin/env python3
"""Kaldi interop: a Viterbi model's frame log-likelihoods (log-posteriors minus decode.prior_scale x the log state
priors) of recordings, as a Kaldi archive that Kaldi's decoders (decode-faster-mapped, latgen-faster-mapped) and
kaldiio read: <out-dir>/loglikes.ark and loglikes.scp, one matrix per utterance, frames x HMM states, columns in
the order of lang/states.txt (copied to <out-dir>/states.txt: state id = column). The recordings: audio files, a
--wav-scp or a --data-dir (per-speaker CMVN through its utt2spk, as in training). A CTC model is refused.

  steps/compute_loglikes.py exp/fsdd/viterbi --data-dir data/fsdd/test --out-dir exp/fsdd/viterbi/loglikes_test
"""

import logging
from pathlib import Path

import kaldiio

from phonerec.base.files import copy_atomic
from phonerec.inference import load_model, read_recordings
from phonerec.pipeline.cli import model_tool_main, model_tool_parser

log = logging.getLogger("phonerec")


def main(args) -> None:
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


def parser():
    p = model_tool_parser(__doc__)
    p.add_argument("--out-dir", type=Path, required=True, help="where loglikes.ark, loglikes.scp, states.txt go")
    return p


if __name__ == "__main__":
    model_tool_main(main, parser())
