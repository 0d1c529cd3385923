#!/usr/bin/env python3
"""Viterbi training of the recurrent acoustic model (model.cell): flat start (uniform segmentation), frame
cross-entropy on the current alignment, re-alignment after the epochs in train.viterbi.realign_epochs (kept in
<exp-dir>/ali/iter<N>). Resumes from the newest checkpoint; <exp-dir>/best.pt is the best epoch by dev PER."""

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.train_stages import STEP_INPUTS, train_viterbi_stage, training_processes


def main(args, cfg):
    # Under torchrun (run.sh --ngpu N): one process of N, the run's lock taken by rank 0.
    with training_processes(cfg, args.exp_dir):
        train_viterbi_stage(cfg, args.train_dir, args.dev_dir, args.lang_dir, args.exp_dir)


if __name__ == "__main__":
    step_main(main, __doc__, [*STEP_INPUTS, ("exp_dir", "output experiment dir")])
