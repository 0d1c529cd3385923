#!/usr/bin/env python3
"""Decode a feature dir with a model and the phone LM: CTC prefix beam search (CTC model) or hybrid Viterbi
through a phone loop (Viterbi model). Without --tuned-dir the set tunes the decoder's weights over the grid
in decode.* (dev: tuning.json); with it, the values chosen there decode the set once (test)."""

from pathlib import Path

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.decode_stages import lm_decode_stage
from phonerec.pipeline.markers import exclusive


def main(args, cfg):
    with exclusive(args.decode_dir):
        lm_decode_stage(cfg, args.feat_dir, args.lang_dir, args.model_dir, args.lm_dir, args.decode_dir,
                        args.tuned_dir)  # fmt: skip


if __name__ == "__main__":
    step_main(main, __doc__, [("feat_dir", "feature dir to decode"), ("lang_dir", "lang dir"),
                              ("model_dir", "experiment dir of the model"), ("lm_dir", "phone LM dir"),
                              ("decode_dir", "output decode dir")],
              {"--tuned-dir": {"type": Path, "help": "decode dir of the set that tuned the weights"}})  # fmt: skip
