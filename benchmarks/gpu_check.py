#!/usr/bin/env python3
"""The GPU check's training part (benchmarks/gpu_check.sh runs it): the TIMIT sample recipe's Viterbi training
(the full sum, its re-alignments) with `recipe=timit` model sizes (4 x 256 BLSTM), the same epochs on each of
--runs (device:precision), and a table of epoch time, frames/s, peak GPU memory and dev PER per run: GPU in fp32
and bf16 against the CPU on the same settings. Stages 0-1 are done in-process (no run.sh: the GPU machine has
no network for its environment).

  PYTHONPATH=src python3 benchmarks/gpu_check.py --corpus .gpu_check/timit_sample [--runs cpu:fp32]

On a machine without a GPU `--runs cpu:fp32 cpu:bf16` goes through the same code (train.device=cpu)."""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from phonerec.base.config import load_config
from phonerec.pipeline.cli import setup_logging
from phonerec.pipeline.features_stage import make_features
from phonerec.pipeline.prepare_stage import prepare_stage
from phonerec.pipeline.train_stages import train_viterbi_stage

# recipe=timit's model on the sample's data and batches; a fixed number of epochs, re-aligning as the sample does.
SETTINGS = [
    "recipe=timit_sample",
    "model.num_layers=4",
    "model.hidden_size=256",
    "model.dropout=0.3",
    "train.viterbi.patience=null",
    "train.viterbi.realign_epochs=[2,4]",
    "nj=4",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="a copy of the TIMIT sample")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gpu_check")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--runs", nargs="+", default=["cuda:fp32", "cuda:bf16", "cpu:fp32"])
    parser.add_argument("--cpu-threads", type=int, default=8)
    args = parser.parse_args()
    setup_logging(args.work / "gpu_check.log")
    shutil.rmtree(args.work / "exp", ignore_errors=True)
    data = args.work / "data"
    overrides = [
        *SETTINGS,
        f"corpus.root={args.corpus.resolve()}",
        f"paths.data={data}",
        f"train.viterbi.epochs={args.epochs}",
    ]
    cfg = load_config(overrides)
    prepare_stage(cfg, data, "timit")
    feats = data / cfg.features.name
    for split in ("train", "dev"):
        make_features(data / split, feats / split, cfg, lang_dir=data / "lang")

    rows = []
    for run in args.runs:
        device, precision = run.split(":")
        exp = args.work / "exp" / run.replace(":", "_")
        threads = args.cpu_threads if device == "cpu" else 2
        run_cfg = load_config(
            [*overrides, f"train.device={device}", f"train.precision={precision}", f"train.num_threads={threads}"]
        )
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        train_viterbi_stage(run_cfg, feats / "train", feats / "dev", data / "lang", exp)
        wall = time.perf_counter() - start
        summary = json.loads((exp / "train_summary.json").read_text())
        history = summary["history"]
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
        rows.append(
            (
                run,
                sum(r["seconds"] for r in history) / len(history),
                sum(r["frames_per_second"] for r in history) / len(history),
                peak,
                summary["best"]["per"],
                wall,
            )
        )
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"\nTIMIT sample, {args.epochs} epochs of Viterbi training (full sum), 4 x 256 BLSTM; {where}")
    print("| run | s / epoch (all included) | train frames/s | peak GPU MiB | best dev PER % | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for run, epoch_s, fps, peak, per, wall in rows:
        print(f"| {run} | {epoch_s:.1f} | {fps:.0f} | {peak:.0f} | {per:.2f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
