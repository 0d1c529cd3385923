"""Hybrid decoding of the Viterbi-trained model: a phone loop with a bigram phone LM, Viterbi search with a beam.

The frame scores are scaled log-likelihoods (`scaled_log_likelihoods`): acoustic_scale * (log-posterior -
prior_scale * log-prior) of each HMM state. The search graph is a loop over every phone of lang/phones.txt but
the blank (id 0, which has no states): each phone is a left-to-right chain of N = topo.states_per_phone states
(state id (phone_id - 1) * N + k, as in phonerec.alignment.Topology) with a self-loop and a next transition on
each state, both of weight 0. Between phone instances, with LM scores in natural log:

    start            -> first state of q : lm_weight * ln P(q | <s>) + insertion_bonus
    last state of p  -> first state of q : lm_weight * ln P(q | p)   + insertion_bonus   (q == p too: a new instance)
    last state of p  -> end              : lm_weight * ln P(</s> | p)

so a path's score is its acoustic score + lm_weight * the LM log-probability of its phone sentence +
insertion_bonus * its number of phones (the LM weight and the bonus apply to the first phone and the end too, so
with lm_weight = insertion_bonus = 0 the LM has no say at all). A path must start in the first state of a phone
and end in the last state of one, so it needs at least N frames.

The search is vectorised over states with a dense (phones x phones) transition matrix and loops over frames only.
Beam: after each frame, states scoring below the frame's best - beam are dropped. If no state that can end the
path survives the last frame, the utterance is decoded again with no beam (and a warning is logged), so a narrow
beam still gives a complete phone sequence.
"""

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from phonerec.alignment import Topology
from phonerec.lm import BOS, EOS, NgramLM

NEG_INF = float("-inf")
log = logging.getLogger(__name__)


@dataclass
class HybridPath:
    phones: list[int]  # phone ids, one per phone instance
    score: float  # acoustic + LM + insertion score of the path (natural log)
    states: list[int]  # the HMM state of every frame


def scaled_log_likelihoods(
    log_posteriors: torch.Tensor,
    log_priors: torch.Tensor | None = None,
    prior_scale: float = 1.0,
    acoustic_scale: float = 1.0,
) -> torch.Tensor:
    """acoustic_scale * (log_posteriors - prior_scale * log_priors); log_priors (S,) broadcast over frames, and
    None for none (pseudo-likelihoods = posteriors)."""
    scores = log_posteriors if log_priors is None else log_posteriors - prior_scale * log_priors
    return acoustic_scale * scores


def lm_transitions(
    lm: NgramLM, id2phone: Mapping[int, str], topo: Topology, lm_weight: float = 1.0, insertion_bonus: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The phone loop's weights in float64: start (P,), transitions (P, P) [from p, to q] and end (P,), with
    index i standing for phone id i + 1. A phone missing from the LM is scored as <unk> when the LM has it;
    otherwise the LM raises LMError."""
    if lm.order > 2:
        raise ValueError(f"the phone loop has bigram states; got an order-{lm.order} LM")
    num = topo.num_phones - 1
    missing = [i for i in range(1, topo.num_phones) if i not in id2phone]
    if missing:
        raise ValueError(f"id2phone has no symbol for phone ids {missing}")
    names = [id2phone[i] for i in range(1, topo.num_phones)]
    start = torch.tensor([lm.logprob(q, [BOS]) for q in names], dtype=torch.float64)
    trans = torch.tensor([[lm.logprob(q, [p]) for q in names] for p in names], dtype=torch.float64)
    end = torch.tensor([lm.logprob(EOS, [p]) for p in names], dtype=torch.float64)
    assert trans.shape == (num, num)
    if lm_weight == 0:  # no LM at all, even where a probability is 0 (0 * -inf would be nan)
        start, trans, end = torch.zeros_like(start), torch.zeros_like(trans), torch.zeros_like(end)
    else:
        start, trans, end = lm_weight * start, lm_weight * trans, lm_weight * end
    return start + insertion_bonus, trans + insertion_bonus, end


def hybrid_search(
    log_likelihoods: torch.Tensor,
    topo: Topology,
    lm: NgramLM,
    id2phone: Mapping[int, str],
    lm_weight: float = 1.0,
    insertion_bonus: float = 0.0,
    beam: float = math.inf,
) -> HybridPath:
    """The best path through the phone loop for one utterance's (T, S) scaled log-likelihoods; see the module
    docstring. Raises ValueError if T < states_per_phone or every path scores -inf."""
    if not isinstance(log_likelihoods, torch.Tensor) or log_likelihoods.dim() != 2:
        raise ValueError(f"log_likelihoods must be a (T, S) tensor, got {getattr(log_likelihoods, 'shape', None)}")
    frames, num_states = log_likelihoods.shape
    n = topo.states_per_phone
    if num_states != topo.num_states:
        raise ValueError(f"log_likelihoods has {num_states} states per frame, the topology {topo.num_states}")
    if frames < n:
        raise ValueError(f"{frames} frames are fewer than the {n} states of one phone: no path")
    if not beam >= 0:  # also refuses nan
        raise ValueError(f"beam must be >= 0, got {beam}")
    start, trans, end = lm_transitions(lm, id2phone, topo, lm_weight, insertion_bonus)
    scores = log_likelihoods.detach().to(device="cpu", dtype=torch.float64)
    path = _viterbi(scores, n, start, trans, end, beam)
    if path is None:
        log.warning("no path survived beam %g to the last frame; decoding again with no beam", beam)
        path = _viterbi(scores, n, start, trans, end, math.inf)
    if path is None:
        raise ValueError("every path through the phone loop scores -inf")
    return path


def hybrid_decode(
    log_likelihoods: torch.Tensor,
    topo: Topology,
    lm: NgramLM,
    id2phone: Mapping[int, str],
    lm_weight: float = 1.0,
    insertion_bonus: float = 0.0,
    beam: float = math.inf,
) -> list[int]:
    """The phone ids of the best path (one per phone instance: two instances of a phone in a row stay two)."""
    return hybrid_search(log_likelihoods, topo, lm, id2phone, lm_weight, insertion_bonus, beam).phones


def _viterbi(
    scores: torch.Tensor, n: int, start: torch.Tensor, trans: torch.Tensor, end: torch.Tensor, beam: float
) -> HybridPath | None:
    """Viterbi over the phone loop; None when pruning left no state that can end at the last frame."""
    frames, num_states = scores.shape
    num_phones = num_states // n
    states = torch.arange(num_states)
    first = torch.arange(num_phones) * n  # first state of each phone
    last = first + n - 1
    is_first = states % n == 0

    delta = torch.full((num_states,), NEG_INF, dtype=torch.float64)
    delta[first] = start + scores[0, first]
    delta = _prune(delta, beam)
    backptr = torch.zeros(frames, num_states, dtype=torch.long)  # predecessor state
    entered = torch.zeros(frames, num_states, dtype=torch.bool)  # a new phone instance begins at (t, s)
    entered[0] = is_first
    neg = torch.full((1,), NEG_INF, dtype=torch.float64)
    for t in range(1, frames):
        stay = delta
        advance = torch.cat([neg, delta[:-1]]).masked_fill(is_first, NEG_INF)
        into, from_phone = (delta[last].unsqueeze(1) + trans).max(dim=0)  # best entry into each phone q
        enter = torch.full((num_states,), NEG_INF, dtype=torch.float64)
        enter[first] = into
        best, choice = torch.stack([stay, advance, enter]).max(dim=0)
        enter_from = torch.zeros(num_states, dtype=torch.long)
        enter_from[first] = last[from_phone]
        backptr[t] = torch.where(choice == 0, states, torch.where(choice == 1, states - 1, enter_from))
        entered[t] = (choice == 2) & torch.isfinite(best)
        delta = _prune(best + scores[t], beam)

    final = torch.full((num_states,), NEG_INF, dtype=torch.float64)
    final[last] = delta[last] + end
    score, state = final.max(dim=0)
    if not torch.isfinite(score):
        return None
    state = int(state)
    path, phones = [0] * frames, []
    for t in range(frames - 1, -1, -1):
        path[t] = state
        if entered[t, state]:
            phones.append(state // n + 1)
        state = int(backptr[t, state])
    phones.reverse()
    return HybridPath(phones=phones, score=float(score), states=path)


def _prune(delta: torch.Tensor, beam: float) -> torch.Tensor:
    if math.isinf(beam):
        return delta
    return delta.masked_fill(delta < delta.max() - beam, NEG_INF)
