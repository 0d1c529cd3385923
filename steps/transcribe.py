#!/usr/bin/env python3
"""Transcribe recordings with a trained model: <exp-dir> is a model's experiment dir (exp/<recipe>/viterbi or
.../ctc, with the bundle stage 6 wrote), a bundle dir, or the recipe's exp dir (exp/<recipe>: the model and phone
decoder chosen on dev across both phases, result.json); the recordings are audio files (any sample rate and
channel count: resampled and downmixed), a --wav-scp, or a --data-dir (its speakers then share CMVN statistics
as in training). Prints each recording's phones and, for models with a word decoder (the digit recipes), words,
then each word and phone with its start and end in seconds. Decoders: --phone-decoder and --word-decoder (names
in the bundle's decoders.json: greedy, lm, words); by default those of the lowest dev PER and dev WER.
--out-dir also writes phones.ctm, words.ctm and a Praat TextGrid per recording. A recording longer than the
bundle's corpus.max_utterance_seconds is warned about: segment it first.

A digit model (FSDD, TIDIGITS) gives words and phones, a TIMIT model phones (its 48):

  steps/transcribe.py exp/fsdd/ctc my_recording.wav
  steps/transcribe.py exp/timit_sample --out-dir transcribed ../shared/corpora/timit_sample/timit/dr3-falk0/si1086.wav
"""

import logging
from pathlib import Path

from phonerec.inference import load_model, read_recordings, write_alignments
from phonerec.pipeline.cli import model_tool_main, model_tool_parser

log = logging.getLogger("phonerec")


def main(args) -> None:
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
        written = write_alignments(args.out_dir, found, recordings)
        log.info("%s: %s of %d recordings", args.out_dir, ", ".join(written), len(found))


def parser():
    p = model_tool_parser(__doc__)
    p.add_argument("--phone-decoder", help="greedy or lm (default: the lowest dev PER)")
    p.add_argument("--word-decoder", help="words (default: the lowest dev WER, where the model has one)")
    p.add_argument("--out-dir", type=Path, help="also write phones.ctm, words.ctm and textgrid/<utt>.TextGrid here")
    return p


if __name__ == "__main__":
    model_tool_main(main, parser())
