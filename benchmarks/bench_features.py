#!/usr/bin/env python3
"""Feature extraction speed: the stage (steps/make_features.py logic) with nj=1 and nj=2 against a plain
loop of soundfile + torchaudio.compliance.kaldi.mfcc over the same files, in one run.

  python benchmarks/bench_features.py [--corpus ../shared/corpora/fsdd] [--utts 1000]

Prints wall times, real-time factors and the ratios to the plain loop; record them in benchmarks/RESULTS.md."""

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from phonerec.base.config import load_config
from phonerec.data.audio import read_audio
from phonerec.data.data_dir import Utterance, write_data_dir
from phonerec.data.features import compute_features
from phonerec.pipeline.features_stage import make_features


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/corpora/fsdd")
    parser.add_argument("--utts", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    wavs = sorted((args.corpus / "recordings").glob("*.wav"))[: args.utts]
    utts = [Utterance(f"s_{w.stem}", "s", str(w), ["a"]) for w in wavs]
    cfg = load_config(["corpus.sample_rate=8000"])
    audio_seconds = sum(len(read_audio(w)[0]) / 8000 for w in wavs)

    start = time.perf_counter()
    for w in wavs:
        samples, rate = read_audio(w)
        compute_features(samples, rate, cfg.features)
    plain = time.perf_counter() - start

    rows = [("plain loop, 1 process", plain)]
    with tempfile.TemporaryDirectory() as tmp:
        write_data_dir(Path(tmp) / "data", utts)
        for nj in (1, 2):
            start = time.perf_counter()
            make_features(
                Path(tmp) / "data", Path(tmp) / f"feats{nj}", load_config(["corpus.sample_rate=8000", f"nj={nj}"])
            )
            rows.append(
                (f"make_features nj={nj} (with validation, CMVN, worker start-up)", time.perf_counter() - start)
            )

    print(f"{len(wavs)} utterances, {audio_seconds:.1f} s of 8 kHz audio, MFCC 13, {torch.__version__}")
    print(f"{'what':<62} {'wall s':>8} {'x real time':>12} {'ratio to plain':>15}")
    for name, seconds in rows:
        print(f"{name:<62} {seconds:8.2f} {audio_seconds / seconds:12.0f} {seconds / plain:15.2f}")


if __name__ == "__main__":
    main()
