#!/usr/bin/env python3
"""CTC training of the BiLSTM (torch.nn.CTCLoss, blank = output 0), from the Viterbi model in <init-dir>
with a fresh phones+blank output layer (train.ctc.init=viterbi) or from scratch (train.ctc.init=scratch).
Resumes from the newest checkpoint; <exp-dir>/best.pt is the best epoch by dev PER."""

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.markers import exclusive
from phonerec.pipeline.train_stages import STEP_INPUTS, train_ctc_stage


def main(args, cfg):
    with exclusive(args.exp_dir):
        train_ctc_stage(cfg, args.train_dir, args.dev_dir, args.lang_dir, args.init_dir, args.exp_dir)


if __name__ == "__main__":
    step_main(
        main, __doc__, [*STEP_INPUTS, ("init_dir", "Viterbi experiment dir"), ("exp_dir", "output experiment dir")]
    )
