"""The n-gram LM: hand-computed Witten-Bell values, normalisation of every history, ARPA round trip and format."""

import itertools
import math
from fractions import Fraction

import pytest

from phonerec.decoding.lm import LMError, NgramLM

TOY = [["a", "b"], ["a", "a"]]
CORPUS = [
    ["sil", "w", "ah", "n", "sil"],
    ["t", "uw"],
    ["th", "r", "iy"],
    ["w", "ah", "n", "t", "uw"],
    ["t", "uw", "t", "uw", "th", "r", "iy"],
    ["ah"],
    [],
]


def ln(x) -> float:
    return math.log(Fraction(x))


def all_histories(lm: NgramLM, extra_words=("zz",)) -> list[tuple[str, ...]]:
    """Every history of up to order - 1 words over the vocabulary (and an unknown word), <s> only first."""
    words = sorted(lm.vocab - {"</s>"}) + list(extra_words)
    histories = [()]
    for length in range(1, lm.order):
        histories += list(itertools.product(words, repeat=length))
        histories += [("<s>", *rest) for rest in itertools.product(words, repeat=length - 1)]
    return histories


def assert_normalised(lm: NgramLM) -> int:
    checked = 0
    for history in all_histories(lm):
        total = math.fsum(math.exp(lm.logprob(w, history)) for w in lm.vocab)
        assert total == pytest.approx(1.0, abs=1e-9), history
        checked += 1
    return checked


# ---- hand-computed Witten-Bell -----------------------------------------------------------------------------------

# TOY, bigram, no <unk>: V = {a, b, </s>}; unigram counts a 3, b 1, </s> 2 (N = 6, T = 3), so
# P(w) = (c(w) + 3 * 1/3) / (6 + 3): a 4/9, b 2/9, </s> 3/9.
# History <s>: c = 2, T = 1 (a);         P(w | <s>) = (c(<s> w) + 1 * P(w)) / 3
# History a:   c = 3, T = 3 (b, a, </s>); P(w | a)   = (c(a w) + 3 * P(w)) / 6
# History b:   c = 1, T = 1 (</s>);       P(w | b)   = (c(b w) + 1 * P(w)) / 2
TOY_BIGRAM = {
    ("<s>", "a"): Fraction(22, 27),
    ("<s>", "b"): Fraction(2, 27),
    ("<s>", "</s>"): Fraction(3, 27),
    ("a", "a"): Fraction(7, 18),
    ("a", "b"): Fraction(5, 18),
    ("a", "</s>"): Fraction(6, 18),
    ("b", "a"): Fraction(2, 9),
    ("b", "b"): Fraction(1, 9),
    ("b", "</s>"): Fraction(6, 9),
}


def test_witten_bell_bigram_matches_hand_computed_values(tmp_path):
    lm = NgramLM.estimate(TOY, order=2, unk=False)
    assert lm.vocab == {"a", "b", "</s>"}
    for (history, word), p in TOY_BIGRAM.items():
        assert lm.logprob(word, [history]) == pytest.approx(ln(p), abs=1e-12), (history, word)
    assert lm.logprob("a") == pytest.approx(ln(Fraction(4, 9)), abs=1e-12)
    # Backoff weights T / (c + T); the n-grams listed are exactly the seen ones.
    assert lm.bows[("<s>",)] == pytest.approx(math.log10(1 / 3))
    assert lm.bows[("a",)] == pytest.approx(math.log10(1 / 2))
    assert lm.bows[("b",)] == pytest.approx(math.log10(1 / 2))
    assert set(lm.probs[1]) == {("<s>", "a"), ("a", "b"), ("a", "a"), ("a", "</s>"), ("b", "</s>")}
    # The unseen bigrams come from backoff: P(b | <s>) = bow(<s>) * P(b).
    assert ("<s>", "b") not in lm.probs[1]
    assert lm.score_sentence(["a", "b"]) == pytest.approx(ln(Fraction(22, 27) * Fraction(5, 18) * Fraction(2, 3)))


def test_witten_bell_trigram_interpolates_the_bigram():
    lm = NgramLM.estimate(TOY, order=3, unk=False)
    # History (<s>, a): c = 2, T = 2 (b, a): P(b | <s> a) = (1 + 2 * P(b | a)) / 4 = (1 + 2 * 5/18) / 4 = 7/18.
    assert lm.logprob("b", ["<s>", "a"]) == pytest.approx(ln(Fraction(7, 18)))
    # History (a, a): c = 1, T = 1 (</s>): the unseen P(b | a a) = (0 + 1 * 5/18) / 2 = 5/36, through the bow.
    assert ("a", "a", "b") not in lm.probs[2]
    assert lm.logprob("b", ["<s>", "a", "a"]) == pytest.approx(ln(Fraction(5, 36)))
    # A history never seen backs off unchanged: (b, a) was never a history.
    assert lm.logprob("b", ["b", "a"]) == pytest.approx(ln(Fraction(5, 18)))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_history_sums_to_one(order, tmp_path):
    lm = NgramLM.estimate(CORPUS, order=order, vocab=["sil", "f", "ay", "v"])
    assert {"f", "<unk>", "</s>"} <= lm.vocab and "<s>" not in lm.vocab
    assert assert_normalised(lm) > (0 if order == 1 else 10)
    lm.write_arpa(tmp_path / "lm.arpa")
    assert_normalised(NgramLM.read_arpa(tmp_path / "lm.arpa"))


def test_unigram_model_ignores_history_and_has_uniform_base():
    lm = NgramLM.estimate(TOY, order=1, unk=True)
    # N = 6 tokens, T = 3 types, V = {a, b, </s>, <unk>}: P(<unk>) = (0 + 3/4) / 9, P(a) = (3 + 3/4) / 9.
    assert lm.logprob("<unk>") == pytest.approx(ln(Fraction(3, 36)))
    assert lm.logprob("a", ["b", "a"]) == pytest.approx(ln(Fraction(15, 36)))


# ---- ARPA --------------------------------------------------------------------------------------------------------


def parse_arpa_sections(text: str) -> tuple[dict[int, int], dict[int, list[list[str]]]]:
    """A reader independent of NgramLM: the header's counts and each section's entry lines, split."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    assert lines[0] == "\\data\\" and lines[-1] == "\\end\\"
    declared, sections, current = {}, {}, None
    for line in lines[1:-1]:
        if line.startswith("ngram "):
            k, count = line[len("ngram ") :].split("=")
            declared[int(k)] = int(count)
        elif line.startswith("\\") and line.endswith("-grams:"):
            current = int(line[1:-7])
            sections[current] = []
        else:
            sections[current].append(line.split("\t"))
    return declared, sections


@pytest.mark.parametrize("order", [1, 2, 3])
def test_arpa_file_section_counts_and_fields(order, tmp_path):
    lm = NgramLM.estimate(CORPUS, order=order)
    path = tmp_path / "lm.arpa"
    lm.write_arpa(path)
    assert not list(tmp_path.glob("*.tmp"))
    declared, sections = parse_arpa_sections(path.read_text())
    assert sorted(declared) == sorted(sections) == list(range(1, order + 1))
    for k, entries in sections.items():
        assert len(entries) == declared[k] > 0
        for fields in entries:
            assert len(fields[1].split()) == k
            assert len(fields) in (2, 3)
            assert all(float(value) <= 0 for value in [fields[0], *fields[2:]])
            if k == order:
                assert len(fields) == 2  # no backoff weight at the highest order
    unigrams = {fields[1]: fields for fields in sections[1]}
    assert float(unigrams["<s>"][0]) == -99 and "<unk>" in unigrams
    if order > 1:
        assert len(unigrams["<s>"]) == 3  # <s> is a history
        assert len(unigrams["</s>"]) == 2  # </s> never is
    # 6 seen types + <unk> + </s> + <s> ... counted by hand from CORPUS: sil w ah n t uw th r iy.
    assert declared[1] == 9 + 3


@pytest.mark.parametrize("order", [1, 2, 3])
def test_arpa_round_trip_gives_the_same_log_probabilities(order, tmp_path):
    lm = NgramLM.estimate(CORPUS, order=order, unk=order != 2)
    path = tmp_path / "lm.arpa"
    lm.write_arpa(path)
    back = NgramLM.read_arpa(path)
    assert back.order == order and back.unk == lm.unk and back.vocab == lm.vocab
    assert back.probs == lm.probs and back.bows == lm.bows
    for history in all_histories(lm, extra_words=()):
        for word in lm.vocab:
            assert back.logprob(word, history) == lm.logprob(word, history)
    sentence = ["t", "uw", "w", "ah", "n"]
    assert back.score_sentence(sentence) == lm.score_sentence(sentence)


def test_read_arpa_of_a_hand_written_file(tmp_path):
    path = tmp_path / "hand.arpa"
    path.write_text(
        "made by hand\n\n\\data\\\nngram 1=3\nngram 2=1\n\n\\1-grams:\n-99 <s> -0.3\n-0.2 a -0.1\n-0.5 </s>\n\n"
        "\\2-grams:\n-0.05 <s> a\n\n\\end\\\n"
    )
    lm = NgramLM.read_arpa(path)
    assert lm.order == 2 and not lm.unk
    assert lm.log10prob("a", ["<s>"]) == pytest.approx(-0.05)
    assert lm.log10prob("</s>", ["<s>"]) == pytest.approx(-0.3 - 0.5)
    assert lm.log10prob("</s>", ["a"]) == pytest.approx(-0.1 - 0.5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1 a\n\n\\end\\\n", "declares 2 1-grams"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1 a\n", "no \\\\end\\\\"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1 a -1 -1\n\n\\end\\\n", "2 or 3 fields"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\nx a\n\n\\end\\\n", "not a number"),
        ("\\data\\\nngram 1=1\n\n\\2-grams:\n-1 a b\n\n\\end\\\n", "unexpected section"),
    ],
)
def test_read_arpa_rejects_malformed_files(tmp_path, text, message):
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    with pytest.raises(LMError, match=message):
        NgramLM.read_arpa(path)


# ---- unknown words and bad input ---------------------------------------------------------------------------------


def test_unknown_words_score_as_unk_or_raise(tmp_path):
    lm = NgramLM.estimate(CORPUS, order=2)
    assert lm.unk and ("<unk>",) in lm.probs[0]
    assert math.isfinite(lm.logprob("zz", ["t"]))
    assert lm.logprob("zz", ["t"]) == lm.logprob("<unk>", ["t"])
    assert lm.logprob("t", ["zz"]) == lm.logprob("t", ["<unk>"])
    lm.write_arpa(tmp_path / "lm.arpa")
    assert NgramLM.read_arpa(tmp_path / "lm.arpa").logprob("zz") == lm.logprob("<unk>")

    closed = NgramLM.estimate(CORPUS, order=2, unk=False)
    assert "<unk>" not in closed.vocab
    with pytest.raises(LMError, match="'zz' is not in"):
        closed.logprob("zz", ["t"])
    # An unknown word in the history matches no bigram: the unigram, times no backoff weight.
    assert closed.logprob("t", ["zz"]) == closed.logprob("t")
    # Words given in `vocab` are in the vocabulary with no count.
    with_vocab = NgramLM.estimate(CORPUS, order=2, unk=False, vocab=["zz"])
    assert math.isfinite(with_vocab.logprob("zz", ["t"]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sentences": [["a", "<s>"]]}, "added by the model"),
        ({"sentences": [["a", "</s>"]]}, "added by the model"),
        ({"sentences": [["a b"]]}, "without whitespace"),
        ({"sentences": []}, "no training sentences"),
        ({"sentences": TOY, "discount": "good_turing"}, "unknown discount"),
        ({"sentences": TOY, "order": 0}, "positive integer"),
    ],
)
def test_estimate_rejects_bad_input(kwargs, message):
    with pytest.raises(LMError, match=message):
        NgramLM.estimate(**kwargs)


def test_bos_is_never_predicted():
    with pytest.raises(LMError, match="never predicted"):
        NgramLM.estimate(TOY).logprob("<s>", ["a"])
