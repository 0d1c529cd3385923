#!/usr/bin/env python3
"""Stage 0 for FSDD: download the release or take an existing copy (corpus.root), verify every recording
against the release's sha256 manifest, and write the Kaldi data dirs <data-dir>/{train,dev,test} and the
lang dir <data-dir>/lang. Skipped when done with the same corpus settings."""

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.prepare_stage import prepare_stage


def main(args, cfg):
    with exclusive(args.data_dir):
        prepare_stage(cfg, args.data_dir, "fsdd")


if __name__ == "__main__":
    step_main(main, __doc__, [("data_dir", "output: <data-dir>/{train,dev,test,lang}")])
