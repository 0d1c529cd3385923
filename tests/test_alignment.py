"""Batched Viterbi forced alignment against brute force, flat start, and Viterbi training on a synthetic
signal whose segments are separable."""

import pytest
import torch
from conftest import graph_paths, path_transition_score

from phonerec.hmm.align import (
    Graph,
    Topology,
    align_utterances,
    build_graph,
    log_state_priors,
    pad_graphs,
    uniform_alignment,
    viterbi_align,
)
from phonerec.hmm.fullsum import ctc_graph
from phonerec.hmm.transitions import TransitionCounts, Transitions


def brute_force(log_probs: torch.Tensor, graph, topo, transitions=None, nodes=False):
    """Best path by enumerating every node sequence the graph allows: its score and its states (or nodes)."""
    best, best_path = float("-inf"), None
    n = topo.states_per_phone
    for path in graph_paths(graph, n, log_probs.shape[0]):
        score = sum(log_probs[t, graph.states[j]].item() for t, j in enumerate(path))
        if transitions is not None:
            score += path_transition_score(graph, n, path, transitions)
        if score > best:
            best, best_path = score, path
    if best_path is None or nodes:
        return best, best_path
    return best, [graph.states[j] for j in best_path]


def pad_graphs_node_by_node(graphs: list[Graph], n: int) -> dict[str, torch.Tensor]:
    """pad_graphs' masks written node by node, from their definitions."""
    batch, width = len(graphs), max(len(g.states) for g in graphs)
    masks = {
        name: torch.zeros(batch, width, dtype=torch.bool)
        for name in ("valid", "skip_in", "block_entry", "start", "end", "beside_block")
    }
    for b, g in enumerate(graphs):
        size = len(g.states)
        masks["valid"][b, :size] = True
        masks["start"][b, 0] = True
        masks["end"][b, size - 1] = True
        for j in range(size):
            masks["block_entry"][b, j] = g.optional[j] and (j == 0 or not g.optional[j - 1])
            block = g.optional[j - n : j] if j >= n + 1 else []
            if len(block) == n and all(block) and not g.optional[j - n - 1]:
                masks["skip_in"][b, j] = g.skip_between_equal or g.states[j] != g.states[j - n - 1]
        if size > n and all(g.optional[:n]):
            masks["start"][b, n] = masks["beside_block"][b, n] = True
        if size > n and all(g.optional[size - n :]):
            masks["end"][b, size - n - 1] = masks["beside_block"][b, size - n - 1] = True
    has_next = masks["valid"].clone()
    has_next[:, 0] = False
    masks["arcs_in"] = torch.stack([masks["valid"], has_next, masks["skip_in"]])
    masks["sizes"] = torch.tensor([len(g.states) for g in graphs])
    return masks


def test_padded_graph_masks_equal_their_node_by_node_definition():
    topo = Topology(num_phones=6, states_per_phone=2)
    graphs = [
        build_graph(p, topo, e, optional_silence=o)
        for p, e, o in [([2, 3], [0], True), ([4], None, True), ([3, 3], [0], False)]
    ]
    graphs += [ctc_graph([2, 2, 3]), ctc_graph([4]), Graph([1, 2], [True, True])]  # the last: all optional
    for n in (1, 2):
        batch = pad_graphs(graphs, n, "cpu")
        for name, expected in pad_graphs_node_by_node(graphs, n).items():
            assert torch.equal(getattr(batch, name), expected), (n, name)


def uneven_transitions(topo, seed=0):
    transitions = Transitions(topo.num_states)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        transitions.state_logits.copy_(2 * torch.randn(topo.num_states, 2, generator=gen))
        transitions.silence_logits.copy_(torch.tensor([-1.5, 0.5]))
    return transitions


@pytest.mark.parametrize("states_per_phone", [1, 2])
@pytest.mark.parametrize("with_transitions", [False, True])
def test_batched_viterbi_equals_brute_force(states_per_phone, with_transitions):
    torch.manual_seed(0)
    topo = Topology(num_phones=6, states_per_phone=states_per_phone)
    transitions = uneven_transitions(topo) if with_transitions else None
    cases = [([2, 3], [0]), ([4], None), ([2, 5, 3], [1]), ([3, 3], [0])]
    for frames_list in ([3, 7, 5, 8], [8, 4, 6, 6]):
        graphs = [build_graph(phones, topo, ends) for phones, ends in cases]
        lengths = torch.tensor(frames_list)
        log_probs = torch.randn(len(cases), max(frames_list), topo.num_states).log_softmax(-1)
        alignment, loglik = viterbi_align(log_probs, lengths, graphs, topo, transitions)
        for b, graph in enumerate(graphs):
            expected, path = brute_force(log_probs[b, : lengths[b]], graph, topo, transitions)
            if path is None:  # fewer frames than the graph needs
                assert loglik[b] == float("-inf") and (alignment[b] == -1).all()
                continue
            assert loglik[b].item() == pytest.approx(expected, abs=1e-4)
            assert alignment[b, : lengths[b]].tolist() == path
            assert (alignment[b, lengths[b] :] == -1).all()


@pytest.mark.parametrize("states_per_phone", [1, 2])
def test_transition_counts_of_best_paths_and_their_estimate(states_per_phone):
    """The counts gathered from the aligner's paths equal those of the brute-force best paths, arc by arc, and
    re-estimation makes each probability the relative frequency of its arc plus one."""
    torch.manual_seed(1)
    topo = Topology(num_phones=6, states_per_phone=states_per_phone)
    transitions = uneven_transitions(topo, seed=1)
    cases = [([2, 3], [0]), ([2, 5, 3], [1]), ([4], None), ([3, 3], [0])]
    graphs = [build_graph(phones, topo, ends) for phones, ends in cases]
    frames = [9, 2, 12, 10]  # the second too short for its graph: counted nowhere
    scores = [torch.randn(t, topo.num_states).log_softmax(-1) for t in frames]
    counts = TransitionCounts(topo.num_states)
    found = align_utterances(scores, graphs, topo, transitions=transitions, counts=counts)
    assert found[1] == (None, float("-inf"))

    n, lp = states_per_phone, transitions.log_probs()
    expected = {"loop": torch.zeros(topo.num_states), "forward": torch.zeros(topo.num_states), "sil": 0, "nosil": 0}
    for graph, score in zip(graphs, scores, strict=True):
        _, path = brute_force(score, graph, topo, transitions, nodes=True)
        if path is None:
            continue
        opt, size = graph.optional, len(graph.states)
        expected["sil" if opt[path[0]] else "nosil"] += int(opt[path[0]] or (path[0] == n and all(opt[:n])))
        for prev, node in zip(path[:-1], path[1:], strict=True):
            expected["loop" if node == prev else "forward"][graph.states[prev]] += 1
            expected["sil"] += int(node == prev + 1 and opt[node] and not opt[prev])
            expected["nosil"] += int(node == prev + n + 1)
        expected["forward"][graph.states[path[-1]]] += 1
        expected["nosil"] += int(path[-1] == size - n - 1 and all(opt[size - n :]))
    assert torch.equal(counts.loop.float(), expected["loop"]) and torch.equal(
        counts.forward.float(), expected["forward"]
    )
    assert (counts.silence.item(), counts.no_silence.item()) == (expected["sil"], expected["nosil"])
    assert lp.loop.exp().sum() > 0  # (the transitions were used)

    transitions.estimate(counts)
    estimated = transitions.log_probs()
    total = counts.loop + counts.forward + 2
    assert torch.allclose(estimated.loop.exp().double(), (counts.loop + 1) / total)
    sil = (counts.silence + 1) / (counts.silence + counts.no_silence + 2)
    assert estimated.silence.exp().item() == pytest.approx(sil.item())


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
