#!/usr/bin/env python3
"""The training loop's speed against the bare computation it drives, in one run: frames/s of an epoch of
`train_one_epoch` (the recipe's Viterbi task and loss, its batches, SpecAugment where the recipe has it, gradient
clipping, the loss read back each step) vs a raw step on the same padded batches (the same model: forward,
cross-entropy on fixed targets, backward, Adam), the padding waste of the length-bucketed batches, and the
re-alignment of the training set on one process with all the threads against split over two.

  . ./path.sh && python benchmarks/bench_train_loop.py recipe=fsdd corpus.root=../shared/corpora/fsdd
  . ./path.sh && python benchmarks/bench_train_loop.py recipe=timit_sample corpus.root=../shared/corpora/timit_sample

Stages 0-1 are run first (./run.sh, into --work). Each epoch is timed --rounds times, loop and raw alternating
(the machine is noisy), after one warm-up epoch of each; the fastest of each is reported. Record the figures in
benchmarks/RESULTS.md."""

import argparse
import copy
import random
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from phonerec.base.config import load_config
from phonerec.data.dataset import collate, make_batches
from phonerec.pipeline.stage_keys import TRAIN_VITERBI
from phonerec.pipeline.train_stages import viterbi_setup
from phonerec.training.augment import SpecAugment
from phonerec.training.loop import train_one_epoch

REPO = Path(__file__).resolve().parent.parent


def raw_epoch(model, optimizer, batches) -> float:
    """The bare step on pre-made padded batches; returns frames/s."""
    model.train()
    frames, start = 0, time.perf_counter()
    for feats, lengths, targets in batches:
        log_probs, _ = model(feats, lengths)
        loss = F.nll_loss(log_probs.transpose(1, 2), targets, ignore_index=-100, reduction="sum") / int(lengths.sum())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        frames += int(lengths.sum())
    return frames / (time.perf_counter() - start)


def first_epoch_batches(model, task, train_set, tcfg) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The raw step's batches: those of the loop's first epoch (train.seed), padded once, each with random frame
    targets of the model's outputs (-100 on padding): (feats, lengths, targets)."""
    examples = task.train_examples(train_set)
    random.seed(tcfg.seed)
    padded_batches = []
    for batch in make_batches([e.feats.shape[0] for e in examples], tcfg.batch_frames, tcfg.max_batch_utts, random):
        feats, lengths = collate([examples[i] for i in batch])
        targets = torch.randint(model.output.out_features, feats.shape[:2])
        targets[torch.arange(feats.shape[1])[None, :] >= lengths[:, None]] = -100
        padded_batches.append((feats, lengths, targets))
    return padded_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_train_loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [f"paths.data={args.work}/data", f"paths.exp={args.work}/exp", *args.overrides]
    subprocess.run(["./run.sh", "--stop-stage", "1", *overrides], cwd=REPO, check=True, capture_output=True)
    cfg = load_config(overrides)
    feats, recipe = args.work / "data" / cfg.features.name, cfg.recipe_name
    cfg = TRAIN_VITERBI.view(cfg)
    model, _, task, train_set = viterbi_setup(cfg, feats / "train", feats / "dev", args.work / "data" / "lang",
                                              args.work / "exp" / "bench")  # fmt: skip
    task.start(model)
    raw_model = copy.deepcopy(model)
    parameters = [*model.parameters(), *task.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=cfg.train.viterbi.lr)
    raw_optimizer = torch.optim.Adam(raw_model.parameters(), lr=cfg.train.viterbi.lr)
    augment = SpecAugment.from_config(cfg)

    padded_batches = first_epoch_batches(model, task, train_set, cfg.train)
    real = sum(int(lengths.sum()) for _, lengths, _ in padded_batches)
    padded = sum(feats.shape[0] * feats.shape[1] for feats, _, _ in padded_batches)

    loop_fps, raw_fps = [], []
    for epoch in range(args.rounds + 1):
        random.seed(cfg.train.seed + epoch)
        record = train_one_epoch(model, task, train_set, optimizer, cfg.train, epoch + 1, augment, parameters)
        loop_fps.append(record["frames_per_second"])
        raw_fps.append(raw_epoch(raw_model, raw_optimizer, padded_batches))
    loop, raw = max(loop_fps[1:]), max(raw_fps[1:])
    m = cfg.model
    print(f"recipe {recipe}: model {m.num_layers}x{m.hidden_size}, "
          f"criterion {cfg.train.viterbi.criterion}, SpecAugment {'on' if augment else 'off'}, "
          f"{len(task.train_examples(train_set))} utterances in {len(padded_batches)} batches, "
          f"{args.threads} threads")  # fmt: skip
    print(f"padding waste: {100 * (padded - real) / padded:.1f}% of the padded frames ({real} real of {padded})")
    print("| what | frames/s | ratio |\n|---|---:|---:|")
    print(f"| raw padded model forward + cross-entropy + backward + Adam | {raw:.0f} | 1.00 |")
    print(f"| `train_one_epoch` | {loop:.0f} | {loop / raw:.2f} |")
    print(f"(each round, loop: {[round(x) for x in loop_fps]}, raw: {[round(x) for x in raw_fps]})")

    # Re-alignment under torchrun: rank 0 alone with all the threads (phonerec.training.distributed.main_alone),
    # or split over the ranks, each with its share: each half timed alone with half the threads (the gathering
    # that a split needs left out, in its favour).
    model.eval()
    with torch.no_grad():
        alone = min(_timed(task._realign, model, train_set, "train") for _ in range(args.rounds))
        torch.set_num_threads(max(1, args.threads // 2))
        halves = [train_set[k::2] for k in range(2)]
        split = max(min(_timed(task._realign, model, h, "train") for _ in range(args.rounds)) for h in halves)
    print(f"re-alignment of the training set: rank 0 alone with {args.threads} threads {alone:.2f} s, split over "
          f"2 ranks {split:.2f} s (alone / split {alone / split:.2f})")  # fmt: skip


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
