#!/usr/bin/env python3
"""Stage 8: the whole corpus aligned, as an aligner's user expects it: every utterance of every split of <data-dir>
(data/<recipe>: train, dev, test) force-aligned by the Viterbi model's bundle (<model-dir>/bundle, stage 6; its
alignment checkpoint, decode.align_checkpoint) into <out-dir>: textgrids/ (a TextGrid per recording, laid out as an
MFA corpus folder is), phones.ctm and words.ctm (the recordings' timeline), unaligned.txt and alignment_scores.tsv
(phonerec.pipeline.align_stage). The model runs on train.device with decode.num_threads threads."""

import torch

from phonerec.base.ownership import exclusive
from phonerec.pipeline.align_stage import align_corpus_stage
from phonerec.pipeline.cli import step_main


def main(args, cfg):
    torch.set_num_threads(cfg.decode.num_threads)
    with exclusive(args.out_dir):
        align_corpus_stage(args.model_dir, args.data_dir, args.out_dir, cfg.train.device)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [
            ("model_dir", "experiment dir of the Viterbi model (with bundle/)"),
            ("data_dir", "data/<recipe>, holding the split data dirs"),
            ("out_dir", "output"),
        ],
    )
