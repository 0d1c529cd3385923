#!/usr/bin/env python3
"""The spread tables: of run_seeds.sh (--seeds), the mean and min-max over the seeds' exp dirs (<runs-dir>/seed<S>),
written beside the recipe's results (paths.results, e.g. RESULTS.md) as <its stem>_seeds.md; of run_loso.sh
(--folds), the same over the folds' exp dirs (<runs-dir>/<held-out speaker>), as <its stem>_loso.md. Each holds
every model and decoder's PER or WER on each split of decode.splits and the training figures."""

import shlex
from pathlib import Path

from phonerec.base.errors import RecipeError
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.results import loso_table_path, seed_table_path, write_loso_table, write_seed_table
from phonerec.pipeline.stage_keys import SCORE


def main(args, cfg):
    cfg = SCORE.view(cfg)
    results = Path(cfg.paths.results)
    if (args.seeds is None) == (args.folds is None):
        raise RecipeError("give either --seeds or --folds")
    if args.seeds is not None:
        seeds = [int(s) for s in args.seeds.split()]
        command = f"./run_seeds.sh --seeds {shlex.quote(args.seeds)} {shlex.join(args.overrides)}".strip()
        dirs = {s: args.runs_dir / f"seed{s}" for s in seeds}
        write_seed_table(cfg, dirs, seed_table_path(results), command)
    else:
        command = f"./run_loso.sh {shlex.join(args.overrides)}".strip()
        dirs = {speaker: args.runs_dir / speaker for speaker in args.folds.split()}
        write_loso_table(cfg, dirs, args.test_speakers, loso_table_path(results), command)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [("runs_dir", "the dir holding seed<S>/ for each seed, or <speaker>/ for each fold")],
        {
            "--seeds": {"help": 'the seeds, e.g. "0 1 2"'},
            "--folds": {"help": 'the held-out speakers, e.g. "george jackson lucas"'},
            "--test-speakers": {"default": "", "help": "with --folds: the folds' test speakers, for the table"},
        },
    )
