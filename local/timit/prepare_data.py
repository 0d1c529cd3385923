#!/usr/bin/env python3
"""Stage 0 for TIMIT: an LDC copy or the public sample (corpus.root; without it the sample is downloaded and
checked against its published size and MD5) -> Kaldi data dirs <data-dir>/{train,dev,test}, each with the
hand-labelled phone segments folded like the training labels (phones.ctm), and the lang dir <data-dir>/lang."""

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.prepare_stage import prepare_stage


def main(args, cfg):
    with exclusive(args.data_dir):
        prepare_stage(cfg, args.data_dir, "timit")


if __name__ == "__main__":
    step_main(main, __doc__, [("data_dir", "output: <data-dir>/{train,dev,test,lang}")])
