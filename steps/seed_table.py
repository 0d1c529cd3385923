#!/usr/bin/env python3
"""The seed table of run_seeds.sh: mean and min-max over the seeds' exp dirs (<seeds-dir>/seed<S>) of each model
and decoder's PER or WER on each split of decode.splits, and of the training figures, written to <out>."""

import shlex

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.results import write_seed_table
from phonerec.pipeline.stage_keys import SCORE


def main(args, cfg):
    seeds = [int(s) for s in args.seeds.split()]
    command = "./run_seeds.sh --seeds " + shlex.quote(args.seeds) + " " + shlex.join(args.overrides)
    write_seed_table(SCORE.view(cfg), {s: args.seeds_dir / f"seed{s}" for s in seeds}, args.out, command.strip())


if __name__ == "__main__":
    dirs = [("out", "the table (markdown)"), ("seeds_dir", "the dir holding seed<S>/ for each seed")]
    step_main(main, __doc__, dirs, {"--seeds": {"required": True, "help": 'the seeds, e.g. "0 1 2"'}})
