#!/usr/bin/env python3
"""HMM kernels on identical problems: the batched Viterbi aligner (phonerec.hmm.align.viterbi_align), the
batched forward-backward (phonerec.hmm.fullsum: explicit backward pass, and autograd through the forward
recursion), each by its compiled CPU kernel (phonerec.hmm.kernels, what runs on the CPU) and by its pure-torch
recursion (the reference, and the path on a GPU), against torchaudio's per-utterance C++ `forced_align`.

  . ./path.sh && python benchmarks/bench_align.py [--frames 300] [--labels 60] [--classes 48] [--batches 32 1]
  python benchmarks/bench_align.py --device cuda --batches 256 32      (benchmarks/gpu_check.sh: on a GPU)

The problem (as issue 12 states it): a chain of `--labels` labels of `--classes` without adjacent repeats, one
HMM state per label, no optional silence; forced_align gets the same scores plus a blank scored -1e4, so its
best path never takes it, and the paths must be identical (checked). One thread. Prints ms per utterance,
fastest of 3 after a warm-up, and each kernel's time as a multiple of forced_align's (below 1 = faster).
Then, on the CPU, the compiled kernels on scores like a trained model's (the right state of a segmentation
6-10 nats above the rest, 3 states per phone), where the scaled forward-backward's bound on underflow runs; and
graphs whose words have 2-3 pronunciations (phonerec.hmm.branched_kernels) against the chains of their first
pronunciations on the same scores.
Record them in benchmarks/RESULTS.md."""

import argparse
import functools
import time

import torch
import torchaudio.functional as F

from phonerec.hmm import kernels
from phonerec.hmm.align import (
    NEG_INF,
    Graph,
    Pronunciation,
    Topology,
    best_paths,
    build_graph,
    build_word_graph,
    graph_weights,
    node_emissions,
    pad_any,
    pad_graphs,
    viterbi_align,
)
from phonerec.hmm.fullsum import FLOOR, NO_PATH, forward_backward, forward_loglik, fullsum_loglik, occupations


def problem(batch: int, frames: int, labels: int, classes: int, gen: torch.Generator):
    topo = Topology(num_phones=classes + 1, states_per_phone=1)
    graphs = []
    for _ in range(batch):
        seq = [int(torch.randint(classes, (1,), generator=gen))]
        while len(seq) < labels:
            nxt = int(torch.randint(classes, (1,), generator=gen))
            if nxt != seq[-1]:
                seq.append(nxt)
        graphs.append(Graph(seq, [False] * labels))
    log_probs = torch.randn(batch, frames, classes, generator=gen).log_softmax(-1)
    return topo, graphs, torch.full((batch,), frames), log_probs


def fastest(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _synchronize()
        start = time.perf_counter()
        fn()
        _synchronize()  # GPU work is asynchronous: the clock is read once it is done
        times.append(time.perf_counter() - start)
    return min(times)


def _synchronize() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def bench_gpu_batch(batch: int, frames: int, labels: int, classes: int, gen: torch.Generator, device: str):
    """bench_batch's problems on a GPU: the torch kernels (what runs there) against forced_align on CUDA."""
    topo, graphs, lengths, log_probs, torchaudio_align, explicit, autograd = checked_problem(
        batch, frames, labels, classes, gen, device
    )
    batch_graphs = pad_graphs(graphs, 1, device)
    fb_problem = (
        node_emissions(log_probs, batch_graphs.states, batch_graphs.valid, FLOOR),
        lengths.to(device),
        graph_weights(batch_graphs, None, FLOOR),
    )
    candidates = [
        ("torchaudio forced_align on CUDA (per utterance)", torchaudio_align),
        ("viterbi_align, torch (graphs, weights, paths)", lambda: viterbi_align(log_probs, lengths, graphs, topo)),
        ("forward-backward kernel, torch", lambda: forward_backward(*fb_problem, batch_graphs)),
        ("full-sum log p + gradient, explicit backward (torch)", explicit),
        ("full-sum log p + gradient, autograd (torch)", autograd),
    ]
    return timed(candidates)


def timed(candidates) -> list[tuple[str, float, float]]:
    """(name, seconds, ratio to the first) of each (name, function)."""
    rows, reference_seconds = [], None
    for name, fn in candidates:
        seconds = fastest(fn)
        reference_seconds = reference_seconds or seconds
        rows.append((name, seconds, seconds / reference_seconds))
    return rows


def checked_problem(batch: int, frames: int, labels: int, classes: int, gen: torch.Generator, device: str):
    """The problem on `device`, with what both benchmarks time there: forced_align per utterance (its paths checked
    against viterbi_align's) and the full sum with its gradient, by the explicit backward pass and by autograd."""
    topo, graphs, lengths, log_probs = problem(batch, frames, labels, classes, gen)
    log_probs = log_probs.to(device)
    # forced_align's emissions: blank (index 0) scored -1e4, the classes shifted by one.
    with_blank = torch.cat([torch.full((batch, frames, 1), -1e4, device=device), log_probs], dim=2)
    targets = [(torch.tensor(g.states) + 1).to(device) for g in graphs]

    def torchaudio_align():
        return [F.forced_align(with_blank[b : b + 1], targets[b].unsqueeze(0), blank=0)[0][0] for b in range(batch)]

    alignment, _ = viterbi_align(log_probs, lengths, graphs, topo)
    reference = torchaudio_align()
    assert all(torch.equal(alignment[b].cpu(), reference[b].cpu() - 1) for b in range(batch)), "paths differ"
    grad_input = log_probs.clone().requires_grad_()

    def explicit():
        fullsum_loglik(grad_input, lengths, graphs, topo).sum().backward()

    def autograd():
        forward_loglik(grad_input, lengths, graphs, topo).sum().backward()

    return topo, graphs, lengths, log_probs, torchaudio_align, explicit, autograd


def bench_batch(batch: int, frames: int, labels: int, classes: int, gen: torch.Generator):
    """(kernel, seconds for the batch, ratio to forced_align) for each kernel, after checking the paths agree."""
    topo, graphs, lengths, log_probs, torchaudio_align, explicit, autograd = checked_problem(
        batch, frames, labels, classes, gen, "cpu"
    )
    batch_graphs = pad_graphs(graphs, 1, "cpu")
    problems = {}
    for fill in (NEG_INF, FLOOR):
        weights = graph_weights(batch_graphs, None, fill)
        problems[fill] = (node_emissions(log_probs, batch_graphs.states, batch_graphs.valid, fill), lengths, weights)
    nodes, _ = best_paths(*problems[NEG_INF], batch_graphs)

    def compiled_viterbi():
        return kernels.best_paths(log_probs, batch_graphs, lengths, problems[NEG_INF][2])

    assert torch.equal(nodes, compiled_viterbi()[0]), "torch's paths differ"

    candidates = [
        ("torchaudio forced_align (per utterance)", torchaudio_align),
        (
            "viterbi_align (compiled kernel; graphs, weights, paths)",
            lambda: viterbi_align(log_probs, lengths, graphs, topo),
        ),
        ("Viterbi kernel, compiled", compiled_viterbi),
        ("Viterbi kernel, torch", lambda: best_paths(*problems[NEG_INF], batch_graphs)),
        (
            "forward-backward kernel, compiled (scaled probabilities; log space where they fall short)",
            lambda: kernels.forward_backward(*problems[FLOOR], batch_graphs, FLOOR, NO_PATH, False),
        ),
        (
            "forward-backward kernel, compiled, log space only",
            lambda: kernels.log_space_forward_backward(*problems[FLOOR], batch_graphs, FLOOR, NO_PATH, False),
        ),
        ("forward-backward kernel, torch", lambda: forward_backward(*problems[FLOOR], batch_graphs)),
        (
            "occupations (compiled kernel; graphs, weights, log p + occupations)",
            lambda: occupations(log_probs, lengths, graphs, topo),
        ),
        ("full-sum log p + gradient, explicit backward (compiled)", explicit),
        ("full-sum log p + gradient, autograd (torch)", autograd),
    ]
    *_, exact = kernels.scaled_forward_backward(*problems[FLOOR], batch_graphs, NO_PATH, False)
    print(f"batch {batch}: the scaled kernel vouches for {int(exact.sum())} of {batch} utterances")
    return timed(candidates)


def bench_trained_like(batch: int, phones: int, classes: int, gen: torch.Generator) -> list[tuple[str, float, float]]:
    """The compiled kernels on scores like a trained model's on its own transcripts (the case of
    tests/test_kernels.py): (kernel, seconds for the batch, ratio to the Viterbi kernel)."""
    topo = Topology(num_phones=classes + 1, states_per_phone=3)
    graphs, rows = [], []
    for _ in range(batch):
        graph = build_graph(
            [int(p) for p in torch.randint(2, classes + 1, (phones,), generator=gen)], topo, None, False
        )
        durations = 1 + torch.poisson(torch.full((len(graph.states),), 2.0), generator=gen).long()
        states = torch.repeat_interleave(torch.tensor(graph.states), durations)
        logits = torch.randn(len(states), topo.num_states, generator=gen)
        logits[torch.arange(len(states)), states] += 6 + 4 * torch.rand(len(states), generator=gen)
        graphs.append(graph)
        rows.append(logits.log_softmax(-1))
    log_probs = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    lengths = torch.tensor([len(r) for r in rows])
    padded = pad_graphs(graphs, 3, "cpu")
    viterbi_weights, weights = graph_weights(padded, None, NEG_INF), graph_weights(padded, None, FLOOR)
    emissions = node_emissions(log_probs, padded.states, padded.valid, FLOOR)
    *_, exact = kernels.scaled_forward_backward(emissions, lengths, weights, padded, NO_PATH, False)
    print(
        f"trained-model-like scores: {batch} utterances of {phones} phones x 3 states, "
        f"{float(lengths.float().mean()):.0f} frames on average; the scaled kernel vouches for {int(exact.sum())}"
    )
    return timed(
        [
            (
                "Viterbi kernel, compiled",
                lambda: kernels.best_paths(log_probs, padded, lengths, viterbi_weights),
            ),
            (
                "forward-backward kernel, compiled (scaled; its bound on underflow running)",
                lambda: kernels.forward_backward(emissions, lengths, weights, padded, FLOOR, NO_PATH, False),
            ),
            (
                "forward-backward kernel, compiled, log space only",
                lambda: kernels.log_space_forward_backward(emissions, lengths, weights, padded, FLOOR, NO_PATH, False),
            ),
        ]
    )


def bench_variants(batch: int, words: int, classes: int, gen: torch.Generator) -> list[tuple[str, float, float]]:
    """Graphs whose words have 2-3 pronunciations (phonerec.hmm.branched_kernels) against the chains of each word's
    first pronunciation (the chain kernels), on scores like a trained model's along the first pronunciations:
    (kernel, seconds for the batch, ratio to the same work on the chains)."""
    topo = Topology(num_phones=classes + 1, states_per_phone=3)
    branched, chains, rows = [], [], []
    for _ in range(batch):
        spec = []
        for _ in range(words):
            first = [
                int(p)
                for p in torch.randint(2, classes + 1, (int(torch.randint(2, 5, (1,), generator=gen)),), generator=gen)
            ]
            prons = [tuple(first)]
            while len(prons) < int(torch.randint(2, 4, (1,), generator=gen)):  # a phone changed or dropped
                other = list(first)
                k = int(torch.randint(len(other), (1,), generator=gen))
                if torch.rand(1, generator=gen) < 0.5:
                    other[k] = int(torch.randint(2, classes + 1, (1,), generator=gen))
                else:
                    del other[k]
                if other and tuple(other) not in prons:
                    prons.append(tuple(other))
            spec.append([Pronunciation(p, -0.5 * v) for v, p in enumerate(prons)])
        branched.append(build_word_graph(spec, topo))
        chain = build_word_graph([[Pronunciation(w[0].phones)] for w in spec], topo)
        chains.append(chain)
        durations = 1 + torch.poisson(torch.full((len(chain.states),), 2.0), generator=gen).long()
        states = torch.repeat_interleave(torch.tensor(chain.states), durations)
        logits = torch.randn(len(states), topo.num_states, generator=gen)
        logits[torch.arange(len(states)), states] += 6 + 4 * torch.rand(len(states), generator=gen)
        rows.append(logits.log_softmax(-1))
    log_probs = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    lengths = torch.tensor([len(r) for r in rows])
    work = {}
    for name, graphs in (("chains", chains), ("variants", branched)):
        padded = pad_any(graphs, 3, "cpu")
        viterbi_weights, weights = graph_weights(padded, None, NEG_INF), graph_weights(padded, None, FLOOR)
        emissions = node_emissions(log_probs, padded.states, padded.valid, FLOOR)
        *_, exact = kernels.scaled_forward_backward(emissions, lengths, weights, padded, NO_PATH, False)
        print(f"{name}: {padded.states.shape[1]} nodes at most; the scaled kernel vouches for {int(exact.sum())}")
        work[name] = [
            ("padding the graphs (pad_graphs / pad_branched)", functools.partial(pad_any, graphs, 3, "cpu")),
            (
                "viterbi_align (graphs, weights, compiled kernel)",
                functools.partial(viterbi_align, log_probs, lengths, graphs, topo),
            ),
            (
                "Viterbi kernel, compiled",
                functools.partial(kernels.best_paths, log_probs, padded, lengths, viterbi_weights),
            ),
            (
                "forward-backward kernel, compiled (scaled)",
                functools.partial(kernels.forward_backward, emissions, lengths, weights, padded, FLOOR, NO_PATH, False),
            ),
            (
                "forward-backward kernel, compiled, log space only",
                functools.partial(
                    kernels.log_space_forward_backward, emissions, lengths, weights, padded, FLOOR, NO_PATH, False
                ),
            ),
        ]
    print(
        f"{batch} utterances of {words} words, 2-3 pronunciations each, "
        f"{float(lengths.float().mean()):.0f} frames on average"
    )
    rows_out = []
    for (name, on_chains), (_, on_variants) in zip(work["chains"], work["variants"], strict=True):
        chain_time, variant_time = fastest(on_chains), fastest(on_variants)
        rows_out.append((name, variant_time, variant_time / chain_time))
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--labels", type=int, default=60)
    parser.add_argument("--classes", type=int, default=48)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the torch kernels against forced_align there")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    where = "1 thread" if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    print(f"T {args.frames}, {args.labels} labels of {args.classes}, {where}; ms per utterance (x forced_align)")
    print("| batch | kernel | ms / utt | x forced_align |")
    print("|---:|---|---:|---:|")
    for batch in args.batches:
        bench = bench_batch if args.device == "cpu" else functools.partial(bench_gpu_batch, device=args.device)
        for name, seconds, ratio in bench(batch, args.frames, args.labels, args.classes, gen):
            print(f"| {batch} | {name} | {1000 * seconds / batch:.2f} | {ratio:.2f} |")
    if args.device == "cpu":
        rows = bench_trained_like(32, 30, args.classes, gen)
        print("| batch | kernel | ms / utt | x the Viterbi kernel |")
        print("|---:|---|---:|---:|")
        for name, seconds, ratio in rows:
            print(f"| 32 | {name} | {1000 * seconds / 32:.2f} | {ratio:.2f} |")
        rows = bench_variants(32, 20, args.classes, gen)
        print(
            "| batch | kernel, graphs with 2-3 pronunciations per word | ms / utt "
            "| x on the first pronunciations' chains |"
        )
        print("|---:|---|---:|---:|")
        for name, seconds, ratio in rows:
            print(f"| 32 | {name} | {1000 * seconds / 32:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
