#!/usr/bin/env python3
"""Score decode dirs (per.json, per.txt: PER with Corr/Sub/Del/Ins, per speaker) and write the recipe's
RESULTS.md (paths.results) from the decode dirs and training summaries under <exp-dir>."""

import shlex
from pathlib import Path

from phonerec.pipeline.cli import step_main
from phonerec.pipeline.score_stages import score_stage, word_score_stage, write_results


def main(args, cfg):
    for model in ("viterbi", "ctc"):  # not the runs moved aside to <model>.<digest>
        for decode_dir in sorted((args.exp_dir / model).glob("decode_*")):
            if decode_dir.name.endswith("_words"):
                word_score_stage(decode_dir)
            else:
                score_stage(cfg, decode_dir)
    command = "./run.sh " + shlex.join(args.overrides)
    write_results(cfg, args.data_dir, args.exp_dir, Path(cfg.paths.results), command)


if __name__ == "__main__":
    step_main(main, __doc__, [("data_dir", "the recipe's data dir"), ("exp_dir", "the recipe's experiment dir")])
