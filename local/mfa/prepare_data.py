#!/usr/bin/env python3
"""Stage 0 for a corpus of the user's own as an MFA folder and dictionary (recipe=mfa): corpus.root and
corpus.dictionary made into the Kaldi form <data-dir>/local/{train,dev,test,dict} (transcripts normalised by the
README's rule), then checked and prepared from there as recipe=kaldi prepares a corpus: <data-dir>/{train,dev[,test]}
and <data-dir>/lang, with <data-dir>/layout.txt (where each recording's TextGrid goes). The folder is only read.
Skipped when done with the same settings and the same files."""

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.prepare_stage import prepare_stage


def main(args, cfg):
    with exclusive(args.data_dir):
        prepare_stage(cfg, args.data_dir, "mfa")


if __name__ == "__main__":
    step_main(main, __doc__, [("data_dir", "output: <data-dir>/{train,dev,test,lang}")])
