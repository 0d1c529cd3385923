"""CTC beam search with a phone LM (torchaudio ctc_decoder): LM weight 0 equals greedy on peaky posteriors, the
LM and the insertion bonus change the output where they should, and a hypothesis scores exactly its CTC
log-posterior + lm_weight * its LM log-probability + bonus * its length."""

import math

import pytest
import torch

from phonerec.decoding.ctc_beam import ctc_beam_decode, make_ctc_beam_decoder
from phonerec.decoding.greedy import ctc_greedy
from phonerec.decoding.lm import NgramLM

PHONES = ["<blk>", "sil", "a", "b"]
# A bigram that strongly prefers "a" after "<s>"... and "b" after "a".
ARPA = """\\data\\
ngram 1=6
ngram 2=4

\\1-grams:
-0.7\t<unk>
-0.5\t<s>\t-0.3
-0.6\t</s>\t-0.3
-0.5\ta\t-0.3
-0.5\tb\t-0.3
-1.0\tsil\t-0.3

\\2-grams:
-0.05\t<s> a
-0.05\ta b
-2.0\ta a
-0.05\tb </s>

\\end\\
"""


@pytest.fixture
def lm(tmp_path):
    (tmp_path / "lm.arpa").write_text(ARPA)
    return NgramLM.read_arpa(tmp_path / "lm.arpa")


def peaky(labels, vocab=4, low=-8.0):
    log_probs = torch.full((len(labels), vocab), low)
    for t, k in enumerate(labels):
        log_probs[t, k] = 0.0
    return log_probs.log_softmax(-1)


def test_lm_weight_zero_equals_greedy_on_peaky_posteriors(lm):
    decoder = make_ctc_beam_decoder(PHONES, lm, lm_weight=0.0, beam_size=8)
    cases = [[1, 0, 2, 0, 3, 0, 1], [2, 0, 3], [1, 1, 2, 2, 1], [2, 0, 2, 0, 0], [0, 0, 0], [3, 3, 0, 3, 1]]
    width = max(len(c) for c in cases)
    log_probs = torch.stack([torch.cat([peaky(c), peaky([0] * (width - len(c)))]) for c in cases])
    lengths = torch.tensor([len(c) for c in cases])
    assert ctc_beam_decode(decoder, log_probs, lengths) == ctc_greedy(log_probs, lengths)


def test_the_lm_changes_an_ambiguous_frame(lm):
    # Frame 2 is a little more "a" than "b": greedy says "a a"; the LM (a -> b likely, a -> a not) says "a b".
    log_probs = torch.full((5, 4), -8.0)
    log_probs[0, 2] = 0.0
    log_probs[1, 0] = 0.0
    log_probs[2, 2], log_probs[2, 3] = -0.6, -0.8
    log_probs[3, 0] = log_probs[4, 0] = 0.0
    log_probs = log_probs.log_softmax(-1).unsqueeze(0)
    lengths = torch.tensor([5])
    assert ctc_greedy(log_probs, lengths) == [[2, 2]]
    no_lm = make_ctc_beam_decoder(PHONES, lm, lm_weight=0.0)
    with_lm = make_ctc_beam_decoder(PHONES, lm, lm_weight=2.0)
    assert ctc_beam_decode(no_lm, log_probs, lengths) == [[2, 2]]
    assert ctc_beam_decode(with_lm, log_probs, lengths) == [[2, 3]]


def test_the_insertion_bonus_turns_a_doubtful_phone_into_an_insertion(lm):
    # Frame 1 is mostly blank but a little "b": no bonus keeps "a", a bonus of 2 per phone buys the "b".
    log_probs = torch.full((3, 4), -8.0)
    log_probs[0, 2] = 0.0
    log_probs[1, 0], log_probs[1, 3] = -0.4, -1.1
    log_probs[2, 0] = 0.0
    log_probs = log_probs.log_softmax(-1).unsqueeze(0)
    lengths = torch.tensor([3])
    for bonus, expected in [(-1.0, [[2]]), (0.0, [[2]]), (2.0, [[2, 3]])]:
        decoder = make_ctc_beam_decoder(PHONES, lm, lm_weight=0.0, insertion_bonus=bonus)
        assert ctc_beam_decode(decoder, log_probs, lengths) == expected


@pytest.mark.parametrize("beam_size_token", [None, 2])
def test_a_hypothesis_scores_acoustics_plus_weighted_lm_plus_bonus(lm, beam_size_token):
    # One-hot posteriors: the path "a _ b" costs nothing acoustically, so the decoder's score is the LM's part.
    log_probs = torch.full((1, 3, 4), -1e4)
    log_probs[0, 0, 2] = log_probs[0, 1, 0] = log_probs[0, 2, 3] = 0.0
    lm_weight, bonus = 0.7, 1.5
    decoder = make_ctc_beam_decoder(PHONES, lm, lm_weight, bonus, beam_size_token=beam_size_token)
    best = decoder(log_probs, torch.tensor([3], dtype=torch.int32))[0][0]
    assert best.tokens.tolist() == [2, 3]
    expected = lm_weight * lm.score_sentence(["a", "b"]) + 2 * bonus
    assert best.score == pytest.approx(expected, abs=1e-4)
    assert lm.score_sentence(["a", "b"]) == pytest.approx(math.log(10) * (-0.05 - 0.05 - 0.05))


def test_a_trigram_scores_with_two_phones_of_history():
    sentences = [["a", "b", "a"], ["b", "b", "a"], ["a", "a", "b", "b"]]
    trigram = NgramLM.estimate(sentences, order=3, vocab=PHONES[1:])
    labels = [2, 0, 3, 0, 2, 0, 3]  # one-hot "a b a b": the score is the LM's part alone
    log_probs = torch.full((1, len(labels), 4), -1e4)
    for t, k in enumerate(labels):
        log_probs[0, t, k] = 0.0
    decoder = make_ctc_beam_decoder(PHONES, trigram, lm_weight=0.5, insertion_bonus=-0.25)
    best = decoder(log_probs, torch.tensor([len(labels)], dtype=torch.int32))[0][0]
    assert best.tokens.tolist() == [2, 3, 2, 3]
    expected = 0.5 * trigram.score_sentence(["a", "b", "a", "b"]) - 0.25 * 4
    assert best.score == pytest.approx(expected, abs=1e-4)
    bigram_score = NgramLM.estimate(sentences, order=2, vocab=PHONES[1:]).score_sentence(["a", "b", "a", "b"])
    assert abs(trigram.score_sentence(["a", "b", "a", "b"]) - bigram_score) > 0.1  # the history length matters
