"""Hybrid decoding of the Viterbi-trained model: Viterbi search with a beam through a loop of phones (with a
bigram phone LM) or of words (with a word bigram, constrained by the lexicon).

The frame scores are scaled log-likelihoods (`scaled_log_likelihoods`): acoustic_scale * (log-posterior -
prior_scale * log-prior) of each HMM state. Every search graph here is a `LoopGraph`: a loop over units, each a
left-to-right chain of HMM states (columns of the scores) with a self-loop and a forward transition on each
state, weighted by the model's transition log-probabilities (phonerec.hmm.transitions; log P(loop | s) and
log P(forward | s), the forward arc of a unit's last state being its exit) or 0 for a model without them, and
weights in natural log between units:

    start            -> first state of v : start[v]
    last state of u  -> first state of v : trans[u, v]      (v == u too: a new instance)
    last state of u  -> end              : end[u]

A path must start in the first state of a unit and end in the last state of one.

Phone loop (`phone_loop`): a unit per phone of lang/phones.txt but the blank (id 0, which has no states), its
chain the N = topo.states_per_phone states of the phone (state id (phone_id - 1) * N + k, as in
phonerec.hmm.align.Topology), and

    start[q] = lm_weight * ln P(q | <s>) + insertion_bonus,  trans[p, q] = lm_weight * ln P(q | p) + insertion_bonus,
    end[p] = lm_weight * ln P(</s> | p)

so a path's score is its acoustic score + lm_weight * the LM log-probability of its phone sentence +
insertion_bonus * its number of phones (with lm_weight = insertion_bonus = 0 the LM has no say at all).

Word loop (`word_loop`): a unit per pronunciation of lang/lexicon.txt, its chain the states of its phones, with
the word LM and a word score in place of the phone LM and the insertion bonus, and entering a pronunciation adds
its log-probability (lang/lexiconp.txt's, where there is one). With optional silence (as the
training graphs of phonerec.hmm.align have it), each pronunciation also has a twin that ends in a silence, and a
leading silence unit may open the path; silence adds nothing to the LM's history. With transition
probabilities, entering a word's twin adds log P(silence) and entering the word itself log P(no silence), the
leading silence log P(silence) and a word that opens the path without it log P(no silence) more: the choices of
the training graphs' optional silence blocks.

The search is vectorised over chain positions with a dense (units x units) transition matrix and loops over frames
only. Beam: after each frame, positions scoring below the frame's best - beam are dropped. If no position that can
end the path survives the last frame, the utterance is decoded again with no beam (and a warning is logged), so a
narrow beam still gives a complete sequence.
"""

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from phonerec.decoding.lm import BOS, EOS, NgramLM
from phonerec.hmm.align import Topology

NEG_INF = float("-inf")
log = logging.getLogger(__name__)


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


@dataclass
class LoopGraph:
    """A loop over units; see the module docstring. chains[u] lists unit u's HMM states (score columns) in order;
    start (U,), trans (U, U) [from u, to v] and end (U,) are float64 log-weights."""

    chains: list[list[int]]
    start: torch.Tensor
    trans: torch.Tensor
    end: torch.Tensor
    # (P,) float64 log-weights of each chain position's self-loop and forward arc, the positions being the chains'
    # states in order; None: 0
    loop: torch.Tensor | None = None
    forward: torch.Tensor | None = None


@dataclass
class LoopPath:
    units: list[int]  # the units of the path, one per instance
    score: float  # acoustic + graph score of the path (natural log)
    states: list[int]  # the HMM state of every frame


def _lm_weights(
    lm: NgramLM | None, names: list[str], lm_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """lm_weight * ln P of a bigram loop over `names`: start (K,), trans (K, K) [from, to], end (K,); all 0 for no
    LM. A name missing from the LM is scored as <unk> when the LM has it; otherwise the LM raises LMError."""
    if lm is None:
        zeros = torch.zeros(len(names), dtype=torch.float64)
        return zeros, torch.zeros(len(names), len(names), dtype=torch.float64), zeros.clone()
    if lm.order > 2:
        raise ValueError(f"the loop has bigram states; got an order-{lm.order} LM")
    start = torch.tensor([lm.logprob(q, [BOS]) for q in names], dtype=torch.float64)
    trans = torch.tensor([[lm.logprob(q, [p]) for q in names] for p in names], dtype=torch.float64)
    end = torch.tensor([lm.logprob(EOS, [p]) for p in names], dtype=torch.float64)
    if lm_weight == 0:  # no LM at all, even where a probability is 0 (0 * -inf would be nan)
        return torch.zeros_like(start), torch.zeros_like(trans), torch.zeros_like(end)
    return lm_weight * start, lm_weight * trans, lm_weight * end


def _state_arcs(chains: list[list[int]], transitions) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """LoopGraph.loop and .forward of these chains under a phonerec.hmm.transitions.Transitions (None: 0)."""
    if transitions is None:
        return None, None
    log_probs = transitions.log_probs()
    columns = torch.tensor([s for c in chains for s in c])
    return log_probs.loop.detach().double()[columns], log_probs.forward.detach().double()[columns]


def phone_loop(
    lm: NgramLM | None,
    id2phone: Mapping[int, str],
    topo: Topology,
    lm_weight: float = 1.0,
    insertion_bonus: float = 0.0,
    transitions=None,
) -> tuple[LoopGraph, list[int]]:
    """The phone loop of the module docstring, and the phone id of each unit; lm None: a free loop, every phone
    after every other at no cost (the Viterbi training's dev decode)."""
    phone_ids = list(range(1, topo.num_phones))
    missing = [i for i in phone_ids if i not in id2phone]
    if missing:
        raise ValueError(f"id2phone has no symbol for phone ids {missing}")
    start, trans, end = _lm_weights(lm, [id2phone[i] for i in phone_ids], lm_weight)
    chains = [topo.states(i) for i in phone_ids]
    loop, forward = _state_arcs(chains, transitions)
    return LoopGraph(chains, start + insertion_bonus, trans + insertion_bonus, end, loop, forward), phone_ids


def word_loop(
    lexicon: Mapping[str, list[list[str]]],
    phone2id: Mapping[str, int],
    topo: Topology,
    lm: NgramLM,
    lm_weight: float = 1.0,
    word_score: float = 0.0,
    optional_silence: bool = True,
    transitions=None,
    probabilities: Mapping[str, list[float]] | None = None,
) -> tuple[LoopGraph, list[str | None]]:
    """The word loop of the module docstring, and the word of each unit (None for the leading silence);
    `probabilities` (word -> one per pronunciation, max-normalised: lang/lexiconp.txt's) weigh entering each
    pronunciation by its log-probability, as the alignment graphs' branches."""
    chains, words, pron_weights = [], [], []
    for word, prons in lexicon.items():
        probs = (probabilities or {}).get(word, [1.0] * len(prons))
        for pron, prob in zip(prons, probs, strict=True):
            unknown = [p for p in pron if p not in phone2id]
            if unknown:
                raise ValueError(f"lexicon word '{word}': phones {unknown} are not in the phone table")
            chains.append([s for p in pron for s in topo.states(phone2id[p])])
            words.append(word)
            pron_weights.append(math.log(prob))
    start, trans, end = _lm_weights(lm, words, lm_weight)
    entering = torch.tensor(pron_weights, dtype=torch.float64) + word_score
    start, trans = start + entering, trans + entering
    if optional_silence:  # units: the words, the words followed by silence, the leading silence
        k, silence = len(words), topo.states(topo.silence_phone)
        chains = chains + [c + silence for c in chains] + [silence]
        full = torch.full((2 * k + 1, 2 * k + 1), NEG_INF, dtype=torch.float64)
        full[: 2 * k, : 2 * k] = trans.repeat(2, 2)
        full[2 * k, : 2 * k] = start.repeat(2)  # after the leading silence, a word starts the sentence
        trans = full
        start = torch.cat([start, start, torch.zeros(1, dtype=torch.float64)])
        end = torch.cat([end, end, torch.full((1,), NEG_INF, dtype=torch.float64)])
        words = words * 2 + [None]
        if transitions is not None:  # the optional silence's choices (module docstring)
            log_probs = transitions.log_probs()
            silence, no_silence = log_probs.silence.item(), log_probs.no_silence.item()
            choice = torch.tensor([no_silence] * k + [silence] * k + [silence], dtype=torch.float64)
            trans = trans + choice  # entering v takes v's choice
            start = start + choice + torch.tensor([no_silence] * (2 * k) + [0.0], dtype=torch.float64)
    return LoopGraph(chains, start, trans, end, *_state_arcs(chains, transitions)), words


def loop_search_batch(
    log_likelihoods: list[torch.Tensor], graph: LoopGraph, beam: float = math.inf, names: list[str] | None = None
) -> list[LoopPath]:
    """The best path through a loop graph of each utterance's (T, S) scaled log-likelihoods, several utterances at
    once (their frames in step: one pass over the longest); see the module docstring. `names` name them in errors
    (default: their index). Raises ValueError if T is shorter than every chain or every path scores -inf."""
    names = names or [str(i) for i in range(len(log_likelihoods))]
    shortest = min(len(c) for c in graph.chains)
    needed = max(max(c) for c in graph.chains) + 1
    scores = []
    for name, ll in zip(names, log_likelihoods, strict=True):
        if not isinstance(ll, torch.Tensor) or ll.dim() != 2:
            raise ValueError(
                f"utterance {name}: log_likelihoods must be a (T, S) tensor, got {getattr(ll, 'shape', None)}"
            )
        if ll.shape[0] < shortest:
            raise ValueError(
                f"utterance {name}: {ll.shape[0]} frames are fewer than the {shortest} states of the "
                "shortest unit: no path"
            )
        if ll.shape[1] < needed:
            raise ValueError(
                f"utterance {name}: log_likelihoods has {ll.shape[1]} states per frame, the graph uses {needed}"
            )
        scores.append(ll.detach().to(device="cpu", dtype=torch.float64))
    if not beam >= 0:  # also refuses nan
        raise ValueError(f"beam must be >= 0, got {beam}")
    paths = _viterbi(scores, graph, beam)
    failed = [i for i, path in enumerate(paths) if path is None]
    if failed and not math.isinf(beam):
        log.warning(
            "no path survived beam %g to the last frame of %s; decoding again with no beam",
            beam,
            ", ".join(names[i] for i in failed),
        )
        for i, path in zip(failed, _viterbi([scores[i] for i in failed], graph, math.inf), strict=True):
            paths[i] = path
    for name, path in zip(names, paths, strict=True):
        if path is None:
            raise ValueError(f"utterance {name}: every path through the loop scores -inf")
    return paths


def path_labels(path: LoopPath, labels: list) -> list:
    """What a path's units stand for, in order, given the label of each unit (`phone_loop`'s phone ids,
    `word_loop`'s words); units labelled None (the word loop's leading silence) are left out."""
    return [labels[u] for u in path.units if labels[u] is not None]


def _viterbi(scores: list[torch.Tensor], graph: LoopGraph, beam: float) -> list[LoopPath | None]:
    """Viterbi over the positions of the loop's chains, for a batch of utterances' (T, S) float64 scores; None for
    an utterance where pruning left no position that can end at its last frame."""
    lengths = torch.tensor([len(c) for c in graph.chains])
    last = lengths.cumsum(0) - 1  # position of each unit's last state
    first = last - lengths + 1
    columns = torch.tensor([s for c in graph.chains for s in c])  # the score column of each position
    num_positions, batch = len(columns), len(scores)
    is_first = torch.zeros(num_positions, dtype=torch.bool)
    is_first[first] = True
    frames = torch.tensor([len(s) for s in scores])
    padded = torch.zeros(batch, int(frames.max()), num_positions, dtype=torch.float64)
    for b, s in enumerate(scores):
        padded[b, : len(s)] = s[:, columns]

    zeros = torch.zeros(num_positions, dtype=torch.float64)
    loop = zeros if graph.loop is None else graph.loop
    forward = zeros if graph.forward is None else graph.forward
    delta = torch.full((batch, num_positions), NEG_INF, dtype=torch.float64)
    delta[:, first] = graph.start + padded[:, 0, first]
    delta = _prune(delta, beam)
    backptr = torch.zeros(padded.shape[1], batch, num_positions, dtype=torch.long)  # predecessor position
    entered = torch.zeros(padded.shape[1], batch, num_positions, dtype=torch.bool)  # a unit instance begins here
    entered[0] = is_first
    positions = torch.arange(num_positions).expand(batch, -1)
    neg = torch.full((batch, 1), NEG_INF, dtype=torch.float64)
    for t in range(1, padded.shape[1]):
        stay = delta + loop
        leaving = delta + forward
        advance = torch.cat([neg, leaving[:, :-1]], dim=1).masked_fill(is_first, NEG_INF)
        into, from_unit = (leaving[:, last].unsqueeze(2) + graph.trans).max(dim=1)  # best entry into each unit
        enter = torch.full((batch, num_positions), NEG_INF, dtype=torch.float64)
        enter[:, first] = into
        best, choice = torch.stack([stay, advance, enter]).max(dim=0)
        enter_from = torch.zeros(batch, num_positions, dtype=torch.long)
        enter_from[:, first] = last[from_unit]
        backptr[t] = torch.where(choice == 0, positions, torch.where(choice == 1, positions - 1, enter_from))
        entered[t] = (choice == 2) & torch.isfinite(best)
        running = (t < frames).unsqueeze(1)  # an utterance that has ended keeps its last frame's scores
        delta = torch.where(running, _prune(best + padded[:, t], beam), delta)

    final_scores, final_units = (delta[:, last] + forward[last] + graph.end).max(dim=1)
    unit_of = torch.repeat_interleave(torch.arange(len(graph.chains)), lengths).tolist()
    columns, last = columns.tolist(), last.tolist()
    backptr, entered = backptr.numpy(), entered.numpy()
    paths = []
    for b in range(batch):
        if not torch.isfinite(final_scores[b]):
            paths.append(None)
            continue
        position = last[int(final_units[b])]
        states, units = [0] * int(frames[b]), []
        for t in range(int(frames[b]) - 1, -1, -1):
            states[t] = columns[position]
            if entered[t, b, position]:
                units.append(unit_of[position])
            position = int(backptr[t, b, position])
        units.reverse()
        paths.append(LoopPath(units=units, score=float(final_scores[b]), states=states))
    return paths


def _prune(delta: torch.Tensor, beam: float) -> torch.Tensor:
    """Drop the positions of each utterance (row) scoring below its best - beam."""
    if math.isinf(beam):
        return delta
    return delta.masked_fill(delta < delta.max(dim=1, keepdim=True).values - beam, NEG_INF)
