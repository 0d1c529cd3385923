#!/usr/bin/env python3
"""Check a corpus of your own (recipe=kaldi) without training, as `mfa validate` does: the data dirs (Kaldi's
utils/validate_data_dir.sh checks) and the dict dir (utils/validate_dict_dir.pl's), every recording read (unreadable,
empty or silent audio, sample rates), words out of the lexicon, utterances too short for their phones, speakers with
few utterances. Writes <report-dir>/validation.txt (the summary, each error and warning), oovs_found.txt and
utterance_oovs.txt; exits 1 when anything would stop training (stage 0 of run.sh runs the same checks), else 0.

  steps/validate_corpus.py exp/check recipe=kaldi corpus.name=mine corpus.train_dir=data/mine corpus.dict_dir=dict
"""

import sys

from phonerec.base.ownership import claim_dir
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.prepare_stage import validate_corpus


def main(args, cfg):
    if not validate_corpus(cfg, claim_dir(args.report_dir, "<report-dir>")):
        sys.exit(1)


if __name__ == "__main__":
    step_main(main, __doc__, [("report_dir", "output: validation.txt, oovs_found.txt, utterance_oovs.txt")])
