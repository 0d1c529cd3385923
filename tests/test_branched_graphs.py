"""Alignment graphs whose words have several pronunciations (phonerec.hmm.align.build_word_graph): the
forward-backward, Viterbi and arc counts against brute force over every path, and against the chain graphs of
each choice of pronunciations (the sum over a branched graph is the sum over its choices, each weighted by its
pronunciations' probabilities); gradients against finite differences and autograd."""

import math
from itertools import product

import pytest
import torch
from omegaconf import OmegaConf
from test_fullsum import TransitionLogits, random_transitions

from phonerec.data.dataset import Example
from phonerec.hmm.align import (
    NO_SILENCE_TERM,
    SILENCE_TERM,
    BranchedGraph,
    Pronunciation,
    Topology,
    align_utterances,
    build_graph,
    build_word_graph,
    pad_branched,
    path_arc_counts,
    viterbi_align,
)
from phonerec.hmm.fullsum import forward_loglik, fullsum_loglik, occupations
from phonerec.hmm.transitions import TransitionCounts
from phonerec.training.viterbi_ce import ViterbiTask

# Word sequences, each word a list of (phones, log-probability) pronunciations.
WORDS = [
    [[((2, 3), 0.0), ((2,), -0.7)], [((4,), 0.0)]],
    [[((5,), 0.0), ((3, 5), -0.2), ((4, 4), -1.5)]],
    [[((2,), 0.0)], [((3, 3), 0.0), ((3,), -0.4)], [((2, 5), -0.1)]],
]


def word_lists(spec):
    return [[Pronunciation(phones, log_prob) for phones, log_prob in word] for word in spec]


def branched_paths(graph: BranchedGraph, frames: int) -> list[tuple[list[int], float, list]]:
    """Every node path of `frames` frames through the graph, by enumeration, each with its start and end
    (node, term, extra) and the arcs it takes (None for a self-loop)."""
    out = {}
    for arc in graph.arcs:
        out.setdefault(arc[0], []).append(arc)
    ends = {node: (node, term, extra) for node, term, extra in graph.ends}
    paths = []

    def extend(path, arcs):
        if len(path) == frames:
            if path[-1] in ends:
                paths.append((path, arcs + [ends[path[-1]]]))
            return
        extend(path + [path[-1]], arcs + [None])
        for arc in out.get(path[-1], []):
            extend(path + [arc[1]], arcs + [arc])

    for start in graph.starts:
        extend([start[0]], [start])
    return paths


def path_score(graph, path, taken, log_probs, transitions) -> torch.Tensor:
    """A path's emissions plus its arcs' weights as the BranchedGraph docstring defines them."""
    score = sum(log_probs[t, graph.states[j]] for t, j in enumerate(path))
    lp = transitions.log_probs() if transitions is not None else None
    terms = [0.0, 0.0, 0.0] if lp is None else [0.0, lp.silence, lp.no_silence]
    start, *steps, end = taken
    score = score + terms[start[1]] + start[2]
    for prev, arc in zip(path[:-1], steps, strict=True):
        if arc is None:
            score = score + (0.0 if lp is None else lp.loop[graph.states[prev]])
        else:
            score = score + (0.0 if lp is None else lp.forward[graph.states[prev]]) + terms[arc[2]] + arc[3]
    leave = 0.0 if lp is None else lp.forward[graph.states[path[-1]]]
    return score + leave + terms[end[1]] + end[2]


def problem(states_per_phone, frames, seed, optional_silence=True):
    gen = torch.Generator().manual_seed(seed)
    topo = Topology(num_phones=6, states_per_phone=states_per_phone)
    graphs = [build_word_graph(word_lists(spec), topo, optional_silence) for spec in WORDS]
    log_probs = torch.randn(len(WORDS), max(frames), topo.num_states, generator=gen, dtype=torch.float64)
    return topo, graphs, torch.tensor(frames), log_probs.log_softmax(-1)


def test_a_word_graph_without_variants_is_the_chain():
    topo = Topology(num_phones=6, states_per_phone=2)
    words = [[Pronunciation((2, 3))], [Pronunciation((4,))]]
    assert build_word_graph(words, topo) == build_graph([2, 3, 4], topo, [1])
    assert isinstance(build_word_graph(word_lists(WORDS[0]), topo), BranchedGraph)
    # a single pronunciation below probability 1 weighs its arcs: a branched graph too
    assert isinstance(build_word_graph([[Pronunciation((2,), -0.5)]], topo), BranchedGraph)


@pytest.mark.parametrize("states_per_phone", [1, 2])
@pytest.mark.parametrize("optional_silence", [True, False])
@pytest.mark.parametrize("with_transitions", [False, True])
def test_forward_backward_and_viterbi_equal_brute_force(states_per_phone, optional_silence, with_transitions):
    frames = [7, 6, 9] if states_per_phone == 1 else [9, 8, 3]  # the last too short for 2 states per phone
    topo, graphs, lengths, log_probs = problem(
        states_per_phone, frames, seed=states_per_phone, optional_silence=optional_silence
    )
    transitions = random_transitions(topo, seed=5) if with_transitions else None
    loglik, occupation = occupations(log_probs, lengths, graphs, topo, transitions)
    by_autograd = forward_loglik(log_probs, lengths, graphs, topo, transitions)
    alignment, best = viterbi_align(log_probs, lengths, graphs, topo, transitions)
    for b, graph in enumerate(graphs):
        length = int(lengths[b])
        paths = branched_paths(graph, length)
        if not paths:
            assert loglik[b] == by_autograd[b] == best[b] == float("-inf") and not occupation[b].any()
            continue
        scores = torch.stack([path_score(graph, p, taken, log_probs[b], transitions) for p, taken in paths])
        expected = torch.logsumexp(scores, 0)
        assert loglik[b].item() == pytest.approx(expected.item(), rel=1e-12)
        assert by_autograd[b].item() == pytest.approx(expected.item(), rel=1e-12)
        expected_occupation = torch.zeros(length, topo.num_states, dtype=torch.float64)
        for (path, _), score in zip(paths, scores, strict=True):
            for t, j in enumerate(path):
                expected_occupation[t, graph.states[j]] += (score - expected).exp()
        assert torch.allclose(occupation[b, :length], expected_occupation, atol=1e-12)
        top = int(scores.argmax())
        assert best[b].item() == pytest.approx(scores[top].item(), rel=1e-12)
        assert alignment[b, :length].tolist() == [graph.states[j] for j in paths[top][0]]


def test_the_sum_is_over_the_choices_of_pronunciations():
    """log p(X | words) = logsumexp over every choice of one pronunciation per word of the chain graph's log p
    plus the choice's log-probabilities; Viterbi's best is the best choice's best path. The chains are
    build_graph's: the branched graph must mean exactly what the chain means, with a choice added."""
    topo, graphs, lengths, log_probs = problem(2, [12, 11, 14], seed=7)
    transitions = random_transitions(topo, seed=8)
    loglik = forward_loglik(log_probs, lengths, graphs, topo, transitions)
    _, best = viterbi_align(log_probs, lengths, graphs, topo, transitions)
    for b, spec in enumerate(WORDS):
        choices = list(product(*spec))
        chains = [build_graph([p for phones, _ in choice for p in phones], topo, ends(choice)) for choice in choices]
        rows = log_probs[b : b + 1].expand(len(chains), -1, -1)
        frames = lengths[b : b + 1].expand(len(chains))
        prior = torch.tensor([sum(lp for _, lp in choice) for choice in choices], dtype=torch.float64)
        chain_loglik = forward_loglik(rows, frames, chains, topo, transitions)
        _, chain_best = viterbi_align(rows, frames, chains, topo, transitions)
        assert loglik[b].item() == pytest.approx(torch.logsumexp(chain_loglik + prior, 0).item(), rel=1e-12)
        assert best[b].item() == pytest.approx((chain_best + prior).max().item(), rel=1e-12)


def ends(choice) -> list[int]:
    """The word ends (indices into the phones) of a choice of pronunciations, for build_graph."""
    total, out = 0, []
    for phones, _ in choice:
        total += len(phones)
        out.append(total - 1)
    return out


@pytest.mark.parametrize("states_per_phone", [1, 2])
def test_gradients_match_finite_differences_and_autograd(states_per_phone):
    topo, graphs, lengths, log_probs = problem(states_per_phone, [8, 9, 10], seed=3)
    log_probs = log_probs.detach().requires_grad_()
    explicit = lambda x: fullsum_loglik(x, lengths, graphs, topo)  # noqa: E731
    by_autograd = lambda x: forward_loglik(x, lengths, graphs, topo)  # noqa: E731
    assert torch.autograd.gradcheck(explicit, (log_probs,), eps=1e-6, atol=1e-6)
    weights = torch.rand(len(graphs), dtype=torch.float64)
    (grad_explicit,) = torch.autograd.grad((explicit(log_probs) * weights).sum(), log_probs)
    (grad_autograd,) = torch.autograd.grad((by_autograd(log_probs) * weights).sum(), log_probs)
    assert torch.allclose(grad_explicit, grad_autograd, atol=1e-10)

    start = random_transitions(topo, seed=4)
    logits = tuple(p.detach().clone().requires_grad_() for p in (start.state_logits, start.silence_logits))
    explicit_t = lambda *x: fullsum_loglik(log_probs.detach(), lengths, graphs, topo, TransitionLogits(*x)) * weights  # noqa: E731
    autograd_t = lambda *x: forward_loglik(log_probs.detach(), lengths, graphs, topo, TransitionLogits(*x)) * weights  # noqa: E731
    assert torch.autograd.gradcheck(explicit_t, logits, eps=1e-6, atol=1e-6)
    for ours, reference in zip(
        torch.autograd.grad(explicit_t(*logits).sum(), logits),
        torch.autograd.grad(autograd_t(*logits).sum(), logits),
        strict=True,
    ):
        assert torch.allclose(ours, reference, atol=1e-10)


def test_arc_counts_of_the_best_paths_count_the_transitions_they_take():
    """path_arc_counts on a branched batch, through TransitionCounts, against counting the best path's arcs by
    hand; and a chain gives the same counts padded as a chain or as a branched graph."""
    topo, graphs, lengths, log_probs = problem(1, [9, 8, 11], seed=11)
    transitions = random_transitions(topo, seed=12)
    counts = TransitionCounts(topo.num_states)
    found = align_utterances(
        list(log_probs[b, : int(lengths[b])] for b in range(3)),
        graphs,
        topo,
        transitions=transitions,
        counts=counts,
        nodes=True,
    )
    loop, forward = torch.zeros(topo.num_states, dtype=torch.float64), torch.zeros(topo.num_states, dtype=torch.float64)
    silence = no_silence = 0.0
    for (nodes, _), graph in zip(found, graphs, strict=True):
        nodes = nodes.tolist()
        start = next(s for s in graph.starts if s[0] == nodes[0])
        silence += start[1] == SILENCE_TERM
        no_silence += start[1] == NO_SILENCE_TERM
        for prev, node in zip(nodes[:-1], nodes[1:], strict=True):
            if node == prev:
                loop[graph.states[prev]] += 1
                continue
            arc = next(a for a in graph.arcs if a[:2] == (prev, node))
            forward[graph.states[prev]] += 1
            silence += arc[2] == SILENCE_TERM
            no_silence += arc[2] == NO_SILENCE_TERM
        end = next(e for e in graph.ends if e[0] == nodes[-1])
        forward[graph.states[nodes[-1]]] += 1
        no_silence += end[1] == NO_SILENCE_TERM
    assert torch.equal(counts.loop, loop) and torch.equal(counts.forward, forward)
    assert counts.silence.item() == silence and counts.no_silence.item() == no_silence

    chain = [build_graph([2, 3, 4], topo, [0, 2]), build_graph([5, 5], topo, [0])]
    rows = [log_probs[0, :9], log_probs[1, :8]]
    by_chain, by_branched = TransitionCounts(topo.num_states), TransitionCounts(topo.num_states)
    node_paths = align_utterances(rows, chain, topo, transitions=transitions, counts=by_chain, nodes=True)
    padded = torch.nn.utils.rnn.pad_sequence([nodes for nodes, _ in node_paths], batch_first=True, padding_value=-1)
    batch = pad_branched(chain, 1, "cpu")
    by_branched.add(batch, path_arc_counts(padded, torch.tensor([9, 8]), batch))
    assert by_chain.loop.sum() > 0
    for ours, reference in zip(by_branched._totals(), by_chain._totals(), strict=True):
        assert torch.equal(ours, reference)


def test_a_realignment_keeps_the_pronunciation_the_scores_favour(tmp_path):
    """ViterbiTask's re-alignment on graphs with variants: the scores favour the second pronunciation of the
    first word, and the round keeps that choice and the phones it spells (prons/phones.<set>.txt)."""
    topo = Topology(num_phones=5)
    id2phone = {0: "<blk>", 1: "sil", 2: "a", 3: "b", 4: "c"}
    prons = [[Pronunciation((2,)), Pronunciation((3,), -0.5)], [Pronunciation((4,))]]
    example = Example("u1", "s1", torch.zeros(8, 3), [2, 4], [0, 1], prons)
    vcfg = OmegaConf.create({"prior_scale": 1.0, "use_priors": False})
    tcfg = OmegaConf.create({"max_batch_utts": 4})
    task = ViterbiTask(tmp_path, topo, [example], [example], vcfg, tcfg, id2phone, dev_per=None)
    frames = [0, 0, 2, 2, 2, 3, 3, 0]  # states: sil sil b b b c c sil
    log_probs = torch.full((8, topo.num_states), -8.0)
    log_probs[torch.arange(8), torch.tensor(frames)] = 0.0
    alignments, _, _, skipped, choices, _ = task._realign_scored([(example, log_probs)], "train")
    assert not skipped and choices == {"u1": [1, 0]}
    assert alignments["u1"].tolist() == frames
    task.alignments = {"train": alignments, "dev": alignments}
    task.choices = {"train": choices, "dev": choices}
    task._save_round(1, {})
    assert (tmp_path / "ali" / "iter1" / "prons.train.txt").read_text() == "u1 1 0\n"
    assert (tmp_path / "ali" / "iter1" / "phones.train.txt").read_text() == "u1 b c\n"


def test_estimated_pronunciation_probabilities_weigh_the_branches(tmp_path):
    """hmm.pronunciation_probs=estimated: count + 1 of each pronunciation the training set's paths chose,
    max-normalised per word; the graphs are rebuilt with them, and they travel in the task's state."""
    topo = Topology(num_phones=5)
    id2phone = {0: "<blk>", 1: "sil", 2: "a", 3: "b", 4: "c"}
    prons = [[Pronunciation((2,)), Pronunciation((3,))], [Pronunciation((4,))]]
    examples = [Example(u, "s1", torch.zeros(8, 3), [2, 4], [0, 1], prons, ["w", "x"]) for u in ("u1", "u2", "u3")]
    vcfg = OmegaConf.create({"prior_scale": 1.0, "use_priors": False})
    tcfg = OmegaConf.create({"max_batch_utts": 4})
    task = ViterbiTask(tmp_path, topo, examples, examples[:1], vcfg, tcfg, id2phone, None, estimate_pronunciations=True)
    task.choices["train"] = {"u1": [1, 0], "u2": [1, 0], "u3": [0, 0]}
    estimated = task._estimate_pronunciations()
    assert estimated == {"w": {"a": pytest.approx(2 / 3), "b": 1.0}, "x": {"c": 1.0}}
    task._weigh_pronunciations(estimated)
    graph = task.graphs["train"]["u1"]
    first_of_a = graph.variant.index(0)
    assert {round(extra, 12) for _, to, _, extra in graph.arcs if to == first_of_a} == {round(math.log(2 / 3), 12)}
    assert task.state()["pronunciation_probs"] == estimated


def test_silence_probabilities_weigh_the_silence_after_each_pronunciation_as_kaldis_lexicon():
    """Pronunciations with silence probabilities: log p(X | words) is the sum, over every choice of pronunciations
    and of a silence at the start and after each word, of the chain of those phones (silences written out, no
    optional silence) weighted as Kaldi's lexicon FST with silence probabilities: pron-prob x P(silence after) or
    1 - that x the next word's correction for a silence before it or for none (the start's silence weighs 1: no
    transitions)."""
    topo = Topology(num_phones=6, states_per_phone=2)
    spec = [
        [Pronunciation((2, 3), 0.0, 0.3, 1.2, 0.9), Pronunciation((2,), math.log(0.5), 0.8, 0.7, 1.1)],
        [Pronunciation((4,), 0.0, 0.6, 1.3, 0.8)],
        [Pronunciation((5, 3), 0.0), Pronunciation((3,), math.log(0.4), 0.2, 1.0, 1.5)],
    ]
    graph = build_word_graph(spec, topo)
    gen = torch.Generator().manual_seed(21)
    frames = 16
    log_probs = torch.randn(1, frames, topo.num_states, generator=gen, dtype=torch.float64).log_softmax(-1)
    loglik = forward_loglik(log_probs, torch.tensor([frames]), [graph], topo)
    chains, weights = [], []
    for prons in product(*spec):
        for silences in product([False, True], repeat=len(spec) + 1):  # at the start, after each word
            phones, weight = [1] if silences[0] else [], 0.0
            for k, pron in enumerate(prons):
                before = pron.silence_before if silences[k] else pron.no_silence_before
                weight += pron.log_prob + math.log(before)
                phones += list(pron.phones) + ([1] if silences[k + 1] else [])
                p = 0.5 if pron.silence_after is None else pron.silence_after  # None: the transitions' (0 here)
                weight += 0.0 if pron.silence_after is None else math.log(p if silences[k + 1] else 1 - p)
            chains.append(build_graph(phones, topo, optional_silence=False))
            weights.append(weight)
    rows = log_probs.expand(len(chains), -1, -1)
    chain_loglik = forward_loglik(rows, torch.tensor([frames] * len(chains)), chains, topo)
    expected = torch.logsumexp(chain_loglik + torch.tensor(weights, dtype=torch.float64), 0)
    assert loglik.item() == pytest.approx(expected.item(), rel=1e-12)


def test_estimated_silence_probabilities_follow_kaldis_formulas(tmp_path):
    """_estimate_silences on counted silences: P(silence after p) = (silences after p + 2 P) / (occurrences + 2),
    the corrections (seen + 2) / (expected + 2), as utils/dict_dir_add_pronprobs.sh computes them."""
    topo = Topology(num_phones=5)
    id2phone = {0: "<blk>", 1: "sil", 2: "a", 3: "b", 4: "c"}
    prons = [[Pronunciation((2,))], [Pronunciation((3,))]]
    examples = [Example(u, "s1", torch.zeros(8, 3), [2, 3], [0, 1], prons, ["w", "x"]) for u in ("u1", "u2")]
    vcfg = OmegaConf.create({"prior_scale": 1.0, "use_priors": False})
    tcfg = OmegaConf.create({"max_batch_utts": 4})
    task = ViterbiTask(tmp_path, topo, examples, examples[:1], vcfg, tcfg, id2phone, None, estimate_pronunciations=True)
    assert isinstance(task.graphs["train"]["u1"], BranchedGraph)  # the silences taken are counted on branched graphs
    task.choices["train"] = {"u1": [0, 0], "u2": [0, 0]}
    task.silences["train"] = {"u1": [True, True, False], "u2": [False, False, True]}  # start, after w, after x
    found = task._estimate_silences()
    overall = 2 / 4  # w followed by silence once, x once, of 4 words
    after_w, after_x = (1 + 2 * overall) / (2 + 2), (1 + 2 * overall) / (2 + 2)
    at_start = 1 / 2
    assert found["w"]["a"] == pytest.approx([after_w, (1 + 2) / (2 * at_start + 2), (1 + 2) / (2 * (1 - at_start) + 2)])
    assert found["x"]["b"] == pytest.approx([after_x, (1 + 2) / (2 * after_w + 2), (1 + 2) / (2 * (1 - after_w) + 2)])
