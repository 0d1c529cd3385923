"""HMM topology, alignment graphs, flat start and batched Viterbi forced alignment.

Each phone is a left-to-right chain of `states_per_phone` states, each with a self-loop and a forward arc. Phone
ids are those of lang/phones.txt, where id 0 is the CTC blank, so HMM state s belongs to phone s // N + 1 and
phone p owns states (p - 1) * N ... (p - 1) * N + N - 1.

An utterance's graph is the chain of its phones' states with an optional silence block at both edges and
between words: a path may pass through the block or jump over it. Where words have several pronunciations
(`build_word_graph`), each word occurrence is a choice of parallel chains, a `BranchedGraph` whose arcs are lists
of predecessors (phonerec.hmm.branched_kernels runs them; chains keep their own kernels). Viterbi runs over a
padded batch of graphs at once (`GraphBatch`), vectorised over utterances and graph nodes, looping over frames only.

Arc weights (`ArcWeights`, from `graph_weights`): with transition probabilities (phonerec.hmm.transitions), a
path through node j of state s pays log P(loop | s) per self-loop, log P(forward | s) to leave s, log P(silence)
to enter an optional block and log P(no silence) to jump over it (or to start or end beside it); without them
every weight is 0 and the network's scores alone decide, as in hybrid NN training. A path ends by leaving its
last state, so it pays that state's forward weight too, as an HMM's exit.
"""

import math
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import NamedTuple

import numpy as np
import torch

NEG_INF = float("-inf")
STAY, NEXT, SKIP = 0, 1, 2  # arc kinds into a node, and back-pointer codes


@dataclass(frozen=True)
class Topology:
    num_phones: int  # entries of phones.txt, the blank included
    states_per_phone: int = 1
    silence_phone: int = 1

    @property
    def num_states(self) -> int:
        return (self.num_phones - 1) * self.states_per_phone

    def states(self, phone: int) -> list[int]:
        if not 1 <= phone < self.num_phones:
            raise ValueError(f"phone id {phone} has no HMM states (blank or out of range)")
        first = (phone - 1) * self.states_per_phone
        return list(range(first, first + self.states_per_phone))

    def state_to_phone(self) -> list[int]:
        return [s // self.states_per_phone + 1 for s in range(self.num_states)]


@dataclass
class Graph:
    """A left-to-right chain of HMM states; `optional[j]` marks nodes of a skippable silence block. A jump over an
    optional block joins the nodes either side of it; `skip_between_equal` False forbids that where both carry the
    same state (CTC's topology, where two equal labels would merge without the blank between them)."""

    states: list[int]
    optional: list[bool]
    skip_between_equal: bool = True


def build_graph(
    phones: list[int], topo: Topology, word_ends: list[int] | None = None, optional_silence: bool = True
) -> Graph:
    """The graph of a phone sequence; `word_ends` are indices into `phones` after which a word ends. With
    optional_silence, a skippable silence goes at both edges and after each word end; without, the graph is
    the phone sequence alone (for transcripts that hold their silences, as TIMIT's do)."""
    if not phones:
        raise ValueError("empty phone sequence")
    if not optional_silence:
        states = [s for p in phones for s in topo.states(p)]
        return Graph(states, [False] * len(states))
    silence = topo.states(topo.silence_phone)
    boundaries = set(word_ends or []) - {len(phones) - 1}
    states, optional = list(silence), [True] * len(silence)
    for i, phone in enumerate(phones):
        states += topo.states(phone)
        optional += [False] * topo.states_per_phone
        if i in boundaries:
            states += silence
            optional += [True] * len(silence)
    states += silence
    optional += [True] * len(silence)
    return Graph(states, optional)


# The silence term an arc of a BranchedGraph pays: none, taking an optional silence, or jumping over one (the
# transitions' P(silence) and P(no silence), as a chain's block entries and jumps pay them).
NO_TERM, SILENCE_TERM, NO_SILENCE_TERM = 0, 1, 2


@dataclass
class BranchedGraph:
    """An alignment graph whose words may have several pronunciations: each word occurrence is a choice of
    parallel chains of HMM states between the same two points, each phone `n` consecutive nodes (as in a chain).
    Every node has a self-loop; `arcs` are the others, each (from, to, silence term, extra log-weight) with
    from < to (the nodes are in topological order); `starts` and `ends` are (node, silence term, extra
    log-weight). An arc pays the forward weight of the state it leaves, its silence term and its extra weight (a
    pronunciation's or silence's probability from the lexicon); a start pays its term and extra, an end also the
    forward weight of its node's state. `word[j]` and `variant[j]` name the word occurrence and pronunciation a
    node belongs to; a silence node has variant -1 and the word it follows (-1: the leading silence)."""

    states: list[int]
    optional: list[bool]
    arcs: list[tuple[int, int, int, float]]
    starts: list[tuple[int, int, float]]
    ends: list[tuple[int, int, float]]
    word: list[int]
    variant: list[int]


@dataclass(frozen=True)
class Pronunciation:
    """One pronunciation of a word occurrence, with its log-probability (0: the word's likeliest, as Kaldi's
    max-normalised lexiconp.txt has it) and, as Kaldi's lexiconp_silprob.txt and MFA's dictionary columns give
    them, the probability of a silence after it (None: the transitions' one P(silence), hmm.silence_prob) and the
    factors that correct its probability after a silence and after none."""

    phones: tuple[int, ...]
    log_prob: float = 0.0
    silence_after: float | None = None
    silence_before: float = 1.0
    no_silence_before: float = 1.0

    def plain(self) -> bool:
        """Probability 1 and no silence probabilities of its own: a chain can carry it."""
        return (
            self.log_prob == 0.0 and self.silence_after is None and self.silence_before == self.no_silence_before == 1
        )


def build_word_graph(
    words: list[list[Pronunciation]], topo: Topology, optional_silence: bool = True, branched: bool = False
) -> "Graph | BranchedGraph":
    """The graph of a word sequence, each word a list of its pronunciations: build_graph's chain where every word
    has one pronunciation, plain (so the chain kernels run, unchanged), otherwise a BranchedGraph of the same paths
    with a branch per pronunciation, each entered with its log-probability; optional silence as build_graph places
    it (at both edges and between words). A pronunciation's silence probabilities weigh the silence after it as
    Kaldi's lexicon FST with silence probabilities does (utils/lang/make_lexicon_fst_silprob.py): the block after
    it taken with P(silence after), jumped over with 1 - that, and the next word entered with its correction for a
    silence before it or for none; the utterance's edges keep the transitions' P(silence). `branched`: a
    BranchedGraph even where a chain would do (its nodes tell which silences a path took: silences_taken)."""
    if not words or any(not w for w in words) or any(not p.phones for w in words for p in w):
        raise ValueError("a word sequence of at least one word, each with non-empty pronunciations, is needed")
    if not branched and all(len(w) == 1 and w[0].plain() for w in words):
        phones = [p for w in words for p in w[0].phones]
        word_ends = list(accumulate(len(w[0].phones) for w in words))
        return build_graph(phones, topo, [e - 1 for e in word_ends], optional_silence)
    silence = topo.states(topo.silence_phone)
    graph = BranchedGraph([], [], [], [], [], [], [])

    def add_nodes(states: list[int], optional: bool, word: int, variant: int) -> tuple[int, int]:
        first = len(graph.states)
        graph.states += states
        graph.optional += [optional] * len(states)
        graph.word += [word] * len(states)
        graph.variant += [variant] * len(states)
        for j in range(first + 1, len(graph.states)):
            graph.arcs.append((j - 1, j, NO_TERM, 0.0))
        return first, len(graph.states) - 1

    # Where a path stands between words: (node, term, extra, silence) of each way out of the previous word (or the
    # graph's start: node -1), the silence block taken (silence True) or jumped over (False; None: no silence).
    if optional_silence:
        block = add_nodes(silence, True, -1, -1)
        graph.starts.append((block[0], SILENCE_TERM, 0.0))
        ways = [(-1, NO_SILENCE_TERM, 0.0, False), (block[1], NO_TERM, 0.0, True)]
    else:
        ways = [(-1, NO_TERM, 0.0, None)]
    for w, pronunciations in enumerate(words):
        lasts = []
        for v, pron in enumerate(pronunciations):
            first, last = add_nodes([s for p in pron.phones for s in topo.states(p)], False, w, v)
            for node, term, extra, after_silence in ways:
                factor = {True: pron.silence_before, False: pron.no_silence_before, None: 1.0}[after_silence]
                if factor <= 0:
                    continue
                weight = extra + pron.log_prob + math.log(factor)
                if node < 0:
                    graph.starts.append((first, term, weight))
                else:
                    graph.arcs.append((node, first, term, weight))
            lasts.append((last, pron.silence_after))
        if optional_silence:
            block = add_nodes(silence, True, w, -1)  # the silence after word w
            ways = [(block[1], NO_TERM, 0.0, True)]
            for last, p in lasts:  # the transitions' one P(silence), or the pronunciation's own
                if p is None:
                    graph.arcs.append((last, block[0], SILENCE_TERM, 0.0))
                    ways.insert(-1, (last, NO_SILENCE_TERM, 0.0, False))
                    continue
                if p > 0:
                    graph.arcs.append((last, block[0], NO_TERM, math.log(p)))
                if p < 1:
                    ways.insert(-1, (last, NO_TERM, math.log1p(-p), False))
        else:
            ways = [(last, NO_TERM, 0.0, None) for last, _ in lasts]
    graph.ends = [way[:3] for way in ways]  # after the last word, its final silence taken or jumped over
    return graph


def utterance_graph(
    phones: list[int],
    word_ends: list[int] | None,
    pronunciations: list[list[Pronunciation]] | None,
    topo: Topology,
    optional_silence: bool = True,
    branched: bool = False,
) -> "Graph | BranchedGraph":
    """An utterance's alignment graph: build_word_graph's of its words' pronunciations where it has them
    (hmm.pronunciations=variants), otherwise build_graph's chain of its phones."""
    if pronunciations is not None:
        return build_word_graph(pronunciations, topo, optional_silence, branched)
    return build_graph(phones, topo, word_ends, optional_silence)


def chosen_pronunciations(graph: "Graph | BranchedGraph", nodes: list[int], words: int) -> list[int]:
    """The pronunciation (index among the word's) each word occurrence's node path took through a graph of
    build_word_graph; all 0 for a chain (every word had one)."""
    choice = [0] * words
    if isinstance(graph, BranchedGraph):
        for node in set(nodes):
            if graph.variant[node] >= 0:
                choice[graph.word[node]] = graph.variant[node]
    return choice


def silences_taken(graph: "BranchedGraph", nodes: list[int], words: int) -> list[bool]:
    """Whether a node path through a graph of build_word_graph took the optional silence at the start and after
    each word: words + 1 flags."""
    taken = [False] * (words + 1)
    for node in set(nodes):
        if graph.variant[node] < 0:
            taken[graph.word[node] + 1] = True
    return taken


def word_variants(
    words: list[str],
    lexicon,
    phone_ids,
    probabilities: dict[str, list[float]] | None,
    first: list[list[str]] | None = None,
    silence: dict | None = None,
) -> list[list[Pronunciation]]:
    """Each word's pronunciations (lexicon: word -> phone lists) as phone ids with their log-probabilities
    (`probabilities`: word -> one per pronunciation, max-normalised; None: 0) and silence probabilities (`silence`:
    (word, pronunciation) -> (P(silence after), correction after silence, after none); those it lacks have none);
    where `first` gives the pronunciation a transcript spells for each word, that one first, the others in the
    lexicon's order."""
    out = []
    for k, word in enumerate(words):
        probs = probabilities.get(word) if probabilities else None
        entries = [(pron, math.log(probs[i]) if probs else 0.0) for i, pron in enumerate(lexicon[word])]
        if first is not None:
            entries.sort(key=lambda entry: entry[0] != first[k])  # stable: the spelled one first
        prons = []
        for pron, log_prob in entries:
            found = (silence or {}).get((word, tuple(pron)))
            prons.append(Pronunciation(tuple(phone_ids[p] for p in pron), log_prob, *(found or ())))
        out.append(prons)
    return out


@dataclass
class GraphBatch:
    """A padded batch of B graphs of at most W nodes, as (B, W) tensors; `n` nodes make an optional block (the
    states per phone)."""

    states: torch.Tensor  # long: the HMM state (score column) of each node; 0 at padding
    valid: torch.Tensor  # a node, not padding
    skip_in: torch.Tensor  # may be entered from j - n - 1, jumping over an optional block
    block_entry: torch.Tensor  # the first node of an optional block: reaching it takes the silence
    start: torch.Tensor  # a path may start here
    end: torch.Tensor  # a path may end here
    beside_block: torch.Tensor  # a start or end node that a path reaches by leaving out an edge's optional block
    arcs_in: torch.Tensor  # (3, B, W): the stay, next and skip arc into each node exists
    sizes: torch.Tensor  # (B,) long: the nodes of each graph
    n: int


def pad_graphs(graphs: list[Graph], n: int, device) -> GraphBatch:
    """The graphs as one padded batch, their masks computed by one compiled pass over the nodes
    (phonerec.hmm.kernels.graph_masks: a batch of one graph took 0.05 ms as a few dozen numpy operations)."""
    from phonerec.hmm import kernels  # numba compiles on first use: only where it runs

    sizes = np.array([len(g.states) for g in graphs], dtype=np.int64)
    count = int(sizes.sum())
    states = np.fromiter(chain.from_iterable(g.states for g in graphs), dtype=np.int64, count=count)
    optional = np.fromiter(chain.from_iterable(g.optional for g in graphs), dtype=np.bool_, count=count)
    skip_between_equal = np.array([g.skip_between_equal for g in graphs], dtype=np.bool_)
    masks = kernels.graph_masks(states, optional, sizes, skip_between_equal, n)
    return GraphBatch(*(torch.from_numpy(x).to(device) for x in (*masks, sizes)), n=n)


@dataclass
class BranchedBatch:
    """A padded batch of B graphs (BranchedGraph, or chains as branched_form makes them) of at most W nodes with at
    most K arcs into a node besides its self-loop: each node's predecessors (K, B, W), -1 where there are fewer, in
    increasing order of `preds` (so that the kernels stop at the first -1)."""

    states: torch.Tensor  # (B, W) long, 0 at padding
    valid: torch.Tensor  # (B, W) a node, not padding
    preds: torch.Tensor  # (K, B, W) long: the node each arc into a node comes from; -1: no arc
    arc_term: torch.Tensor  # (K, B, W) long: its silence term (NO_TERM, SILENCE_TERM, NO_SILENCE_TERM)
    arc_extra: torch.Tensor  # (K, B, W) float64: its extra log-weight
    start: torch.Tensor  # (B, W) a path may start here
    start_term: torch.Tensor
    start_extra: torch.Tensor
    end: torch.Tensor  # (B, W) a path may end here
    end_term: torch.Tensor
    end_extra: torch.Tensor
    out_arcs: torch.Tensor  # (K_out, B, W) long: each arc out of a node but its self-loop, as (k + 1) * W + j, -1: none
    arcs_in: torch.Tensor  # (1 + K, B, W): the self-loop (valid) and each predecessor arc exists
    sizes: torch.Tensor  # (B,) long
    n: int  # nodes per phone, as in GraphBatch


def branched_form(graph: Graph, n: int) -> BranchedGraph:
    """A chain as the BranchedGraph of the same arcs and weights (the masks of kernels.graph_masks, the one
    definition of a chain's arcs): for batches that mix chains with branched graphs, and for tests holding the two
    kernels to each other."""
    from phonerec.hmm import kernels

    size = len(graph.states)
    masks = kernels.graph_masks(
        np.array(graph.states, dtype=np.int64),
        np.array(graph.optional, dtype=np.bool_),
        np.array([size], dtype=np.int64),
        np.array([graph.skip_between_equal]),
        n,
    )
    _, _, _, block_entry, start, end, beside, arcs_in = (m[..., 0, :] if m.ndim == 3 else m[0] for m in masks)
    arcs = []
    for j in range(size):
        if arcs_in[NEXT, j]:
            arcs.append((j - 1, j, SILENCE_TERM if block_entry[j] else NO_TERM, 0.0))
        if arcs_in[SKIP, j]:
            arcs.append((j - n - 1, j, NO_SILENCE_TERM, 0.0))
    starts = [
        (j, SILENCE_TERM if block_entry[j] else NO_SILENCE_TERM if beside[j] else NO_TERM, 0.0)
        for j in np.flatnonzero(start)
    ]
    ends = [(j, NO_SILENCE_TERM if beside[j] else NO_TERM, 0.0) for j in np.flatnonzero(end)]
    word = [-1] * size
    return BranchedGraph(list(graph.states), list(graph.optional), arcs, starts, ends, word, list(word))


def pad_branched(graphs: list["Graph | BranchedGraph"], n: int, device) -> BranchedBatch:
    """Graphs as one padded BranchedBatch, chains among them in their branched form."""
    graphs = [g if isinstance(g, BranchedGraph) else branched_form(g, n) for g in graphs]
    batch, width = len(graphs), max(len(g.states) for g in graphs)
    preds_of = [[[] for _ in g.states] for g in graphs]
    outs_of = [[0] * len(g.states) for g in graphs]
    for b, g in enumerate(graphs):
        for arc in sorted(g.arcs):
            if not 0 <= arc[0] < arc[1] < len(g.states):
                raise ValueError(f"arc {arc[:2]} is not between two nodes in topological order")
            preds_of[b][arc[1]].append(arc)
            outs_of[b][arc[0]] += 1
    fan_in = max(1, max(len(p) for ps in preds_of for p in ps))
    fan_out = max(1, max(c for cs in outs_of for c in cs))
    if fan_in > 254:  # the kernels' back-pointers are one byte: the self-loop and up to 254 predecessors
        raise ValueError(f"a node with {fan_in} arcs into it: at most 254 (pronunciations of a word, with silence)")
    states = np.zeros((batch, width), dtype=np.int64)
    valid = np.zeros((batch, width), dtype=np.bool_)
    preds = np.full((fan_in, batch, width), -1, dtype=np.int64)
    arc_term = np.zeros((fan_in, batch, width), dtype=np.int64)
    arc_extra = np.zeros((fan_in, batch, width))
    out_arcs = np.full((fan_out, batch, width), -1, dtype=np.int64)
    edge = {
        name: (
            np.zeros((batch, width), dtype=np.bool_),
            np.zeros((batch, width), dtype=np.int64),
            np.zeros((batch, width)),
        )
        for name in ("start", "end")
    }
    for b, g in enumerate(graphs):
        size = len(g.states)
        states[b, :size], valid[b, :size] = g.states, True
        filled = [0] * size
        for j, arcs in enumerate(preds_of[b]):
            for k, (i, _, term, extra) in enumerate(arcs):
                preds[k, b, j], arc_term[k, b, j], arc_extra[k, b, j] = i, term, extra
                out_arcs[filled[i], b, i] = (k + 1) * width + j
                filled[i] += 1
        for name, items in (("start", g.starts), ("end", g.ends)):
            mask, term, extra = edge[name]
            for j, t, x in items:
                mask[b, j], term[b, j], extra[b, j] = True, t, x
    arcs_in = np.concatenate([valid[None], preds >= 0])
    tensors = [states, valid, preds, arc_term, arc_extra, *edge["start"], *edge["end"], out_arcs, arcs_in]
    sizes = torch.tensor([len(g.states) for g in graphs])
    return BranchedBatch(*(torch.from_numpy(x).to(device) for x in tensors), sizes=sizes.to(device), n=n)


def pad_any(graphs: list["Graph | BranchedGraph"], n: int, device) -> "GraphBatch | BranchedBatch":
    """pad_graphs for chains alone (their own kernels), pad_branched where any graph branches."""
    if any(isinstance(g, BranchedGraph) for g in graphs):
        return pad_branched(graphs, n, device)
    return pad_graphs(graphs, n, device)


class TransitionLogProbs(NamedTuple):
    """The log-probabilities a graph's arcs are weighted with (phonerec.hmm.transitions.Transitions)."""

    loop: torch.Tensor  # (S,) each state's self-loop
    forward: torch.Tensor  # (S,) each state's forward arc (to the next state, or out of the phone)
    silence: torch.Tensor  # () taking an optional silence block
    no_silence: torch.Tensor  # () jumping over it


@dataclass
class ArcWeights:
    """The log-weights of a GraphBatch's arcs, `fill` (log 0) where there is no arc."""

    arcs: torch.Tensor  # (3, B, W): the stay, next and skip arc into each node
    start: torch.Tensor  # (B, W): starting in each node
    end: torch.Tensor  # (B, W): ending in each node


def graph_weights(
    batch: GraphBatch, log_probs: TransitionLogProbs | None, fill: float, dtype=torch.float32
) -> ArcWeights:
    """The arc weights of the module docstring, in `dtype`, differentiable in log_probs; None: every arc weighs 0
    (but a BranchedBatch's extra weights). A BranchedBatch's arcs are (1 + K, B, W): the self-loop, then its
    predecessor arcs."""
    if isinstance(batch, BranchedBatch):
        return _branched_weights(batch, log_probs, fill, dtype)
    n = batch.n
    if log_probs is None:
        zeros = torch.zeros(batch.states.shape, dtype=dtype, device=batch.states.device)
        arcs, start, end = zeros.expand(batch.arcs_in.shape), zeros, zeros
    else:
        # The transitions may stay on the CPU while the graphs are on a GPU: autograd follows the copy.
        log_probs = TransitionLogProbs(*(p.to(dtype=dtype, device=batch.states.device) for p in log_probs))
        loop, forward = log_probs.loop[batch.states], log_probs.forward[batch.states]
        zero = forward.new_zeros(())
        # The arc into j leaves the node before it: j - 1 (next) or j - n - 1 (skip).
        leave_previous = torch.cat([forward[:, :1], forward[:, :-1]], dim=1)
        leave_before_block = torch.cat([forward[:, : n + 1], forward], dim=1)[:, : forward.shape[1]]
        enter = torch.where(batch.block_entry, log_probs.silence, zero)
        arcs = torch.stack([loop, leave_previous + enter, leave_before_block + log_probs.no_silence])
        beside = torch.where(batch.beside_block, log_probs.no_silence, zero)
        start = torch.where(batch.block_entry, log_probs.silence, zero) + beside
        end = forward + beside
    return ArcWeights(
        arcs.masked_fill(~batch.arcs_in, fill),
        start.masked_fill(~batch.start, fill),
        end.masked_fill(~batch.end, fill),
    )


def _branched_weights(batch: BranchedBatch, log_probs: TransitionLogProbs | None, fill: float, dtype) -> ArcWeights:
    """graph_weights of a BranchedBatch: each arc the forward weight of the state it leaves, its silence term and
    its extra weight (BranchedGraph)."""
    device = batch.states.device
    extra = batch.arc_extra.to(dtype)
    if log_probs is None:
        loop = torch.zeros(batch.states.shape, dtype=dtype, device=device)
        arcs = torch.cat([loop[None], extra])
        start, end = batch.start_extra.to(dtype), batch.end_extra.to(dtype)
    else:
        log_probs = TransitionLogProbs(*(p.to(dtype=dtype, device=device) for p in log_probs))
        loop, forward = log_probs.loop[batch.states], log_probs.forward[batch.states]
        terms = torch.stack([log_probs.silence.new_zeros(()), log_probs.silence, log_probs.no_silence])
        leave = torch.stack([forward.gather(1, p.clamp(min=0)) for p in batch.preds])
        arcs = torch.cat([loop[None], leave + terms[batch.arc_term] + extra])
        start = terms[batch.start_term] + batch.start_extra.to(dtype)
        end = forward + terms[batch.end_term] + batch.end_extra.to(dtype)
    return ArcWeights(
        arcs.masked_fill(~batch.arcs_in, fill), start.masked_fill(~batch.start, fill), end.masked_fill(~batch.end, fill)
    )


def node_emissions(log_probs: torch.Tensor, states: torch.Tensor, valid: torch.Tensor, fill: float) -> torch.Tensor:
    """(B, T, W) score of each graph node at each frame: its state's column of log_probs; `fill` at padding."""
    batch, frames, _ = log_probs.shape
    emissions = torch.gather(log_probs, 2, states.unsqueeze(1).expand(batch, frames, states.shape[1]))
    return emissions.masked_fill(~valid.unsqueeze(1), fill)


def predecessors(
    score: torch.Tensor, arcs: torch.Tensor, graphs: "GraphBatch | BranchedBatch", fill: float
) -> torch.Tensor:
    """(3, B, W) scores of the arcs into each node from the previous frame's (B, W) node scores, in the order of
    the back-pointer codes: stay (j), next (j - 1), skip over an optional block of n nodes (j - n - 1); each plus
    its arc's weight (arcs: ArcWeights.arcs). For a BranchedBatch (1 + K, B, W): the self-loop, then each
    predecessor arc."""
    if isinstance(graphs, BranchedBatch):
        came = torch.stack([score.gather(1, p.clamp(min=0)) for p in graphs.preds]).masked_fill(graphs.preds < 0, fill)
        return torch.cat([score[None], came]) + arcs
    n = graphs.n
    batch, width = score.shape
    pad = score.new_full((batch, n + 1), fill)
    advance = torch.cat([pad[:, :1], score[:, :-1]], dim=1)
    skip = torch.cat([pad, score[:, : max(width - n - 1, 0)]], dim=1)[:, :width]
    return torch.stack([score, advance, skip]) + arcs


def successors(arriving: torch.Tensor, graphs: "GraphBatch | BranchedBatch", fill: float) -> torch.Tensor:
    """The same arcs read backwards: arriving[k] (B, W) is the next frame's score of each node plus the weight of
    its arc of kind k; returns (3, B, W), for each node i, that of the node it enters by each kind: itself (stay),
    i + 1 (next), i + n + 1 (skip). For a BranchedBatch (1 + K_out, B, W): the self-loop, then each arc out."""
    if isinstance(graphs, BranchedBatch):
        kinds, batch, width = arriving.shape
        flat = arriving.permute(1, 0, 2).reshape(batch, kinds * width)
        out = graphs.out_arcs
        left = torch.stack([flat.gather(1, o.clamp(min=0)) for o in out]).masked_fill(out < 0, fill)
        return torch.cat([arriving[:1], left])
    n = graphs.n
    stay, advance, skip = arriving
    batch, width = stay.shape
    pad = stay.new_full((batch, n + 1), fill)
    advance = torch.cat([advance[:, 1:], pad[:, :1]], dim=1)
    skip = torch.cat([skip[:, n + 1 :], pad], dim=1)[:, :width]
    return torch.stack([stay, advance, skip])


def best_paths(
    emissions: torch.Tensor, lengths: torch.Tensor, weights: ArcWeights, graphs: "GraphBatch | BranchedBatch"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Viterbi over a padded batch: emissions (B, T, W) of each node (node_emissions, -inf at padding), the arc
    weights (-inf where there is no arc). Returns (the node of each frame (B, T), -1 past each length or where no
    path exists; the best paths' scores (B,), -inf where there is no path)."""
    batch, frames, width = emissions.shape
    device = emissions.device
    score = emissions[:, 0] + weights.start
    backptr = torch.zeros(batch, frames, width, dtype=torch.uint8, device=device)
    for t in range(1, frames):
        best, choice = predecessors(score, weights.arcs, graphs, NEG_INF).max(dim=0)
        active = (t < lengths).unsqueeze(1)
        score = torch.where(active, best + emissions[:, t], score)
        backptr[:, t] = choice.to(torch.uint8)

    loglik, node = (score + weights.end).max(dim=1)
    # Trace back from each utterance's last frame; frames past a length keep the node fixed.
    path = torch.full((batch, frames), -1, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)
    offsets = torch.tensor([0, 1, getattr(graphs, "n", 0) + 1], device=device)
    for t in range(frames - 1, -1, -1):
        active = t < lengths
        path[:, t] = torch.where(active, node, path[:, t])
        if t:
            code = backptr[rows, t, node].long()
            if isinstance(graphs, BranchedBatch):  # the predecessor the code names, or the node itself
                came = torch.where(code == 0, node, graphs.preds[(code - 1).clamp(min=0), rows, node])
            else:
                came = node - offsets[code]
            node = torch.where(active, came, node)
    return path.masked_fill(~torch.isfinite(loglik).unsqueeze(1), -1), loglik


def viterbi_align(
    log_probs: torch.Tensor, lengths: torch.Tensor, graphs: list[Graph], topo: Topology, transitions=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best path of each utterance through its graph.

    log_probs: (B, T, num_states) frame scores (log-posteriors, or scaled log-likelihoods); transitions: a
    phonerec.hmm.transitions.Transitions whose log-probabilities weight the arcs, or None (weights 0).
    Returns (alignments (B, T) of HMM state ids, -1 past each length or where no path exists,
    log_likelihoods (B,) of the best paths, -inf where the utterance has fewer frames than its graph needs)."""
    nodes, loglik, batch = _align_nodes(log_probs, lengths, graphs, topo, transitions)
    alignment = torch.gather(batch.states, 1, nodes.clamp(min=0))
    return alignment.masked_fill(nodes < 0, -1), loglik


def _align_nodes(log_probs, lengths, graphs, topo, transitions):
    """best_paths, by the compiled kernel on the CPU (phonerec.hmm.kernels) and by torch elsewhere."""
    batch = pad_any(graphs, topo.states_per_phone, log_probs.device)
    log_transitions = None if transitions is None else transitions.log_probs()
    lengths = lengths.to(log_probs.device)
    with torch.no_grad():
        weights = graph_weights(batch, log_transitions, NEG_INF, log_probs.dtype)
        if log_probs.device.type == "cpu":
            from phonerec.hmm import kernels  # numba compiles on first use: only where it runs

            nodes, loglik = kernels.best_paths(log_probs, batch, lengths, weights)
        else:
            emissions = node_emissions(log_probs, batch.states, batch.valid, NEG_INF)
            nodes, loglik = best_paths(emissions, lengths, weights, batch)
    return nodes, loglik, batch


def path_arc_counts(nodes: torch.Tensor, lengths: torch.Tensor, batch: "GraphBatch | BranchedBatch") -> ArcWeights:
    """How often each arc of a GraphBatch is taken by the node paths of `best_paths` (0 for an utterance without
    a path), in the shape of its ArcWeights: the hard version of the occupations that forward-backward gives."""
    shape, device = batch.states.shape, nodes.device
    counts = ArcWeights(
        torch.zeros(batch.arcs_in.shape, device=device),
        torch.zeros(shape, device=device),
        torch.zeros(shape, device=device),
    )
    found = nodes[:, 0] >= 0
    nodes, lengths = nodes[found], lengths.to(nodes.device)[found]
    rows = found.nonzero().squeeze(1)
    if not len(rows):
        return counts
    counts.start[rows, nodes[:, 0]] = 1.0
    counts.end[rows, nodes[torch.arange(len(rows), device=device), lengths - 1]] = 1.0
    if isinstance(batch, BranchedBatch):  # 0 for the self-loop, k + 1 for the predecessor arc k
        preds = batch.preds[:, rows[:, None], nodes[:, 1:]]  # (K, found, T - 1)
        kind = torch.where(nodes[:, 1:] == nodes[:, :-1], 0, (preds == nodes[None, :, :-1]).long().argmax(0) + 1)
    else:
        step = nodes[:, 1:] - nodes[:, :-1]
        kind = torch.where(step == 0, STAY, torch.where(step == 1, NEXT, SKIP))
    active = torch.arange(1, nodes.shape[1], device=nodes.device)[None, :] < lengths[:, None]
    utt = rows[:, None].expand_as(kind)
    counts.arcs.index_put_(
        (kind[active], utt[active], nodes[:, 1:][active]), torch.ones(int(active.sum()), device=device), accumulate=True
    )
    return counts


def align_utterances(
    scores: list[torch.Tensor],
    graphs: list[Graph],
    topo: Topology,
    log_priors: torch.Tensor | None = None,
    prior_scale: float = 1.0,
    transitions=None,
    counts=None,
    nodes: bool = False,
) -> list[tuple[torch.Tensor | None, float]]:
    """Viterbi alignment of several utterances at once, padded into one batch: each one's (T, S) log-posteriors
    (divided by the state priors ^ prior_scale when log_priors is given: scaled likelihoods) through its graph,
    its arcs weighted by `transitions` (or 0). Returns (the HMM state of each frame, the path's log-likelihood) per
    utterance, on the CPU; (None, -inf) for one with fewer frames than its graph needs. `counts`, a
    phonerec.hmm.transitions.TransitionCounts, gathers the transitions the paths take. With `nodes`, the graph
    node of each frame instead of its state (which tells two equal phones in a row apart)."""
    lengths = torch.tensor([len(s) for s in scores])
    padded = torch.nn.utils.rnn.pad_sequence(scores, batch_first=True)
    if log_priors is not None:
        padded = padded - prior_scale * log_priors.to(padded.device)
    path, loglik, batch = _align_nodes(padded, lengths, graphs, topo, transitions)
    if counts is not None:
        counts.add(batch, path_arc_counts(path, lengths, batch))
    alignment = (path if nodes else torch.gather(batch.states, 1, path.clamp(min=0))).cpu()
    loglik = loglik.cpu()
    return [
        (alignment[k, : lengths[k]].clone(), loglik[k].item()) if torch.isfinite(loglik[k]) else (None, NEG_INF)
        for k in range(len(scores))
    ]


def uniform_alignment(num_frames: int, phones: list[int], topo: Topology, edge_silence: bool = True) -> list[int]:
    """Flat start: the frames split evenly over the phones' states, with a silence at both edges when there
    are frames enough (otherwise the silence model would never be trained before the first re-alignment)."""
    states = [s for p in phones for s in topo.states(p)]
    silence = topo.states(topo.silence_phone)
    if edge_silence and num_frames >= len(states) + 2 * len(silence):
        states = silence + states + silence
    if num_frames < len(states):
        raise ValueError(f"{num_frames} frames are fewer than the {len(states)} states to align")
    return [states[t * len(states) // num_frames] for t in range(num_frames)]


def log_state_priors(counts: torch.Tensor, floor: float = 1e-5) -> torch.Tensor:
    """Log priors from state occupation counts; unseen states get `floor` so division stays finite."""
    priors = counts.double() / counts.sum().clamp(min=1)
    return priors.clamp(min=floor).log().float()


def soft_log_priors(log_probs: torch.Tensor, lengths: torch.Tensor, floor: float = 1e-5) -> torch.Tensor:
    """(S,) log of the mean posterior of each state over the frames of a padded (B, T, S) batch (the soft priors,
    as full-sum training divides by them), floored as log_state_priors floors."""
    in_length = (
        torch.arange(log_probs.shape[1], device=log_probs.device)[None, :] < lengths.to(log_probs.device)[:, None]
    )
    mean = log_probs.exp()[in_length].mean(0)
    return mean.clamp(min=floor).log()
