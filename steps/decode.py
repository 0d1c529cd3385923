#!/usr/bin/env python3
"""Greedy decoding of a feature dir with a trained model (<model-dir>/<decode.checkpoint>.pt): CTC best path,
or for a Viterbi model the frame argmax with repeats merged. Writes hyp.txt, ref.txt and utt2spk."""

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.decode_stages import decode_stage
from phonerec.pipeline.markers import exclusive


def main(args, cfg):
    with exclusive(args.decode_dir):
        decode_stage(cfg, args.feat_dir, args.lang_dir, args.model_dir, args.decode_dir)


if __name__ == "__main__":
    step_main(main, __doc__, [("feat_dir", "feature dir to decode"), ("lang_dir", "lang dir"),
                              ("model_dir", "experiment dir of the model"),
                              ("decode_dir", "output decode dir")])  # fmt: skip
