"""Batched Viterbi forced alignment against brute force, flat start, and Viterbi training on a synthetic
signal whose segments are separable."""

import pytest
import torch
from conftest import graph_paths

from phonerec.hmm.align import (
    Topology,
    build_graph,
    log_state_priors,
    uniform_alignment,
    viterbi_align,
)


def brute_force(log_probs: torch.Tensor, graph, topo):
    """Best path by enumerating every node sequence the graph allows."""
    best, best_path = float("-inf"), None
    for path in graph_paths(graph, topo.states_per_phone, log_probs.shape[0]):
        score = sum(log_probs[t, graph.states[j]].item() for t, j in enumerate(path))
        if score > best:
            best, best_path = score, path
    return best, None if best_path is None else [graph.states[j] for j in best_path]


@pytest.mark.parametrize("states_per_phone", [1, 2])
def test_batched_viterbi_equals_brute_force(states_per_phone):
    torch.manual_seed(0)
    topo = Topology(num_phones=6, states_per_phone=states_per_phone)
    cases = [([2, 3], [0]), ([4], None), ([2, 5, 3], [1]), ([3, 3], [0])]
    for frames_list in ([3, 7, 5, 8], [8, 4, 6, 6]):
        graphs = [build_graph(phones, topo, ends) for phones, ends in cases]
        lengths = torch.tensor(frames_list)
        log_probs = torch.randn(len(cases), max(frames_list), topo.num_states).log_softmax(-1)
        alignment, loglik = viterbi_align(log_probs, lengths, graphs, topo)
        for b, graph in enumerate(graphs):
            expected, path = brute_force(log_probs[b, : lengths[b]], graph, topo)
            if path is None:  # fewer frames than the graph needs
                assert loglik[b] == float("-inf") and (alignment[b] == -1).all()
                continue
            assert loglik[b].item() == pytest.approx(expected, abs=1e-4)
            assert alignment[b, : lengths[b]].tolist() == path
            assert (alignment[b, lengths[b] :] == -1).all()


def test_graph_has_optional_silence_at_edges_and_word_ends_only():
    topo = Topology(num_phones=6)
    graph = build_graph([2, 3, 4], topo, word_ends=[1])
    assert graph.states == [0, 1, 2, 0, 3, 0]  # sil a b sil c sil (state = phone id - 1)
    assert graph.optional == [True, False, False, True, False, True]


def test_too_few_frames_reported_as_no_path():
    topo = Topology(num_phones=6, states_per_phone=3)
    graph = build_graph([2, 3], topo)
    log_probs = torch.randn(1, 5, topo.num_states).log_softmax(-1)
    alignment, loglik = viterbi_align(log_probs, torch.tensor([5]), [graph], topo)
    assert loglik[0] == float("-inf") and (alignment == -1).all()


def test_uniform_alignment_and_priors():
    topo = Topology(num_phones=5, states_per_phone=2)
    assert uniform_alignment(8, [2, 4], topo, edge_silence=False) == [2, 2, 3, 3, 6, 6, 7, 7]
    assert uniform_alignment(8, [2, 4], topo) == [0, 1, 2, 3, 6, 7, 0, 1]
    assert uniform_alignment(6, [2, 4], topo) == [2, 2, 3, 6, 6, 7]  # too short for silence
    with pytest.raises(ValueError):
        uniform_alignment(3, [2, 4], topo)
    priors = log_state_priors(torch.tensor([3, 1, 0, 0]), floor=1e-3)
    assert torch.allclose(priors.exp(), torch.tensor([0.75, 0.25, 1e-3, 1e-3]))


def test_viterbi_training_recovers_segment_boundaries():
    """Flat start, frame cross-entropy, re-align, repeat: on features whose segments are separable by their
    mean, the re-alignment moves from the uniform split to the true boundaries."""
    torch.manual_seed(0)
    topo = Topology(num_phones=6)
    dim = 8
    means = torch.randn(topo.num_states, dim) * 3
    utterances = []
    for _ in range(40):
        phones = [int(p) for p in torch.randint(2, 6, (3,))]
        durations = [int(d) for d in torch.randint(2, 9, (3,))]
        silence = [int(d) for d in torch.randint(0, 4, (2,))]
        truth = (
            [0] * silence[0]
            + [s for p, d in zip(phones, durations, strict=True) for s in [p - 1] * d]
            + [0] * silence[1]
        )
        feats = means[torch.tensor(truth)] + torch.randn(len(truth), dim)
        utterances.append((feats, phones, truth))

    lengths = torch.tensor([len(u[2]) for u in utterances])
    feats = torch.nn.utils.rnn.pad_sequence([u[0] for u in utterances], batch_first=True)
    graphs = [build_graph(phones, topo) for _, phones, _ in utterances]
    truth = [torch.tensor(u[2]) for u in utterances]
    labels = [torch.tensor(uniform_alignment(len(u[2]), u[1], topo)) for u in utterances]
    model = torch.nn.Linear(dim, topo.num_states)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)

    def agreement(alis):
        return sum((a == t).sum().item() for a, t in zip(alis, truth, strict=True)) / lengths.sum().item()

    flat_start = agreement(labels)
    for _ in range(4):  # rounds of: train on the current alignment, then re-align
        frames, targets = torch.cat([u[0] for u in utterances]), torch.cat(labels)
        for _ in range(50):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(frames), targets).backward()
            optimizer.step()
        with torch.no_grad():
            alignment, loglik = viterbi_align(model(feats).log_softmax(-1), lengths, graphs, topo)
        assert torch.isfinite(loglik).all()
        labels = [alignment[b, : lengths[b]] for b in range(len(utterances))]
    assert flat_start < 0.7
    assert agreement(labels) > 0.97
