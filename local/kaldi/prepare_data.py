#!/usr/bin/env python3
"""Stage 0 for a corpus of the user's own in Kaldi's form (recipe=kaldi): the data dirs corpus.train_dir (and
corpus.dev_dir, corpus.test_dir where given) and the dict dir corpus.dict_dir, checked as steps/validate_corpus.py
checks them, then copied into the Kaldi data dirs <data-dir>/{train,dev[,test]} (text as phones, text.words the
words) and the lang dir <data-dir>/lang; the user's dirs are only read. Skipped when done with the same settings
and the same files."""

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.prepare_stage import prepare_stage


def main(args, cfg):
    with exclusive(args.data_dir):
        prepare_stage(cfg, args.data_dir, "kaldi")


if __name__ == "__main__":
    step_main(main, __doc__, [("data_dir", "output: <data-dir>/{train,dev,test,lang}")])
