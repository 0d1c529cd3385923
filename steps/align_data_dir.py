#!/usr/bin/env python3
"""Stage 7: force-align a data dir with a trained model's bundle (<model-dir>/bundle, stage 6) into <out-dir>:
phones.ctm, words.ctm, textgrid/<utt>.TextGrid, and where the data dir has hand-labelled segments (TIMIT),
reference/textgrid/ of those and alignment_accuracy.json (phonerec.pipeline.align_stage). The model runs on
train.device with decode.num_threads threads. steps/align.py does the same for a user's own data dir."""

import torch

from phonerec.base.ownership import exclusive
from phonerec.pipeline.align_stage import align_stage
from phonerec.pipeline.cli import step_main


def main(args, cfg):
    torch.set_num_threads(cfg.decode.num_threads)
    with exclusive(args.out_dir):
        align_stage(args.model_dir, args.data_dir, args.out_dir, cfg.train.device)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [("model_dir", "experiment dir of the model (with bundle/)"), ("data_dir", "data dir"), ("out_dir", "output")],
    )
