#!/usr/bin/env python3
"""The table and plot of run_criteria.sh and run_cells.sh: every variant's runs under <runs-dir>/<variant>/seed<S>
side by side, written beside the recipe's results (paths.results, e.g. RESULTS.md) as <its stem>_<comparison>.md
and .png."""

import shlex
from pathlib import Path

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.results import COMPARISONS, comparison_table_path, write_comparison_table
from phonerec.pipeline.stage_keys import SCORE


def main(args, cfg):
    cfg = SCORE.view(cfg)
    command = f"./run_{args.comparison}.sh {shlex.join(args.overrides)}".strip()
    out_path = comparison_table_path(Path(cfg.paths.results), args.comparison)
    write_comparison_table(cfg, args.runs_dir, out_path, command, args.comparison)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [("runs_dir", "the dir holding <variant>/seed<S>/ for each variant and seed")],
        {"--comparison": {"choices": list(COMPARISONS), "required": True, "help": "which run_<comparison>.sh"}},
    )
