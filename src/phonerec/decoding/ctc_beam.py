"""CTC prefix beam search with a phone n-gram LM and an insertion bonus: torchaudio's ctc_decoder (flashlight-text),
lexicon-free, so the LM's words are the phones themselves.

The LM goes in through torchaudio's custom-LM interface (`PhoneLMScorer`, a CTCDecoderLM), not as an ARPA file
for KenLM: flashlight's lexicon-free search has no per-token score of its own (its word score is for lexicon
words), and an ARPA file with the bonus folded into its log-probabilities would hold positive ones, which KenLM
refuses. (Beware, too: given an ARPA file and no `lm_dict`, torchaudio 2.11's lexicon-free decoder numbers
KenLM's words in the order of an unordered map, not the tokens' order, so the LM scores other phones than the
search appends; an lm_dict file listing the tokens in order mends it. benchmarks/bench_ctc_beam.py measures both.)
Each phone the search appends scores, in natural log as in the hybrid decoder (phonerec.decoding.hybrid),

    lm_weight * ln P(phone | history) + insertion_bonus          and at the end  lm_weight * ln P(</s> | history)

so a hypothesis scores its CTC log-posterior + lm_weight * the LM log-probability of its phone sentence +
insertion_bonus * its number of phones. The decoder's own lm_weight is 1. The scorer's states are built once per
history and keep their successors, so the search's LM calls are list lookups; still, each is a call into Python,
4x KenLM's cost with every token tried per frame, and `beam_size_token` (the most likely tokens tried per frame)
keeps their number down: 10 tokens cost 0.36x KenLM with every token (benchmarks/RESULTS.md).

The decoder's silence token is set to the blank: flashlight's lexicon-free search puts a silence token at both
ends of every hypothesis, and a real phone there (TIMIT's `sil`) would be indistinguishable from it; as the
blank, torchaudio drops it with the other blanks, and the outputs equal the greedy best path on peaky
posteriors when the LM weight and the bonus are 0.
"""

import torch
from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState, ctc_decoder

from phonerec.decoding.lm import BOS, EOS, NgramLM

NEG_INF = float("-inf")


class PhoneLMScorer(CTCDecoderLM):
    """The phone LM of the module docstring for flashlight's search. `phones` are the decoder's tokens by id,
    phones[0] the blank (never scored: the search does not call the LM for it). With lm None, or lm_weight 0,
    only the insertion bonus scores."""

    def __init__(self, phones: list[str], lm: NgramLM | None, lm_weight: float = 1.0, insertion_bonus: float = 0.0):
        super().__init__()
        self.phones, self.lm = phones, lm
        self.lm_weight, self.insertion_bonus = float(lm_weight), float(insertion_bonus)
        self.context = 0 if lm is None or self.lm_weight == 0 else lm.order - 1  # history length that matters
        self.states: dict[tuple[str, ...], CTCDecoderLMState] = {}  # kept alive here while the search holds them
        self.initial = self._state((BOS,)[: self.context])

    def _state(self, history: tuple[str, ...]) -> CTCDecoderLMState:
        state = self.states.get(history)
        if state is None:
            state = self.states[history] = CTCDecoderLMState()
            state.history, state.successors = history, None
        return state

    def _logprob(self, word: str, history: tuple[str, ...]) -> float:
        return 0.0 if self.context == 0 else self.lm_weight * self.lm.logprob(word, list(history))

    def _expand(self, state: CTCDecoderLMState) -> list:
        successors = [(state, NEG_INF)]  # the blank
        for phone in self.phones[1:]:
            history = (state.history + (phone,))[-self.context :] if self.context else ()
            successors.append((self._state(history), self._logprob(phone, state.history) + self.insertion_bonus))
        state.successors = successors
        state.end_score = self._logprob(EOS, state.history)
        return successors

    def start(self, start_with_nothing: bool) -> CTCDecoderLMState:
        return self.initial

    def score(self, state: CTCDecoderLMState, usr_token_idx: int) -> tuple[CTCDecoderLMState, float]:
        successors = state.successors
        if successors is None:
            successors = self._expand(state)
        return successors[usr_token_idx]

    def finish(self, state: CTCDecoderLMState) -> tuple[CTCDecoderLMState, float]:
        if state.successors is None:
            self._expand(state)
        return state, state.end_score


class PronunciationLMScorer(CTCDecoderLM):
    """A word n-gram LM for flashlight's lexicon search whose words are pronunciations: `units[k]` = (the word, the
    log-probability of the pronunciation) of the search's word k (lm_dict's order). A unit scores
    lm_weight * ln P(word | the words before) + its log-probability, and the end lm_weight * ln P(</s> | ...): the
    word LM as KenLM would score it, with each pronunciation weighed (lexiconp.txt), which a lexicon file cannot
    say to flashlight."""

    def __init__(self, units: list[tuple[str, float]], lm: NgramLM, lm_weight: float = 1.0):
        super().__init__()
        self.units, self.lm, self.lm_weight = units, lm, float(lm_weight)
        self.context = lm.order - 1
        self.states: dict[tuple[str, ...], CTCDecoderLMState] = {}  # kept alive here while the search holds them

    def _state(self, history: tuple[str, ...]) -> CTCDecoderLMState:
        state = self.states.get(history)
        if state is None:
            state = self.states[history] = CTCDecoderLMState()
            state.history = history
        return state

    def start(self, start_with_nothing: bool) -> CTCDecoderLMState:
        return self._state((BOS,)[: self.context])

    def score(self, state: CTCDecoderLMState, usr_token_idx: int) -> tuple[CTCDecoderLMState, float]:
        word, log_prob = self.units[usr_token_idx]
        after = (state.history + (word,))[-self.context :] if self.context else ()
        return self._state(after), self.lm_weight * self.lm.logprob(word, list(state.history)) + log_prob

    def finish(self, state: CTCDecoderLMState) -> tuple[CTCDecoderLMState, float]:
        return state, self.lm_weight * self.lm.logprob(EOS, list(state.history))


def make_ctc_beam_decoder(
    phones: list[str],
    lm: NgramLM | None,
    lm_weight: float = 0.0,
    insertion_bonus: float = 0.0,
    beam_size: int = 50,
    beam_size_token: int | None = None,
):
    """phones: the output symbols by id, phones[0] the blank (lang/phones.txt order). beam_size_token None tries
    every token on every frame."""
    return ctc_decoder(
        lexicon=None,
        tokens=phones,
        lm=PhoneLMScorer(phones, lm, lm_weight, insertion_bonus),
        lm_weight=1.0,
        beam_size=beam_size,
        beam_size_token=beam_size_token,
        blank_token=phones[0],
        sil_token=phones[0],
        unk_word="<unk>",
        nbest=1,
    )


def ctc_beam_decode(decoder, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best hypothesis (phone ids) of each utterance of a batch (B, T, V) of log-posteriors."""
    results = decoder(log_probs.detach().float().cpu().contiguous(), lengths.cpu().to(torch.int32))
    return [r[0].tokens.tolist() if r else [] for r in results]
