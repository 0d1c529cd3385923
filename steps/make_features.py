#!/usr/bin/env python3
"""Extract Kaldi features (features.type: mfcc or fbank) for a data dir into a feature dir: a copy of the
data dir (its transcripts checked against --lang) with feats.scp, utt2num_frames and cmvn.scp (statistics per
features.cmvn), arks under ark/. Work is split over nj processes; a rerun with the same settings and inputs is a
logged no-op, and a killed run resumes with the jobs that did not finish."""

from pathlib import Path

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.features_stage import make_features


def main(args, cfg):
    with exclusive(args.feat_dir):
        make_features(args.data_dir, args.feat_dir, cfg, lang_dir=args.lang)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [("data_dir", "input data dir (wav.scp, utt2spk, ...)"), ("feat_dir", "output feature dir")],
        {"--lang": {"type": Path, "help": "lang dir whose phones.txt the transcripts must use"}},
    )
