#!/usr/bin/env python3
"""Stage 0 for TIDIGITS: an LDC copy (corpus.root, the folder holding tidigits/; names in any case) -> the
Kaldi data dirs <data-dir>/{train,dev,test} (the speaker groups in corpus.groups; dev = training speakers held
out, corpus.dev_speakers) and the lang dir <data-dir>/lang from the shared digit lexicon. Skipped when done
with the same corpus settings."""

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.prepare_stage import prepare_stage


def main(args, cfg):
    with exclusive(args.data_dir):
        prepare_stage(cfg, args.data_dir, "tidigits")


if __name__ == "__main__":
    step_main(main, __doc__, [("data_dir", "output: <data-dir>/{train,dev,test,lang}")])
