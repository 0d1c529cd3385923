"""The compiled CPU kernels (phonerec.hmm.kernels, and phonerec.hmm.branched_kernels for graphs with pronunciation
variants) against the pure-torch recursions they replace on the CPU, which stay the path on a GPU: the same best
paths and scores, log-likelihoods, occupations and arc counts. Each on chains padded as chains and as branched
graphs (the same arcs read from predecessor lists), and on graphs whose words branch."""

from itertools import product

import pytest
import torch

from phonerec.hmm import kernels
from phonerec.hmm.align import (
    NEG_INF,
    Pronunciation,
    Topology,
    best_paths,
    build_graph,
    build_word_graph,
    graph_weights,
    node_emissions,
    pad_branched,
    pad_graphs,
)
from phonerec.hmm.fullsum import FLOOR, NO_PATH, ctc_graph, forward_backward
from phonerec.hmm.transitions import Transitions


def problems(dtype, seed):
    """A batch of graphs of every kind: optional silence or none, 1 or 2 states per phone, CTC's; some utterances
    too short for their graph; random transition probabilities."""
    gen = torch.Generator().manual_seed(seed)
    for n in (1, 2):
        topo = Topology(num_phones=7, states_per_phone=n)
        graphs, lengths = [], []
        for k in range(9):
            count = 3 if k == 4 else int(torch.randint(1, 5, (1,), generator=gen))
            phones = [int(p) for p in torch.randint(2, 7, (count,), generator=gen)]
            if k % 3 == 2 and n == 1:
                graph = ctc_graph([p - 1 for p in phones])  # outputs 1..5, the blank 0
            else:
                graph = build_graph(phones, topo, [0] if len(phones) > 1 else None, optional_silence=k % 3 == 0)
            graphs.append(graph)
            spare = int(torch.randint(-2, 12, (1,), generator=gen))
            lengths.append(2 if k == 4 else max(1, len(graph.states) // 2 + spare))  # k = 4: no path
        yield problem(topo, graphs, lengths, dtype, gen)


def problem(topo, graphs, lengths, dtype, gen):
    """(topo, graphs, lengths, random log-posteriors, random transition probabilities) of a batch."""
    transitions = Transitions(topo.num_states)
    with torch.no_grad():
        transitions.state_logits.copy_(torch.randn(topo.num_states, 2, generator=gen))
        transitions.silence_logits.copy_(torch.randn(2, generator=gen))
    log_probs = torch.randn(len(graphs), max(lengths), topo.num_states, generator=gen, dtype=dtype).log_softmax(-1)
    return topo, graphs, torch.tensor(lengths), log_probs, transitions


def variant_problems(dtype, seed):
    """Batches of word graphs whose words have 1-3 pronunciations (some sharing phones, with log-probabilities),
    with optional silence or none, beside a chain; some utterances too short for their graph."""
    gen = torch.Generator().manual_seed(100 + seed)
    for n in (1, 2):
        topo = Topology(num_phones=7, states_per_phone=n)
        graphs, lengths = [], []
        for k in range(7):
            words = []
            for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
                count = int(torch.randint(1, 4, (1,), generator=gen))
                prons = {
                    tuple(
                        int(p)
                        for p in torch.randint(2, 7, (int(torch.randint(1, 4, (1,), generator=gen)),), generator=gen)
                    )
                    for _ in range(count)
                }
                words.append(
                    [Pronunciation(p, -float(torch.rand(1, generator=gen)) * v) for v, p in enumerate(sorted(prons))]
                )
            graph = build_word_graph(words, topo, optional_silence=k % 2 == 0)
            graphs.append(graph)
            shortest = sum(min(len(p.phones) for p in w) for w in words) * n
            spare = int(torch.randint(-2, 10, (1,), generator=gen))
            lengths.append(max(1, shortest + spare) if k != 3 else max(1, shortest - 1))  # k = 3: no path
        yield problem(topo, graphs, lengths, dtype, gen)


def layouts(dtype, seed):
    """Every problem with its padding: chains as chains and as branched graphs, and graphs with variants."""
    for topo, graphs, lengths, log_probs, transitions in problems(dtype, seed):
        for pad in (pad_graphs, pad_branched):
            yield pad(graphs, topo.states_per_phone, "cpu"), lengths, log_probs, transitions
    for topo, graphs, lengths, log_probs, transitions in variant_problems(dtype, seed):
        yield pad_branched(graphs, topo.states_per_phone, "cpu"), lengths, log_probs, transitions


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_viterbi_equals_torchs(dtype, seed):
    for batch, lengths, log_probs, transitions in layouts(dtype, seed):
        for with_transitions in (False, True):
            weights = graph_weights(batch, transitions.log_probs() if with_transitions else None, NEG_INF, dtype)
            emissions = node_emissions(log_probs, batch.states, batch.valid, NEG_INF)
            nodes, scores = best_paths(emissions, lengths, weights, batch)
            fast_nodes, fast_scores = kernels.best_paths(log_probs, batch, lengths, weights)
            assert torch.equal(fast_nodes, nodes)
            assert torch.equal(torch.isinf(fast_scores), torch.isinf(scores)) and torch.isinf(scores).any()
            found = torch.isfinite(scores)
            assert torch.allclose(fast_scores[found], scores[found], rtol=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_forward_backward_equals_torchs(dtype, seed):
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for batch, lengths, log_probs, transitions in layouts(dtype, seed):
        weights = graph_weights(batch, transitions.log_probs(), FLOOR, dtype)
        emissions = node_emissions(log_probs, batch.states, batch.valid, FLOOR)
        loglik, gamma, counts = forward_backward(emissions, lengths, weights, batch, arc_counts=True)
        fast = kernels.forward_backward(emissions, lengths, weights, batch, FLOOR, NO_PATH, True)
        fast_loglik, fast_gamma, *fast_counts = fast
        assert torch.equal(torch.isinf(fast_loglik), torch.isinf(loglik)) and torch.isinf(loglik).any()
        found = torch.isfinite(loglik)
        assert torch.allclose(fast_loglik[found], loglik[found], **tolerance)
        assert torch.allclose(fast_gamma, gamma, **tolerance)
        for ours, reference in zip(fast_counts, (counts.arcs, counts.start, counts.end), strict=True):
            assert torch.allclose(ours, reference, **tolerance)


def test_nodes_far_below_the_frames_best_keep_their_share():
    """A frame whose best node no path can reach yet, 800 nats above the rest, and a path that must pass through
    nodes thousands of nats below the best of their frames: beyond float64's range as probabilities, exact in log
    space, as torch's recursion computes it."""
    topo = Topology(num_phones=7)
    graphs = [build_graph([2, 3, 4], topo, optional_silence=False), build_graph([5, 6], topo)]
    lengths = torch.tensor([6, 6])
    log_probs = torch.randn(2, 6, topo.num_states, dtype=torch.float64) - 5
    log_probs[0, 0, 3] = 800.0  # state 3 (phone 4) is the graph's last node: unreachable at frame 0
    log_probs[0, 1:4, 1] = 900.0  # the first phone's state scores best at frames 1-3, while the path must move on
    for pad in (pad_graphs, pad_branched):
        batch = pad(graphs, 1, "cpu")
        weights = graph_weights(batch, None, FLOOR, torch.float64)
        emissions = node_emissions(log_probs, batch.states, batch.valid, FLOOR)
        loglik, gamma, counts = forward_backward(emissions, lengths, weights, batch, arc_counts=True)
        fast_loglik, fast_gamma, fast_arcs, *_ = kernels.forward_backward(
            emissions, lengths, weights, batch, FLOOR, NO_PATH, True
        )
        *_, exact = kernels.scaled_forward_backward(emissions, lengths, weights, batch, NO_PATH, True)
        assert not exact[0]  # scaled probabilities lose this utterance's paths: it is redone in log space
        assert torch.isfinite(fast_loglik).all()
        assert torch.allclose(fast_loglik, loglik, rtol=1e-12) and torch.allclose(fast_gamma, gamma, atol=1e-12)
        assert torch.allclose(fast_arcs, counts.arcs, atol=1e-12)


def test_the_scaled_kernel_vouches_for_what_a_trained_model_gives():
    """Scores like a trained model's on its own transcripts (the right state 6-10 nats above the rest along a
    segmentation): the scaled kernel needs no fallback and equals the log-space kernel to float64's precision."""
    gen = torch.Generator().manual_seed(3)
    topo = Topology(num_phones=30, states_per_phone=3)
    graphs, lengths, rows = [], [], []
    for _ in range(6):
        phones = [int(p) for p in torch.randint(2, 30, (25,), generator=gen)]
        graph = build_graph(phones, topo, optional_silence=False)
        durations = 1 + torch.poisson(torch.full((len(graph.states),), 2.0), generator=gen).long()
        states = torch.repeat_interleave(torch.tensor(graph.states), durations)
        logits = torch.randn(len(states), topo.num_states, generator=gen, dtype=torch.float64)
        logits[torch.arange(len(states)), states] += 6 + 4 * torch.rand(len(states), generator=gen, dtype=torch.float64)
        graphs.append(graph)
        lengths.append(len(states))
        rows.append(logits.log_softmax(-1))
    log_probs = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    lengths = torch.tensor(lengths)
    transitions = Transitions(topo.num_states)
    for batch, log_transitions in product(
        (pad_graphs(graphs, 3, "cpu"), pad_branched(graphs, 3, "cpu")), (None, transitions.log_probs())
    ):
        weights = graph_weights(batch, log_transitions, FLOOR, torch.float64)
        emissions = node_emissions(log_probs, batch.states, batch.valid, FLOOR)
        *scaled, exact = kernels.scaled_forward_backward(emissions, lengths, weights, batch, NO_PATH, True)
        log_space = kernels.log_space_forward_backward(emissions, lengths, weights, batch, FLOOR, NO_PATH, True)
        assert exact.all()
        assert torch.allclose(scaled[0], log_space[0], rtol=1e-12)
        for ours, reference in zip(scaled[1:], log_space[1:], strict=True):
            assert torch.allclose(ours, reference, atol=1e-10)


def test_a_peaky_model_on_long_utterances():
    """Posteriors as peaky as a trained model's, on utterances of hundreds of frames: the nodes of a frame span
    thousands of nats, and the kernel still agrees with torch's recursion in float64."""
    gen = torch.Generator().manual_seed(7)
    topo = Topology(num_phones=20, states_per_phone=3)
    graphs = [build_graph([int(p) for p in torch.randint(2, 20, (12,), generator=gen)], topo) for _ in range(4)]
    lengths = torch.tensor([240, 180, 300, 120])
    logits = 40 * torch.randn(4, 300, topo.num_states, generator=gen, dtype=torch.float64)
    for pad in (pad_graphs, pad_branched):
        batch = pad(graphs, 3, "cpu")
        weights = graph_weights(batch, None, FLOOR, torch.float64)
        emissions = node_emissions(logits.log_softmax(-1), batch.states, batch.valid, FLOOR)
        loglik, gamma, _ = forward_backward(emissions, lengths, weights, batch)
        fast_loglik, fast_gamma, *_ = kernels.forward_backward(
            emissions, lengths, weights, batch, FLOOR, NO_PATH, False
        )
        assert torch.isfinite(loglik).all() and torch.allclose(fast_loglik, loglik, rtol=1e-12)
        assert torch.allclose(fast_gamma, gamma, atol=1e-9)
