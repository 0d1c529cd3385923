#!/usr/bin/env python3
"""BLSTM speed: a packed bidirectional nn.LSTM against phonerec.model.recurrent's padded per-direction form (two
unidirectional nn.LSTMs, the backward one on each utterance reversed within its length), forward + backward
(training) and forward alone (decoding), same sizes and batches, in one run; then the largest difference of their
outputs with shared weights.

  PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/bench_blstm.py [--threads 2] [--repeats 3]

Prints ms per batch and the ratio packed / padded; record them in benchmarks/RESULTS.md."""

import argparse
import time

import torch
from torch import nn

from phonerec.model.recurrent import RecurrentAcousticModel

BATCH, INPUT, HIDDEN, LAYERS = 16, 39, 256, 3


def make_pair(num_layers: int) -> tuple[nn.LSTM, RecurrentAcousticModel]:
    """A packed bidirectional LSTM and a model whose layers hold the same weights."""
    packed = nn.LSTM(INPUT, HIDDEN, num_layers, batch_first=True, bidirectional=True)
    model = RecurrentAcousticModel(INPUT, 40, num_layers=num_layers, hidden_size=HIDDEN, dropout=0.0)
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(layer.forward_lstm, f"{name}_l0").copy_(getattr(packed, f"{name}_l{k}"))
                getattr(layer.backward_lstm, f"{name}_l0").copy_(getattr(packed, f"{name}_l{k}_reverse"))
    return packed, model


def make_batch(max_len: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(int(0.6 * max_len), max_len + 1, (BATCH,), generator=gen)
    lengths[0] = max_len
    feats = torch.randn(BATCH, max_len, INPUT, generator=gen)
    feats *= (torch.arange(max_len) < lengths.unsqueeze(1)).unsqueeze(-1)
    return feats, lengths


def run_packed(lstm: nn.LSTM, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = nn.utils.rnn.pack_padded_sequence(feats, lengths, batch_first=True, enforce_sorted=False)
    return nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=feats.size(1))[0]


def run_padded(model: RecurrentAcousticModel, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return model.encode(feats, lengths)[0]


def time_ms(fn, module, feats, lengths, mask, repeats: int, train: bool) -> float:
    """Fastest of repeats, after a warm-up: forward + backward when train, else forward without autograd."""
    times = []
    for i in range(repeats + 1):
        module.zero_grad(set_to_none=True)
        start = time.perf_counter()
        if train:
            (fn(module, feats, lengths) * mask).sum().backward()
        else:
            with torch.no_grad():
                fn(module, feats, lengths)
        if i:
            times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 400])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, input {INPUT}, "
        f"hidden {HIDDEN} per direction, {LAYERS} layers, fastest of {args.repeats} after a warm-up"
    )
    print(
        f"{'pass':<20} {'max frames':>10} {'frames in batch':>16} {'packed ms':>10} {'padded ms':>10} "
        f"{'packed/padded':>14}"
    )
    packed, model = make_pair(LAYERS)
    packed.train()
    model.train()
    batches = {max_len: make_batch(max_len, gen) for max_len in args.lengths}
    for train in (True, False):
        for max_len, (feats, lengths) in batches.items():
            mask = (torch.arange(max_len) < lengths.unsqueeze(1)).unsqueeze(-1).float()
            packed_ms = time_ms(run_packed, packed, feats, lengths, mask, args.repeats, train)
            padded_ms = time_ms(run_padded, model, feats, lengths, mask, args.repeats, train)
            print(
                f"{'forward + backward' if train else 'forward, no_grad':<20} {max_len:>10} "
                f"{int(lengths.sum()):>16} {packed_ms:>10.1f} {padded_ms:>10.1f} {packed_ms / padded_ms:>14.2f}"
            )

    for num_layers in (1, LAYERS):
        packed, model = make_pair(num_layers)
        feats, lengths = make_batch(max(args.lengths), gen)
        with torch.no_grad():
            reference = run_packed(packed.eval(), feats, lengths)
            ours = run_padded(model.eval(), feats, lengths)
        valid = torch.arange(feats.size(1)) < lengths.unsqueeze(1)
        diff = (reference - ours)[valid].abs().max().item()
        print(f"max abs difference, packed vs padded, shared weights, {num_layers} layer(s), valid frames: {diff:.2e}")


if __name__ == "__main__":
    main()
