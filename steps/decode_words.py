#!/usr/bin/env python3
"""Word decoding constrained by the lexicon, with the word bigram (decode.words.*): WER and sentence error rate
for the digit corpora. A CTC model goes through torchaudio's lexicon beam search (LM weight and word score
tuned), a Viterbi model through a hybrid word loop (acoustic scale and word score tuned). Without --tuned-dir
the set tunes the weights (dev: tuning.json); with it, the values chosen there decode the set once (test)."""

from pathlib import Path

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.decode_stages import word_decode_stage
from phonerec.pipeline.markers import exclusive


def main(args, cfg):
    with exclusive(args.decode_dir):
        word_decode_stage(cfg, args.feat_dir, args.lang_dir, args.model_dir, args.lm_dir, args.decode_dir,
                          args.tuned_dir)  # fmt: skip


if __name__ == "__main__":
    step_main(main, __doc__, [("feat_dir", "feature dir to decode"), ("lang_dir", "lang dir"),
                              ("model_dir", "experiment dir of the model"), ("lm_dir", "LM dir"),
                              ("decode_dir", "output decode dir")],
              {"--tuned-dir": {"type": Path, "help": "decode dir of the set that tuned the weights"}})  # fmt: skip
