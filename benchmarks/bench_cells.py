#!/usr/bin/env python3
"""The recurrent cells' speed against the LSTM's, in one run: for each cell (model.cell; the gated-feedback ones
with a scalar and a vector gate), at the LSTM's hidden size and at the LSTM's parameter count (the hidden size
whose model comes closest to it, phonerec.model.recurrent.hidden_size_matching), on the recipe's own batches:

- forward + backward ms per batch: the model alone (cross-entropy on fixed random targets), the batches of an epoch;
- the training pass's frames per second: `train_one_epoch` with the recipe's Viterbi task (its criterion, the
  loss read back, gradient clipping, Adam), as `train_summary` reports it (epoch seconds also include validation
  and re-alignment, which this leaves out).

  . ./path.sh && python benchmarks/bench_cells.py recipe=timit_sample corpus.root=../shared/corpora/timit_sample \
      2>/dev/null    (the training loop's progress bars)

Stages 0-1 are run first (./run.sh, into --work). Each figure is the fastest of --rounds after a warm-up round;
the cells take turns round by round (the machine is noisy). Record the table in benchmarks/RESULTS.md."""

import argparse
import random
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_train_loop import first_epoch_batches  # benchmarks/, the script's own dir

from phonerec.base.config import load_config
from phonerec.base.schema import GF_CELLS
from phonerec.model.recurrent import hidden_size_matching, num_parameters
from phonerec.pipeline.stage_keys import TRAIN_VITERBI
from phonerec.pipeline.train_stages import viterbi_setup
from phonerec.training.loop import train_one_epoch

REPO = Path(__file__).resolve().parent.parent
CELLS = [
    ("lstm", "scalar"),
    ("gru", "scalar"),
    ("rnn_tanh", "scalar"),
    ("rnn_relu", "scalar"),
    *((cell, gate) for cell in GF_CELLS for gate in ("scalar", "vector")),
]


class Contender:
    """One cell at one hidden size: its model, task and optimizer as the Viterbi stage makes them, its padded
    batches, and its best figures so far."""

    def __init__(self, overrides: list[str], work: Path, cell: str, gate: str, hidden_size: int):
        cfg = TRAIN_VITERBI.view(
            load_config([*overrides, f"model.cell={cell}", f"model.gf_gate={gate}", f"model.hidden_size={hidden_size}"])
        )
        feats = work / "data" / load_config(overrides).features.name
        self.cfg, self.cell, self.gate, self.hidden_size = cfg, cell, gate, hidden_size
        self.model, _, self.task, self.train_set = viterbi_setup(
            cfg, feats / "train", feats / "dev", work / "data" / "lang", work / "exp" / "bench"
        )
        self.task.start(self.model)
        self.parameters = [*self.model.parameters(), *self.task.parameters()]
        self.optimizer = torch.optim.Adam(self.parameters, lr=cfg.train.viterbi.lr)
        self.batches = first_epoch_batches(self.model, self.task, self.train_set, cfg.train)
        self.ms_per_batch, self.frames_per_second = [], []

    def round(self, epoch: int) -> None:
        self.model.train()
        start = time.perf_counter()
        for feats, lengths, targets in self.batches:
            log_probs, _ = self.model(feats, lengths)
            loss = F.nll_loss(log_probs.transpose(1, 2), targets, ignore_index=-100, reduction="sum")
            self.model.zero_grad(set_to_none=True)
            (loss / int(lengths.sum())).backward()
        self.ms_per_batch.append(1000 * (time.perf_counter() - start) / len(self.batches))
        random.seed(self.cfg.train.seed + epoch)
        record = train_one_epoch(
            self.model, self.task, self.train_set, self.optimizer, self.cfg.train, epoch, None, self.parameters
        )
        self.frames_per_second.append(record["frames_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_cells")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cells", nargs="+", default=[f"{c}:{g}" for c, g in CELLS], help="cell:gate ...")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [f"paths.data={args.work}/data", f"paths.exp={args.work}/exp", *args.overrides]
    subprocess.run(["./run.sh", "--stop-stage", "1", *overrides], cwd=REPO, check=True, capture_output=True)
    mcfg = load_config(overrides).model
    cells = [tuple(c.split(":")) for c in args.cells]
    if cells[0] != ("lstm", "scalar"):
        cells.insert(0, ("lstm", "scalar"))  # the reference
    lstm = Contender(overrides, args.work, "lstm", "scalar", mcfg.hidden_size)
    target = num_parameters(lstm.model)
    shape = {
        "input_dim": lstm.model.input_dim,
        "num_outputs": lstm.model.output.out_features,
        "num_layers": mcfg.num_layers,
        "splice": mcfg.splice,
        "subsample": mcfg.subsample,
    }
    contenders = [lstm]
    for cell, gate in cells[1:]:
        sizes = {mcfg.hidden_size, hidden_size_matching(target, **shape, cell=cell, gf_gate=gate)}
        contenders += [Contender(overrides, args.work, cell, gate, size) for size in sorted(sizes)]
    for epoch in range(args.rounds + 1):
        for contender in contenders:
            contender.round(epoch + 1)

    print(
        f"{load_config(overrides).recipe_name}: {mcfg.num_layers} layers, LSTM {mcfg.hidden_size} per direction "
        f"({target} parameters), {len(lstm.batches)} batches of at most {lstm.cfg.train.batch_frames} frames, "
        f"{lstm.cfg.train.viterbi.criterion} criterion, {args.threads} threads, torch {torch.__version__}, "
        f"fastest of {args.rounds} rounds after a warm-up"
    )
    print("| cell | gate | hidden | parameters | fwd+bwd ms/batch | / LSTM | training frames/s | LSTM / this |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    lstm_ms, lstm_fps = min(lstm.ms_per_batch[1:]), max(lstm.frames_per_second[1:])
    for c in contenders:
        ms, fps, params = min(c.ms_per_batch[1:]), max(c.frames_per_second[1:]), num_parameters(c.model)
        gate = c.gate if c.cell in GF_CELLS else ""
        print(
            f"| {c.cell} | {gate} | {c.hidden_size} | {params} ({params / target:.2f}) | {ms:.0f} | "
            f"{ms / lstm_ms:.2f} | {fps:.0f} | {lstm_fps / fps:.2f} |"
        )


if __name__ == "__main__":
    main()
