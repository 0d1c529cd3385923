#!/usr/bin/env python3
"""Print config values, one a line, for run.sh: get_config.py KEY... -- [key=value ...].
Composing the config here first also rejects bad overrides before any stage runs."""

import sys

from omegaconf import OmegaConf

from phonerec.pipeline.config import load_config

if __name__ == "__main__":
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    keys, overrides = argv[:split], argv[split + 1 :]
    try:
        cfg = load_config(overrides)
        for key in keys:
            value = OmegaConf.select(cfg, key, throw_on_missing=True, default=KeyError)
            if value is KeyError:
                raise KeyError(f"no config key '{key}'")
            print(value)
    except Exception as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(1)
