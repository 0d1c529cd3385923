#!/usr/bin/env python3
"""Speed perturbation (train.speed_perturb, Kaldi's perturb_data_dir_speed_3way.sh): a training data dir ->
a data dir of its utterances and a copy at each factor (ids prefixed sp<factor>-), the copies' audio under
<out_dir>/wav. Skipped when done with the same factors and input."""

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.prepare_stage import speed_perturb_stage


def main(args, cfg):
    with exclusive(args.out_dir):
        speed_perturb_stage(cfg, args.data_dir, args.out_dir)


if __name__ == "__main__":
    step_main(main, __doc__, [("data_dir", "training data dir"), ("out_dir", "output data dir (<data>/train_sp)")])
