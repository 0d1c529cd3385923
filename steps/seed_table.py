#!/usr/bin/env python3
"""The seed table of run_seeds.sh: mean and min-max over the seeds' exp dirs (<seeds-dir>/seed<S>) of each model
and decoder's PER or WER on each split of decode.splits, and of the training figures, written beside the recipe's
results (paths.results, e.g. RESULTS.md) as <its stem>_seeds.md (RESULTS_seeds.md)."""

import shlex
from pathlib import Path

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.results import seed_table_path, write_seed_table
from phonerec.pipeline.stage_keys import SCORE


def main(args, cfg):
    cfg = SCORE.view(cfg)
    seeds = [int(s) for s in args.seeds.split()]
    command = f"./run_seeds.sh --seeds {shlex.quote(args.seeds)} {shlex.join(args.overrides)}".strip()
    dirs = {s: args.seeds_dir / f"seed{s}" for s in seeds}
    write_seed_table(cfg, dirs, seed_table_path(Path(cfg.paths.results)), command)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [("seeds_dir", "the dir holding seed<S>/ for each seed")],
        {"--seeds": {"required": True, "help": 'the seeds, e.g. "0 1 2"'}},
    )
