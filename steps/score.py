#!/usr/bin/env python3
"""Score the decode dirs under <exp-dir> (PER with Corr/Sub/Del/Ins per speaker in per.json and per.txt; WER for
word decodes; reports) and write the recipe's RESULTS.md (paths.results) from them and the training summaries."""

import shlex

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.score_stages import score_stage


def main(args, cfg):
    score_stage(cfg, args.data_dir, args.exp_dir, "./run.sh " + shlex.join(args.overrides))


if __name__ == "__main__":
    step_main(main, __doc__, [("data_dir", "the recipe's data dir"), ("exp_dir", "the recipe's experiment dir")])
