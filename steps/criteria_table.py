#!/usr/bin/env python3
"""The table and plot of run_criteria.sh: every variant's runs under <runs-dir>/<variant>/seed<S> side by side,
written beside the recipe's results (paths.results, e.g. RESULTS.md) as <its stem>_criteria.md and .png."""

import shlex
from pathlib import Path

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.results import criteria_table_path, write_criteria_table
from phonerec.pipeline.stage_keys import SCORE


def main(args, cfg):
    cfg = SCORE.view(cfg)
    command = f"./run_criteria.sh {shlex.join(args.overrides)}".strip()
    write_criteria_table(cfg, args.runs_dir, criteria_table_path(Path(cfg.paths.results)), command)


if __name__ == "__main__":
    step_main(main, __doc__, [("runs_dir", "the dir holding <variant>/seed<S>/ for each variant and seed")], {})
