#!/usr/bin/env python3
"""The app of `./run.sh -m` (phonerec.pipeline.sweep): sweep.py [--stage N] [--stop-stage M] [--ngpu N]
[key=value,... ...] [hydra/launcher=... hydra.launcher.X=...]. Hydra's sweeper expands the overrides into jobs, its
launcher runs each job (run.sh's stages from 2 on), after the shared stages 0-1 have run once."""

import argparse
import json
import os
import sys

import hydra

from phonerec.pipeline.sweep import OPTIONS_ENV, naming_override, run_job


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def sweep(cfg):
    return run_job(cfg)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=int, default=0)
    parser.add_argument("--stop-stage", type=int, default=100)
    parser.add_argument("--ngpu", type=int, default=1)
    options, overrides = parser.parse_known_args()
    # to the callback and the jobs, wherever they run (the arguments as given: the command in the sweep's table)
    os.environ[OPTIONS_ENV] = json.dumps({**vars(options), "arguments": overrides})
    sys.argv = [sys.argv[0], "--multirun", *overrides, naming_override(overrides)]
    sweep()
