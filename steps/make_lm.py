#!/usr/bin/env python3
"""Estimate phone n-gram LMs (decode.lm_order, and a bigram for the hybrid decoder) from the training
transcripts <train-dir>/text (or --transcripts: the Viterbi run's phones.train.txt, the pronunciations its
alignments chose with hmm.pronunciations=variants), and with the words decoder a word bigram from
<train-dir>/text.words, as ARPA files in <lm-dir>."""

from pathlib import Path

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.decode_stages import make_lm_stage


def main(args, cfg):
    with exclusive(args.lm_dir):
        make_lm_stage(cfg, args.train_dir, args.lm_dir, args.transcripts)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [("train_dir", "training data dir (its text)"), ("lm_dir", "output LM dir")],
        {"--transcripts": {"type": Path, "help": "phone transcripts in place of <train-dir>/text"}},
    )
