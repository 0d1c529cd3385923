"""Hybrid phone-loop decoding against a brute-force search over every path, and constructed cases."""

import itertools
import logging
import math
import random
from dataclasses import dataclass

import pytest
import torch

from phonerec.decoding.hybrid import (
    LoopGraph,
    LoopPath,
    loop_search_batch,
    path_labels,
    phone_loop,
    scaled_log_likelihoods,
    word_loop,
)
from phonerec.decoding.lm import NgramLM
from phonerec.hmm.align import Topology, build_graph, viterbi_align
from phonerec.hmm.transitions import Transitions

NAMES = ["<blk>", "a", "b", "c"]


@dataclass
class HybridPath:
    phones: list[int]  # phone ids, one per phone instance
    score: float  # acoustic + LM + insertion score of the path (natural log)
    states: list[int]  # the HMM state of every frame


def loop_search(log_likelihoods: torch.Tensor, graph: LoopGraph, beam: float = math.inf) -> LoopPath:
    """One utterance through the search the decoders run (loop_search_batch)."""
    return loop_search_batch([log_likelihoods], graph, beam)[0]


def hybrid_search(log_likelihoods, topo, lm, id2phone, lm_weight=1.0, insertion_bonus=0.0, beam=math.inf):
    """One utterance through the phone loop, as the hybrid phone-LM decoder searches it; its phones are one id per
    phone instance (two instances of a phone in a row stay two)."""
    num_states = log_likelihoods.shape[-1] if isinstance(log_likelihoods, torch.Tensor) else None
    if num_states is not None and num_states != topo.num_states:
        raise ValueError(f"log_likelihoods has {num_states} states per frame, the topology {topo.num_states}")
    graph, phone_ids = phone_loop(lm, id2phone, topo, lm_weight, insertion_bonus)
    path = loop_search(log_likelihoods, graph, beam)
    return HybridPath(phones=path_labels(path, phone_ids), score=path.score, states=path.states)


def setup(num_phones: int, n: int, sentences=None, seed: int = 0):
    """A topology over phones a, b(, c), its id2phone and a bigram LM from some sentences over them."""
    names = NAMES[1 : num_phones + 1]
    id2phone = dict(enumerate(NAMES[: num_phones + 1]))
    if sentences is None:
        rng = random.Random(seed)
        sentences = [rng.choices(names, k=rng.randint(1, 4)) for _ in range(6)]
    lm = NgramLM.estimate(sentences, order=2, vocab=names)
    return Topology(num_phones + 1, n), id2phone, lm


def compositions(total: int, parts: int):
    """Every way of writing `total` as `parts` positive integers, in order."""
    for cuts in itertools.combinations(range(1, total), parts - 1):
        bounds = (0, *cuts, total)
        yield [bounds[i + 1] - bounds[i] for i in range(parts)]


def path_score(ll, phones, states, id2phone, lm, lm_weight, bonus) -> float:
    """Score of a path given as its phone instances and per-frame states, written out from the definition."""
    acoustic = math.fsum(ll[t][s] for t, s in enumerate(states))
    words = [id2phone[p] for p in phones]
    lm_score = lm.score_sentence(words)
    return acoustic + (lm_weight * lm_score if lm_weight else 0.0) + bonus * len(phones)


def brute_force(ll, topo, id2phone, lm, lm_weight, bonus) -> dict[tuple[int, ...], float]:
    """The best score of each phone sequence, over every segmentation of the frames into its states."""
    frames, n = len(ll), topo.states_per_phone
    best = {}
    for length in range(1, frames // n + 1):
        for phones in itertools.product(range(1, topo.num_phones), repeat=length):
            states_seq = [s for p in phones for s in topo.states(p)]
            for durations in compositions(frames, len(states_seq)):
                states = [s for s, d in zip(states_seq, durations, strict=True) for _ in range(d)]
                score = path_score(ll, phones, states, id2phone, lm, lm_weight, bonus)
                best[phones] = max(best.get(phones, -math.inf), score)
    return best


def peaky(states: list[int], num_states: int, height: float = 8.0) -> torch.Tensor:
    logits = torch.zeros(len(states), num_states)
    logits[torch.arange(len(states)), torch.tensor(states)] = height
    return logits.log_softmax(dim=-1)


@pytest.mark.parametrize("num_phones, n", [(2, 1), (3, 1), (2, 2), (3, 2)])
def test_exact_search_equals_brute_force(num_phones, n):
    gen = torch.Generator().manual_seed(100 * num_phones + n)
    checked_sequences = 0
    for trial in range(12):
        topo, id2phone, lm = setup(num_phones, n, seed=trial)
        frames = int(torch.randint(n, 7, (1,), generator=gen))
        ll = torch.randn(frames, topo.num_states, generator=gen, dtype=torch.float64) * 2
        lm_weight = [0.0, 1.0, float(torch.rand(1, generator=gen)) * 3][trial % 3]
        bonus = float(torch.rand(1, generator=gen)) * 4 - 2
        result = hybrid_search(ll, topo, lm, id2phone, lm_weight, bonus, beam=math.inf)
        best = brute_force(ll.tolist(), topo, id2phone, lm, lm_weight, bonus)
        ranked = sorted(best.items(), key=lambda item: -item[1])
        assert result.score == pytest.approx(ranked[0][1], abs=1e-9)
        # The decoded sequence is a best one, and its state path scores what the decoder says.
        assert best[tuple(result.phones)] == pytest.approx(ranked[0][1], abs=1e-9)
        assert len(result.states) == frames
        rescored = path_score(ll.tolist(), result.phones, result.states, id2phone, lm, lm_weight, bonus)
        assert rescored == pytest.approx(result.score, abs=1e-9)
        if len(ranked) == 1 or ranked[0][1] - ranked[1][1] > 1e-6:
            assert result.phones == list(ranked[0][0])
            checked_sequences += 1
        assert hybrid_search(ll.float(), topo, lm, id2phone, lm_weight, bonus).phones == result.phones
    assert checked_sequences >= 10


def test_no_lm_and_peaky_likelihoods_give_the_obvious_sequence():
    topo, id2phone, lm = setup(3, 2, sentences=[["a", "a", "a"]] * 5)
    # c (states 4, 5), a (0, 1), a again (0, 1), b (2, 3): two instances of a in a row stay two.
    states = [4, 4, 5, 0, 1, 1, 0, 1, 2, 2, 3]
    ll = peaky(states, topo.num_states)
    result = hybrid_search(ll, topo, lm, id2phone, lm_weight=0.0, insertion_bonus=0.0)
    assert result.phones == [3, 1, 1, 2]
    assert result.states == states
    # With one state per phone, repeated frames of a phone are one instance unless a bonus pays for more.
    topo1, id2phone1, lm1 = setup(2, 1)
    ll1 = peaky([0, 0, 0, 1, 1], topo1.num_states)
    assert hybrid_search(ll1, topo1, lm1, id2phone1, lm_weight=0.0, insertion_bonus=0.0).phones == [1, 2]
    assert hybrid_search(ll1, topo1, lm1, id2phone1, lm_weight=0.0, insertion_bonus=5.0).phones == [1, 1, 1, 2, 2]
    # No LM at all (the free loop of Viterbi training's dev decode): the same as an LM with weight 0.
    assert hybrid_search(ll, topo, None, id2phone).phones == result.phones
    free, _ = phone_loop(None, id2phone, topo)
    weightless, _ = phone_loop(lm, id2phone, topo, lm_weight=0.0)
    for a, b in ((free.start, weightless.start), (free.trans, weightless.trans), (free.end, weightless.end)):
        assert torch.equal(a, b)


def test_the_lm_changes_the_output():
    # The middle frame is slightly better as b, but the LM has only ever seen "a c".
    topo, id2phone, lm = setup(3, 1, sentences=[["a", "c"]] * 20 + [["b"]])
    ll = torch.tensor([[0.0, -9.0, -9.0], [-9.0, 0.0, -0.5], [-9.0, -9.0, 0.0]])
    assert hybrid_search(ll, topo, lm, id2phone, lm_weight=0.0, insertion_bonus=0.0).phones == [1, 2, 3]
    assert hybrid_search(ll, topo, lm, id2phone, lm_weight=1.0, insertion_bonus=0.0).phones == [1, 3]
    # A small LM weight leaves the acoustics the say.
    assert hybrid_search(ll, topo, lm, id2phone, lm_weight=0.05, insertion_bonus=0.0).phones == [1, 2, 3]


def test_a_narrow_beam_prunes_but_returns_a_valid_sequence():
    topo, id2phone, lm = setup(2, 1)
    # Frame 0 slightly prefers a; the rest strongly prefer b, and every phone costs 10.
    ll = torch.tensor([[0.0, -0.1], [-12.0, 0.0], [-12.0, 0.0]])
    kwargs = {"lm_weight": 0.0, "insertion_bonus": -10.0}
    assert hybrid_search(ll, topo, lm, id2phone, beam=math.inf, **kwargs).phones == [2]
    assert hybrid_search(ll, topo, lm, id2phone, beam=1.0, **kwargs).phones == [2]
    # Beam 0 keeps only the best state at frame 0 (a), so the search can only reach a, b.
    pruned = hybrid_search(ll, topo, lm, id2phone, beam=0.0, **kwargs)
    assert pruned.phones == [1, 2]
    assert pruned.score == pytest.approx(-20.0)


def test_a_beam_that_leaves_no_final_state_decodes_again_without_it(caplog):
    topo, id2phone, lm = setup(2, 2)
    # Frame 1 strongly prefers a first state, which cannot end a path: beam 0 prunes every last state.
    ll = torch.tensor([[0.0, -50.0, -1.0, -50.0], [0.0, -20.0, 0.0, -30.0]])
    with caplog.at_level(logging.WARNING, logger="phonerec.decoding.hybrid"):
        assert hybrid_search(ll, topo, lm, id2phone, beam=0.0).phones == [1]
    assert "decoding again with no beam" in caplog.text
    # Random problems: any beam gives a sequence of real phones whose score is at most the exact one.
    gen = torch.Generator().manual_seed(7)
    topo3, id2phone3, lm3 = setup(3, 2)
    for _ in range(20):
        ll = torch.randn(int(torch.randint(2, 30, (1,), generator=gen)), topo3.num_states, generator=gen) * 3
        exact = hybrid_search(ll, topo3, lm3, id2phone3)
        for beam in (0.0, 0.5, 2.0):
            result = hybrid_search(ll, topo3, lm3, id2phone3, beam=beam)
            assert result.phones and all(1 <= p <= 3 for p in result.phones)
            assert result.score <= exact.score + 1e-9


def test_scaled_log_likelihoods():
    post = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    priors = torch.log(torch.tensor([0.5, 0.5, 0.125]))
    expected = 0.5 * (post - 0.8 * priors)
    assert torch.allclose(scaled_log_likelihoods(post, priors, prior_scale=0.8, acoustic_scale=0.5), expected)
    assert torch.equal(scaled_log_likelihoods(post, None, acoustic_scale=2.0), 2 * post)


def test_bad_input_is_rejected():
    topo, id2phone, lm = setup(2, 2)
    with pytest.raises(ValueError, match="fewer than"):
        hybrid_search(torch.zeros(1, 4), topo, lm, id2phone)
    with pytest.raises(ValueError, match="states per frame"):
        hybrid_search(torch.zeros(3, 5), topo, lm, id2phone)
    with pytest.raises(ValueError, match="beam"):
        hybrid_search(torch.zeros(3, 4), topo, lm, id2phone, beam=-1.0)
    with pytest.raises(ValueError, match="scores -inf"):
        hybrid_search(torch.full((3, 4), -math.inf), topo, lm, id2phone, beam=1.0)
    with pytest.raises(ValueError, match="order-3"):
        hybrid_search(torch.zeros(3, 4), topo, NgramLM.estimate([["a", "b"]], order=3), id2phone)


# ---- word loop ------------------------------------------------------------------------------------------------

WORD_PHONES = {"<blk>": 0, "sil": 1, "a": 2, "b": 3}
LEXICON = {"x": [["a"]], "y": [["b", "a"], ["b"]]}  # y has two pronunciations


def word_setup(n: int):
    topo = Topology(len(WORD_PHONES), n)
    lm = NgramLM.estimate([["x", "y"], ["y"], ["y", "y", "x"]], order=2)
    return topo, lm


def word_paths(topo: Topology, frames: int, optional_silence: bool):
    """Every (words, state sequence) the word loop allows within `frames` frames, written out from its
    definition: pronunciations in a row, an optional silence first and after each word."""
    silence = topo.states(WORD_PHONES["sil"])
    units = [
        (w, [s for p in pron for s in topo.states(WORD_PHONES[p])]) for w, prons in LEXICON.items() for pron in prons
    ]
    gaps = [[], silence] if optional_silence else [[]]

    def extend(words, states):
        for word, chain in units:
            for gap in gaps:
                longer = states + chain + gap
                if len(longer) <= frames:
                    yield words + [word], longer
                    yield from extend(words + [word], longer)

    for lead in gaps:
        yield from extend([], list(lead))


def word_brute_force(ll, topo, lm, word_score, optional_silence):
    best = {}
    for words, states_seq in word_paths(topo, len(ll), optional_silence):
        for durations in compositions(len(ll), len(states_seq)):
            states = [s for s, d in zip(states_seq, durations, strict=True) for _ in range(d)]
            acoustic = math.fsum(ll[t][s] for t, s in enumerate(states))
            score = acoustic + lm.score_sentence(words) + word_score * len(words)
            best[tuple(words)] = max(best.get(tuple(words), -math.inf), score)
    return best


@pytest.mark.parametrize("n, optional_silence", [(1, True), (1, False), (2, True)])
def test_word_loop_search_equals_brute_force(n, optional_silence):
    topo, lm = word_setup(n)
    phone2id = {p: i for p, i in WORD_PHONES.items() if i > 0}
    gen = torch.Generator().manual_seed(n)
    for word_score in (-1.0, 0.0, 2.0):
        graph, words = word_loop(LEXICON, phone2id, topo, lm, word_score=word_score, optional_silence=optional_silence)
        for frames in range(2 * n, 6 * n - n // 2):
            ll = torch.randn(frames, topo.num_states, generator=gen) * 2
            best = word_brute_force(ll.tolist(), topo, lm, word_score, optional_silence)
            expected_words = max(best, key=best.get)
            path = loop_search(ll, graph)
            assert path.score == pytest.approx(best[expected_words], abs=1e-9)
            assert tuple(path_labels(loop_search(ll, graph), words)) == expected_words


def test_word_loop_decodes_peaky_likelihoods_with_silences():
    topo, lm = word_setup(1)
    phone2id = {p: i for p, i in WORD_PHONES.items() if i > 0}
    graph, words = word_loop(LEXICON, phone2id, topo, lm)
    sil, a, b = (topo.states(WORD_PHONES[p])[0] for p in ("sil", "a", "b"))
    ll = peaky([sil, sil, b, a, a, sil, a, sil], topo.num_states)
    assert path_labels(loop_search(ll, graph), words) == ["y", "x"]
    with pytest.raises(ValueError, match="not in the phone table"):
        word_loop({"z": [["q"]]}, phone2id, topo, lm)


def test_a_batch_decodes_as_each_utterance_alone():
    topo, id2phone, lm = setup(3, 2)
    graph, _ = phone_loop(lm, id2phone, topo, lm_weight=0.5, insertion_bonus=1.0)
    gen = torch.Generator().manual_seed(3)
    utts = [
        torch.randn(int(torch.randint(2, 40, (1,), generator=gen)), topo.num_states, generator=gen) * 3
        for _ in range(12)
    ]
    for beam in (math.inf, 4.0, 0.0):  # beam 0 also sends some utterances through the search again
        batch = loop_search_batch(utts, graph, beam)
        alone = [loop_search(u, graph, beam) for u in utts]
        assert [p.units for p in batch] == [p.units for p in alone]
        assert [p.states for p in batch] == [p.states for p in alone]
        assert [p.score for p in batch] == pytest.approx([p.score for p in alone])
    with pytest.raises(ValueError, match="utterance u2: 1 frames are fewer"):
        loop_search_batch([utts[0], utts[1], torch.zeros(1, 6)], graph, names=["u0", "u1", "u2"])


def test_with_transitions_a_decoded_path_scores_as_its_forced_alignment():
    """With transition probabilities, the best path through the phone loop and the word loop (no LM) scores what
    forced alignment of its phones, through the training graph of the same words, scores: the two graphs weigh
    self-loops, exits and optional silence alike."""
    gen = torch.Generator().manual_seed(5)
    for n in (1, 2):
        topo, lm = word_setup(n)
        transitions = Transitions(topo.num_states)
        with torch.no_grad():
            transitions.state_logits.copy_(torch.randn(topo.num_states, 2, generator=gen))
            transitions.silence_logits.copy_(torch.tensor([-1.0, 0.3]))
        phone2id = {p: i for p, i in WORD_PHONES.items() if i > 0}
        id2phone = {i: p for p, i in WORD_PHONES.items()}
        words_graph, words = word_loop(LEXICON, phone2id, topo, lm, lm_weight=0.0, transitions=transitions)
        phones_graph, phone_ids = phone_loop(None, id2phone, topo, transitions=transitions)
        prons = [[phone2id[p] for p in pron] for prons in LEXICON.values() for pron in prons]
        for _ in range(10):
            ll = torch.randn(int(torch.randint(4 * n, 12 * n, (1,), generator=gen)), topo.num_states, generator=gen)
            path = loop_search(ll, words_graph)
            phones, word_ends = [], []
            for unit in path.units:
                if unit < 2 * len(prons):  # a word, or its twin ending in silence; not the leading silence
                    phones += prons[unit % len(prons)]
                    word_ends.append(len(phones) - 1)
            graph = build_graph(phones, topo, word_ends)
            _, aligned = viterbi_align(ll.unsqueeze(0), torch.tensor([len(ll)]), [graph], topo, transitions)
            assert path.score == pytest.approx(aligned.item(), abs=1e-4)

            path = loop_search(ll, phones_graph)
            graph = build_graph(path_labels(path, phone_ids), topo, optional_silence=False)
            _, aligned = viterbi_align(ll.unsqueeze(0), torch.tensor([len(ll)]), [graph], topo, transitions)
            assert path.score == pytest.approx(aligned.item(), abs=1e-4)


def test_pronunciation_probabilities_weigh_entering_each_pronunciation():
    """word_loop's `probabilities`: entering a pronunciation adds its log-probability, from the start and from
    every unit, its twin ending in silence too; probability 1 everywhere is the loop without them."""
    topo, lm = word_setup(1)
    phone2id = {p: i for p, i in WORD_PHONES.items() if i > 0}
    plain, words = word_loop(LEXICON, phone2id, topo, lm)
    probabilities = {w: [0.5**k for k in range(len(prons))] for w, prons in LEXICON.items()}
    weighted, _ = word_loop(LEXICON, phone2id, topo, lm, probabilities=probabilities)
    log_probs = [math.log(p) for w, probs in probabilities.items() for p in probs]
    entering = torch.tensor(log_probs * 2 + [0.0], dtype=torch.float64)  # the words, their twins, the silence
    assert torch.allclose(weighted.start, plain.start + entering)
    finite = torch.isfinite(plain.trans)
    assert torch.allclose(weighted.trans[finite], (plain.trans + entering)[finite])
    ones = {w: [1.0] * len(prons) for w, prons in LEXICON.items()}
    assert torch.equal(word_loop(LEXICON, phone2id, topo, lm, probabilities=ones)[0].trans, plain.trans)
