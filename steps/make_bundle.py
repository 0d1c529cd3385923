#!/usr/bin/env python3
"""Write a trained model's bundle (stage 6): <model-dir>'s decode checkpoint (and a Viterbi model's alignment
checkpoint), the lang dir, the LMs, the feature and decoder settings, and each decoder's values chosen on dev
with its dev and test figures, into <bundle-dir>; phonerec.inference.load_model(<model-dir>) reads it, and so do
steps/transcribe.py and steps/align.py. <feat-dir>: the feature dir the model was trained on."""

from phonerec.base.ownership import exclusive
from phonerec.pipeline.bundle_stage import bundle_stage
from phonerec.pipeline.cli import step_main


def main(args, cfg):
    with exclusive(args.bundle_dir):
        bundle_stage(cfg, args.feat_dir, args.lang_dir, args.lm_dir, args.model_dir, args.bundle_dir)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [
            ("feat_dir", "feature dir the model was trained on"),
            ("lang_dir", "lang dir"),
            ("lm_dir", "LM dir (stage 4's make_lm)"),
            ("model_dir", "experiment dir of the model, decoded and scored (stages 4 and 5)"),
            ("bundle_dir", "output bundle dir"),
        ],
    )
