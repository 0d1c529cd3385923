"""HMM topology, alignment graphs, flat start and batched Viterbi forced alignment.

Each phone is a left-to-right chain of `states_per_phone` states, each with a self-loop and a forward arc. Phone
ids are those of lang/phones.txt, where id 0 is the CTC blank, so HMM state s belongs to phone s // N + 1 and
phone p owns states (p - 1) * N ... (p - 1) * N + N - 1.

An utterance's graph is the chain of its phones' states with an optional silence block at both edges and
between words: a path may pass through the block or jump over it. Viterbi runs over a padded batch of graphs
at once (`GraphBatch`), vectorised over utterances and graph nodes, looping over frames only.

Arc weights (`ArcWeights`, from `graph_weights`): with transition probabilities (phonerec.hmm.transitions), a
path through node j of state s pays log P(loop | s) per self-loop, log P(forward | s) to leave s, log P(silence)
to enter an optional block and log P(no silence) to jump over it (or to start or end beside it); without them
every weight is 0 and the network's scores alone decide, as in hybrid NN training. A path ends by leaving its
last state, so it pays that state's forward weight too, as an HMM's exit.
"""

from dataclasses import dataclass
from itertools import chain
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
    """The arc weights of the module docstring, in `dtype`, differentiable in log_probs; None: every arc weighs 0."""
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


def node_emissions(log_probs: torch.Tensor, states: torch.Tensor, valid: torch.Tensor, fill: float) -> torch.Tensor:
    """(B, T, W) score of each graph node at each frame: its state's column of log_probs; `fill` at padding."""
    batch, frames, _ = log_probs.shape
    emissions = torch.gather(log_probs, 2, states.unsqueeze(1).expand(batch, frames, states.shape[1]))
    return emissions.masked_fill(~valid.unsqueeze(1), fill)


def predecessors(score: torch.Tensor, arcs: torch.Tensor, n: int, fill: float) -> torch.Tensor:
    """(3, B, W) scores of the arcs into each node from the previous frame's (B, W) node scores, in the order of
    the back-pointer codes: stay (j), next (j - 1), skip over an optional block of n nodes (j - n - 1); each plus
    its arc's weight (arcs: ArcWeights.arcs)."""
    batch, width = score.shape
    pad = score.new_full((batch, n + 1), fill)
    advance = torch.cat([pad[:, :1], score[:, :-1]], dim=1)
    skip = torch.cat([pad, score[:, : max(width - n - 1, 0)]], dim=1)[:, :width]
    return torch.stack([score, advance, skip]) + arcs


def successors(arriving: torch.Tensor, n: int, fill: float) -> torch.Tensor:
    """The same arcs read backwards: arriving[k] (B, W) is the next frame's score of each node plus the weight of
    its arc of kind k; returns (3, B, W), for each node i, that of the node it enters by each kind: itself (stay),
    i + 1 (next), i + n + 1 (skip)."""
    stay, advance, skip = arriving
    batch, width = stay.shape
    pad = stay.new_full((batch, n + 1), fill)
    advance = torch.cat([advance[:, 1:], pad[:, :1]], dim=1)
    skip = torch.cat([skip[:, n + 1 :], pad], dim=1)[:, :width]
    return torch.stack([stay, advance, skip])


def best_paths(
    emissions: torch.Tensor, lengths: torch.Tensor, weights: ArcWeights, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Viterbi over a padded batch: emissions (B, T, W) of each node (node_emissions, -inf at padding), the arc
    weights (-inf where there is no arc). Returns (the node of each frame (B, T), -1 past each length or where no
    path exists; the best paths' scores (B,), -inf where there is no path)."""
    batch, frames, width = emissions.shape
    device = emissions.device
    score = emissions[:, 0] + weights.start
    backptr = torch.zeros(batch, frames, width, dtype=torch.uint8, device=device)
    for t in range(1, frames):
        best, choice = predecessors(score, weights.arcs, n, NEG_INF).max(dim=0)
        active = (t < lengths).unsqueeze(1)
        score = torch.where(active, best + emissions[:, t], score)
        backptr[:, t] = choice.to(torch.uint8)

    loglik, node = (score + weights.end).max(dim=1)
    # Trace back from each utterance's last frame; frames past a length keep the node fixed.
    offsets = torch.tensor([0, 1, n + 1], device=device)
    path = torch.full((batch, frames), -1, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)
    for t in range(frames - 1, -1, -1):
        active = t < lengths
        path[:, t] = torch.where(active, node, path[:, t])
        if t:
            step = offsets[backptr[rows, t, node].long()]
            node = torch.where(active, node - step, node)
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
    batch = pad_graphs(graphs, topo.states_per_phone, log_probs.device)
    log_transitions = None if transitions is None else transitions.log_probs()
    lengths = lengths.to(log_probs.device)
    with torch.no_grad():
        weights = graph_weights(batch, log_transitions, NEG_INF, log_probs.dtype)
        if log_probs.device.type == "cpu":
            from phonerec.hmm import kernels  # numba compiles on first use: only where it runs

            nodes, loglik = kernels.best_paths(log_probs, batch.states, lengths, weights, batch.n, batch.sizes)
        else:
            emissions = node_emissions(log_probs, batch.states, batch.valid, NEG_INF)
            nodes, loglik = best_paths(emissions, lengths, weights, batch.n)
    return nodes, loglik, batch


def path_arc_counts(nodes: torch.Tensor, lengths: torch.Tensor, batch: GraphBatch) -> ArcWeights:
    """How often each arc of a GraphBatch is taken by the node paths of `best_paths` (0 for an utterance without
    a path), in the shape of its ArcWeights: the hard version of the occupations that forward-backward gives."""
    shape, device = batch.states.shape, nodes.device
    counts = ArcWeights(
        torch.zeros((3, *shape), device=device), torch.zeros(shape, device=device), torch.zeros(shape, device=device)
    )
    found = nodes[:, 0] >= 0
    nodes, lengths = nodes[found], lengths.to(nodes.device)[found]
    rows = found.nonzero().squeeze(1)
    if not len(rows):
        return counts
    counts.start[rows, nodes[:, 0]] = 1.0
    counts.end[rows, nodes[torch.arange(len(rows), device=device), lengths - 1]] = 1.0
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
