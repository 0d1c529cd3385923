"""N-gram language models over phones (or words) estimated from training transcripts, read and written as ARPA.

    lm = NgramLM.estimate([["ay", "t"], ["w", "ah", "n"]], order=2)
    lm.write_arpa("data/fsdd/lang/phone_lm.arpa")
    lm = NgramLM.read_arpa("data/fsdd/lang/phone_lm.arpa")
    lm.logprob("t", ["ay"])                 # ln P(t | ay), backing off as ARPA does
    lm.score_sentence(["ay", "t"])          # ln P(ay | <s>) + ln P(t | ay) + ln P(</s> | t)

Sentences are wrapped in `<s>` ... `</s>`. A sentence's first word is predicted from the history `<s>` alone
(histories are never padded with several `<s>`), `<s>` is never predicted (its unigram is written with log10
probability -99, as SRILM does) and `</s>` never ends a history.

Smoothing: interpolated Witten-Bell. For a history h seen c(h) times, followed by T(h) distinct words,

    P(w | h) = (c(h, w) + T(h) * P(w | h')) / (c(h) + T(h))          h' = h without its first word

and at the bottom the lower-order distribution is uniform over the vocabulary V (every word of the training
sentences, `</s>`, the words of `vocab` and `<unk>`; not `<s>`): P(w) = (c(w) + T / |V|) / (N + T), with N the
number of predicted tokens and T the number of distinct ones. A history never seen backs off to h' unchanged.
Written as ARPA, each n-gram seen in training carries its interpolated probability and each history its backoff
weight T(h) / (c(h) + T(h)), so that ARPA's backoff rule (P(w | h) = bow(h) * P(w | h') for an n-gram absent
from the file) gives back the interpolated model exactly and every conditional distribution sums to 1 over V.

Unknown words: with `unk=True` (the default) `<unk>` is a vocabulary word with no count of its own (it gets its
share of the uniform base distribution, or more where the training sentences hold `<unk>`), and `logprob`
scores any word outside the vocabulary as `<unk>`, in the predicted word and in the history alike. With
`unk=False` there is no `<unk>` entry and scoring a predicted word outside the vocabulary raises LMError (an
unknown word in a history just matches no n-gram, so the history backs off past it). A model read from ARPA has
`unk` exactly when its unigrams hold `<unk>`.
"""

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from phonerec.base.errors import RecipeError
from phonerec.base.files import write_text_atomic

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LOG10_ZERO = -99.0  # log10 "probability" of <s>, which is never predicted
LN10 = math.log(10.0)
DISCOUNTS = ("witten_bell",)

Ngram = tuple[str, ...]


class LMError(RecipeError, ValueError):
    """Bad language-model input: a malformed ARPA file, a bad training sentence, an unknown word without <unk>."""


class NgramLM:
    """A backoff n-gram model: log10 probabilities of the listed n-grams and log10 backoff weights of histories,
    the content of an ARPA file. Build one with `estimate` or `read_arpa`."""

    def __init__(self, order: int, probs: list[dict[Ngram, float]], bows: dict[Ngram, float]):
        if order < 1 or len(probs) != order:
            raise LMError(f"an order-{order} model needs {order} n-gram tables, got {len(probs)}")
        self.order = order
        self.probs = probs  # probs[k - 1][ngram] = log10 P(ngram[-1] | ngram[:-1]) for the k-grams
        self.bows = bows  # log10 backoff weight of a history; absent = 0 (weight 1)
        self.unk = (UNK,) in probs[0]

    # ---- estimation -------------------------------------------------------------------------------------------

    @classmethod
    def estimate(
        cls,
        sentences: Iterable[Sequence[str]],
        order: int = 2,
        discount: str = "witten_bell",
        vocab: Iterable[str] = (),
        unk: bool = True,
    ) -> "NgramLM":
        """Estimate from tokenised sentences (without boundary symbols). `vocab` adds words that may have no
        count (e.g. every phone of phones.txt, so that none is out of the vocabulary)."""
        if discount not in DISCOUNTS:
            raise LMError(f"unknown discount '{discount}'; choose one of {', '.join(DISCOUNTS)}")
        if not isinstance(order, int) or order < 1:
            raise LMError(f"order must be a positive integer, got {order!r}")
        counts: list[dict[Ngram, int]] = [defaultdict(int) for _ in range(order)]
        num_sentences = 0
        for sentence in sentences:
            words = list(sentence)
            for word in words:
                _check_word(word, f"sentence {num_sentences}")
            tokens = [BOS, *words, EOS]
            for i in range(1, len(tokens)):
                for k in range(1, min(order, i + 1) + 1):
                    counts[k - 1][tuple(tokens[i - k + 1 : i + 1])] += 1
            num_sentences += 1
        if not num_sentences:
            raise LMError("no training sentences")
        extra = set()
        for word in vocab:
            _check_word(word, "vocab")
            extra.add(word)
        words = {ngram[0] for ngram in counts[0]} | extra | {EOS} | ({UNK} if unk else set())
        words.discard(BOS)

        # Per-history totals c(h) and distinct followers T(h), for every order.
        total: dict[Ngram, int] = defaultdict(int)
        types: dict[Ngram, int] = defaultdict(int)
        for table in counts:
            for ngram, count in table.items():
                total[ngram[:-1]] += count
                types[ngram[:-1]] += 1

        uniform = 1.0 / len(words)
        cache: dict[Ngram, float] = {}

        def prob(ngram: Ngram) -> float:
            """Interpolated Witten-Bell P(ngram[-1] | ngram[:-1])."""
            if ngram in cache:
                return cache[ngram]
            history = ngram[:-1]
            lower = prob(ngram[1:]) if history else uniform
            if history in total:
                count = counts[len(ngram) - 1].get(ngram, 0)
                p = (count + types[history] * lower) / (total[history] + types[history])
            else:
                p = lower
            cache[ngram] = p
            return p

        probs: list[dict[Ngram, float]] = [{} for _ in range(order)]
        probs[0] = {(w,): math.log10(prob((w,))) for w in words}
        probs[0][(BOS,)] = LOG10_ZERO
        for k in range(2, order + 1):
            probs[k - 1] = {ngram: math.log10(prob(ngram)) for ngram in counts[k - 1]}
        bows = {h: math.log10(types[h] / (total[h] + types[h])) for h in total if h and len(h) < order}
        return cls(order, probs, bows)

    # ---- scoring ----------------------------------------------------------------------------------------------

    @property
    def vocab(self) -> set[str]:
        """The words that can be predicted: every unigram but `<s>` (so `</s>` and `<unk>` where present)."""
        return {ngram[0] for ngram in self.probs[0]} - {BOS}

    def _map(self, word: str) -> str:
        return UNK if self.unk and (word,) not in self.probs[0] else word

    def log10prob(self, word: str, history: Sequence[str] = ()) -> float:
        """log10 P(word | history), with ARPA backoff; the history is cut to its last order - 1 words."""
        if word == BOS:
            raise LMError("<s> is never predicted")
        word = self._map(word)
        if (word,) not in self.probs[0]:
            raise LMError(f"'{word}' is not in the language model's vocabulary and the model has no <unk>")
        context = tuple(self._map(w) for w in history)[-(self.order - 1) :] if self.order > 1 else ()
        backoff = 0.0
        while True:
            ngram = (*context, word)
            p = self.probs[len(ngram) - 1].get(ngram)
            if p is not None:
                return backoff + p
            backoff += self.bows.get(context, 0.0)
            context = context[1:]

    def logprob(self, word: str, history: Sequence[str] = ()) -> float:
        """Natural-log P(word | history), e.g. `logprob("t", ["<s>", "ay"])`; see log10prob."""
        return self.log10prob(word, history) * LN10

    def score_sentence(self, words: Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """Natural-log probability of a sentence: each word given the ones before it (after `<s>` with bos), then
        `</s>` with eos."""
        history = [BOS] if bos else []
        score = 0.0
        for word in [*words, EOS] if eos else words:
            score += self.logprob(word, history)
            history.append(word)
        return score

    # ---- ARPA -------------------------------------------------------------------------------------------------

    def write_arpa(self, path: str | os.PathLike) -> None:
        """Write the model as an ARPA file, atomically (a temporary name, then a rename). Values are written with
        Python's shortest round-trip float repr, so read_arpa gives back the very same numbers."""
        path = Path(path)
        lines = ["", "\\data\\"]
        lines += [f"ngram {k + 1}={len(table)}" for k, table in enumerate(self.probs)]
        for k, table in enumerate(self.probs):
            lines += ["", f"\\{k + 1}-grams:"]
            for ngram in sorted(table):
                fields = [repr(table[ngram]), " ".join(ngram)]
                if ngram in self.bows:
                    fields.append(repr(self.bows[ngram]))
                lines.append("\t".join(fields))
        lines += ["", "\\end\\", ""]
        write_text_atomic(path, "\n".join(lines))

    @classmethod
    def read_arpa(cls, path: str | os.PathLike) -> "NgramLM":
        """Read an ARPA file (ours or another tool's). The header's counts must match the sections."""
        path = Path(path)
        declared: dict[int, int] = {}
        probs: list[dict[Ngram, float]] = []
        bows: dict[Ngram, float] = {}
        section = None  # "data", an n-gram order, or "end"
        with open(path, encoding="utf-8") as f:
            for number, raw in enumerate(f, 1):
                line = raw.strip()
                where = f"{path}:{number}"
                if not line:
                    continue
                if section == "end":
                    raise LMError(f"{where}: text after \\end\\")
                if line == "\\data\\":
                    if section is not None:
                        raise LMError(f"{where}: a second \\data\\")
                    section = "data"
                elif line == "\\end\\":
                    section = "end"
                elif line.startswith("\\") and line.endswith("-grams:"):
                    k = _parse_int(line[1 : -len("-grams:")], where)
                    if section is None or k != len(probs) + 1 or k not in declared:
                        raise LMError(f"{where}: unexpected section {line}")
                    probs.append({})
                    section = k
                elif section == "data":
                    key, _, value = line.partition("=")
                    if not key.startswith("ngram ") or not value:
                        raise LMError(f"{where}: expected 'ngram N=count', got '{line}'")
                    k = _parse_int(key[len("ngram ") :], where)
                    if k != len(declared) + 1:
                        raise LMError(f"{where}: ngram counts out of order")
                    declared[k] = _parse_int(value, where)
                elif isinstance(section, int):
                    fields = line.split()
                    if len(fields) not in (section + 1, section + 2):
                        raise LMError(f"{where}: a {section}-gram line needs {section + 1} or {section + 2} fields")
                    ngram = tuple(fields[1 : section + 1])
                    if ngram in probs[section - 1]:
                        raise LMError(f"{where}: duplicate n-gram '{' '.join(ngram)}'")
                    probs[section - 1][ngram] = _parse_float(fields[0], where)
                    if len(fields) == section + 2:
                        bows[ngram] = _parse_float(fields[-1], where)
                elif section is None:
                    continue  # text before \data\ is allowed
                else:
                    raise LMError(f"{where}: unexpected line '{line}'")
        if section != "end":
            raise LMError(f"{path}: no \\end\\ (truncated file?)")
        if len(probs) != len(declared) or not probs:
            raise LMError(f"{path}: the header declares {len(declared)} orders, the file has {len(probs)} sections")
        for k, table in enumerate(probs, 1):
            if len(table) != declared[k]:
                raise LMError(f"{path}: the header declares {declared[k]} {k}-grams, the section has {len(table)}")
        return cls(len(probs), probs, bows)


def _check_word(word, where: str) -> None:
    if not isinstance(word, str) or not word or any(c.isspace() for c in word):
        raise LMError(f"{where}: a word must be a non-empty string without whitespace, got {word!r}")
    if word in (BOS, EOS):
        raise LMError(f"{where}: '{word}' is added by the model and may not appear in a sentence")


def _parse_int(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LMError(f"{where}: '{text}' is not an integer") from None


def _parse_float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LMError(f"{where}: '{text}' is not a number") from None
