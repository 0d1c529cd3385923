"""CTC beam search with a phone LM (torchaudio ctc_decoder): LM weight 0 equals greedy on peaky posteriors, and
the LM changes the output where it should."""

import torch

from phonerec.ctc_beam import ctc_beam_decode, make_ctc_beam_decoder
from phonerec.decode import ctc_greedy

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


def peaky(labels, vocab=4, low=-8.0):
    log_probs = torch.full((len(labels), vocab), low)
    for t, k in enumerate(labels):
        log_probs[t, k] = 0.0
    return log_probs.log_softmax(-1)


def test_lm_weight_zero_equals_greedy_on_peaky_posteriors(tmp_path):
    (tmp_path / "lm.arpa").write_text(ARPA)
    decoder = make_ctc_beam_decoder(PHONES, tmp_path / "lm.arpa", lm_weight=0.0, beam_size=8)
    cases = [[1, 0, 2, 0, 3, 0, 1], [2, 0, 3], [1, 1, 2, 2, 1], [2, 0, 2, 0, 0], [0, 0, 0], [3, 3, 0, 3, 1]]
    width = max(len(c) for c in cases)
    log_probs = torch.stack([torch.cat([peaky(c), peaky([0] * (width - len(c)))]) for c in cases])
    lengths = torch.tensor([len(c) for c in cases])
    assert ctc_beam_decode(decoder, log_probs, lengths) == ctc_greedy(log_probs, lengths)


def test_the_lm_changes_an_ambiguous_frame(tmp_path):
    (tmp_path / "lm.arpa").write_text(ARPA)
    # Frame 2 is a little more "a" than "b": greedy says "a a"; the LM (a -> b likely, a -> a not) says "a b".
    log_probs = torch.full((5, 4), -8.0)
    log_probs[0, 2] = 0.0
    log_probs[1, 0] = 0.0
    log_probs[2, 2], log_probs[2, 3] = -0.6, -0.8
    log_probs[3, 0] = log_probs[4, 0] = 0.0
    log_probs = log_probs.log_softmax(-1).unsqueeze(0)
    lengths = torch.tensor([5])
    assert ctc_greedy(log_probs, lengths) == [[2, 2]]
    no_lm = make_ctc_beam_decoder(PHONES, tmp_path / "lm.arpa", lm_weight=0.0)
    with_lm = make_ctc_beam_decoder(PHONES, tmp_path / "lm.arpa", lm_weight=2.0)
    assert ctc_beam_decode(no_lm, log_probs, lengths) == [[2, 2]]
    assert ctc_beam_decode(with_lm, log_probs, lengths) == [[2, 3]]
