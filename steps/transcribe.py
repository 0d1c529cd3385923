#!/usr/bin/env python3
"""Transcribe recordings with a trained model: <exp-dir> is a model's experiment dir (exp/<recipe>/viterbi or
.../ctc, with the bundle stage 6 wrote) or a bundle dir; the recordings are audio files (any sample rate and
channel count: resampled and downmixed), a --wav-scp, or a --data-dir (its speakers then share CMVN statistics
as in training). Prints each recording's phones and, for models with a word decoder (the digit recipes), words,
then each word and phone with its start and end in seconds. Decoders: --phone-decoder and --word-decoder (names
in the bundle's decoders.json: greedy, lm, words); by default those of the lowest dev PER and dev WER.
--out-dir also writes phones.ctm, words.ctm and a Praat TextGrid per recording.

  steps/transcribe.py exp/fsdd/ctc my_recording.wav
"""

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch

from phonerec.inference import load_model, read_recordings, write_alignments
from phonerec.pipeline.cli import run_guarded, setup_logging

log = logging.getLogger("phonerec")


def main(args) -> None:
    torch.set_num_threads(args.num_threads)
    model = load_model(args.exp_dir, args.device)
    recordings = read_recordings(model.sample_rate, args.wavs, args.wav_scp, args.data_dir)
    found = model.transcribe(recordings, args.phone_decoder, args.word_decoder)
    for utt, t in found.items():
        if t.words is not None:
            print(f"{utt} words ({t.word_decoder}): {' '.join(s.label for s in t.words)}")
        print(f"{utt} phones ({t.phone_decoder}): {' '.join(s.label for s in t.phones)}")
        for kind, segments in (("word", t.words or []), ("phone", t.phones)):
            for s in segments:
                print(f"{utt} {kind} {s.start:.4f} {s.end:.4f} {s.label}")
    if args.out_dir is not None:
        write_alignments(args.out_dir, found)
        log.info("%s: phones.ctm, words.ctm and textgrid/ of %d recordings", args.out_dir, len(found))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dir", type=Path, help="a model's experiment dir (with bundle/) or a bundle dir")
    p.add_argument("wavs", type=Path, nargs="*", help="audio files")
    p.add_argument("--wav-scp", type=Path, help="a wav.scp: <utterance> <audio file> lines")
    p.add_argument("--data-dir", type=Path, help="a data dir (its wav.scp and utt2spk)")
    p.add_argument("--phone-decoder", help="greedy or lm (default: the lowest dev PER)")
    p.add_argument("--word-decoder", help="words (default: the lowest dev WER, where the model has one)")
    p.add_argument("--out-dir", type=Path, help="also write phones.ctm, words.ctm and textgrid/<utt>.TextGrid here")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--log", type=Path, help="log file")
    return p


if __name__ == "__main__":
    arguments = parser().parse_args()
    setup_logging(arguments.log)
    log.info("Running: %s", shlex.join(sys.argv))
    run_guarded(lambda: main(arguments))
