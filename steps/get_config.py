#!/usr/bin/env python3
"""Print config values, one a line, for run.sh: get_config.py [--preflight] KEY... -- [key=value ...]; the KEY
`corpus_splits` prints the data dirs stage 0 writes, `corpus_kind` the conf/corpus option (phonerec.base.schema).
Composing the config here first also rejects bad overrides before any stage runs. With --preflight (run.sh, before
it takes its locks) paths.data and paths.exp are claimed for the recipe, and the results file checked: a dir or file
the recipe did not make is refused before anything is written (phonerec.base.ownership)."""

import sys

from omegaconf import OmegaConf

from phonerec.base.config import load_config, repo_path
from phonerec.base.ownership import check_generated_file, claim_dir
from phonerec.base.schema import corpus_kind, corpus_splits

DERIVED = {"corpus_splits": lambda cfg: " ".join(corpus_splits(cfg)), "corpus_kind": corpus_kind}

if __name__ == "__main__":
    argv = sys.argv[1:]
    preflight = "--preflight" in argv
    argv = [arg for arg in argv if arg != "--preflight"]
    split = argv.index("--") if "--" in argv else len(argv)
    keys, overrides = argv[:split], argv[split + 1 :]
    try:
        cfg = load_config(overrides)
        if preflight:
            claim_dir(repo_path(cfg.paths.data), "paths.data")
            claim_dir(repo_path(cfg.paths.exp), "paths.exp")
            check_generated_file(repo_path(cfg.paths.results), "paths.results")
        for key in keys:
            if key in DERIVED:
                print(DERIVED[key](cfg))
                continue
            value = OmegaConf.select(cfg, key, throw_on_missing=True, default=KeyError)
            if value is KeyError:
                raise KeyError(f"no config key '{key}'")
            print(value)
    except Exception as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(1)
