#!/usr/bin/env python3
"""CTC training of the recurrent acoustic model (torch.nn.CTCLoss, blank = output 0) from the Viterbi model in
<init-dir>, as train.ctc.init (or --init) says: viterbi (keeping its outputs: each phone's states pooled, the blank
a copy of silence), fresh (a new output layer of blank + phones) or scratch (a new model). Stops early once dev stops
improving (train.ctc.patience); resumes from the newest checkpoint; <exp-dir>/best.pt is the best epoch by dev PER."""

from omegaconf import OmegaConf

from phonerec.base.schema import CTC_INITS
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.train_stages import STEP_INPUTS, train_ctc_stage, training_processes


def main(args, cfg):
    if args.init is not None:  # after the overrides: the comparison runs of run.sh's stage 3 set their own init
        OmegaConf.update(cfg, "train.ctc.init", args.init)
    # Under torchrun (run.sh --ngpu N): one process of N, the run's lock taken by rank 0.
    with training_processes(cfg, args.exp_dir):
        train_ctc_stage(cfg, args.train_dir, args.dev_dir, args.lang_dir, args.init_dir, args.exp_dir)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [*STEP_INPUTS, ("init_dir", "Viterbi experiment dir"), ("exp_dir", "output experiment dir")],
        {"--init": {"choices": CTC_INITS, "help": "train.ctc.init for this run, whatever the overrides say"}},
    )
