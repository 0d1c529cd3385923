#!/usr/bin/env python3
"""Check a Kaldi data dir: sorted unique ids, matching utterance sets, utt2spk/spk2utt agreement, non-empty
transcripts, phones known to the lang dir, complete readable audio, and feats.scp/cmvn.scp when present.
Exits 1 naming each bad file and line."""

import argparse
import sys
from pathlib import Path

from phonerec.base.errors import DataDirError
from phonerec.data.data_dir import validate_data_dir
from phonerec.pipeline.cli import setup_logging

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--lang", type=Path, help="lang dir whose phones.txt `text` must use")
    parser.add_argument("--no-audio", action="store_true", help="skip reading the audio headers")
    args = parser.parse_args()
    setup_logging()
    try:
        count = validate_data_dir(args.data_dir, args.lang, check_audio=not args.no_audio)
    except DataDirError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"{args.data_dir}: valid, {count} utterances")
