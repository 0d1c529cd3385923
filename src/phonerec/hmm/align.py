"""HMM topology, alignment graphs, flat start and batched Viterbi forced alignment.

Each phone is a left-to-right chain of `states_per_phone` states (self-loop and next; no transition
probabilities: the network's scores alone decide, as in hybrid NN training). Phone ids are those of
lang/phones.txt, where id 0 is the CTC blank, so HMM state s belongs to phone s // N + 1 and phone p owns
states (p - 1) * N ... (p - 1) * N + N - 1.

An utterance's graph is the chain of its phones' states with an optional silence block at both edges and
between words: a path may pass through the block or jump over it. Viterbi runs over a padded batch of graphs
at once, vectorised over utterances and graph nodes, looping over frames only.
"""

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")
STAY, NEXT, SKIP = 0, 1, 2  # back-pointer codes


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


def pad_graphs(graphs: list[Graph], n: int, device) -> tuple[torch.Tensor, ...]:
    """Padded node tensors: output index, may-skip-into flag, start and end masks, node counts."""
    batch, width = len(graphs), max(len(g.states) for g in graphs)
    states = torch.zeros(batch, width, dtype=torch.long)
    skip_in = torch.zeros(batch, width, dtype=torch.bool)
    start = torch.zeros(batch, width, dtype=torch.bool)
    end = torch.zeros(batch, width, dtype=torch.bool)
    valid = torch.zeros(batch, width, dtype=torch.bool)
    for b, g in enumerate(graphs):
        size = len(g.states)
        states[b, :size] = torch.tensor(g.states)
        valid[b, :size] = True
        start[b, 0] = True
        end[b, size - 1] = True
        for j in range(size):
            # Node j may be entered from j - n - 1 when nodes j-n .. j-1 are one optional block.
            block = g.optional[j - n : j] if j >= n + 1 else []
            if len(block) == n and all(block) and not g.optional[j - n - 1]:
                skip_in[b, j] = g.skip_between_equal or g.states[j] != g.states[j - n - 1]
        if size > n and all(g.optional[:n]):
            start[b, n] = True  # begin after the leading silence
        if size > n and all(g.optional[size - n :]):
            end[b, size - n - 1] = True  # stop before the trailing silence
    return states.to(device), skip_in.to(device), start.to(device), end.to(device), valid.to(device)


def node_emissions(log_probs: torch.Tensor, states: torch.Tensor, valid: torch.Tensor, fill: float) -> torch.Tensor:
    """(B, T, W) score of each graph node at each frame: its state's column of log_probs; `fill` at padding."""
    batch, frames, _ = log_probs.shape
    emissions = torch.gather(log_probs, 2, states.unsqueeze(1).expand(batch, frames, states.shape[1]))
    return emissions.masked_fill(~valid.unsqueeze(1), fill)


def predecessors(score: torch.Tensor, skip_in: torch.Tensor, n: int, fill: float) -> torch.Tensor:
    """(3, B, W) scores of the arcs into each node from the previous frame's (B, W) node scores, in the order of
    the back-pointer codes: stay (j), next (j - 1), skip over an optional block of n nodes (j - n - 1)."""
    batch, width = score.shape
    pad = score.new_full((batch, n + 1), fill)
    advance = torch.cat([pad[:, :1], score[:, :-1]], dim=1)
    skip = torch.cat([pad, score[:, : max(width - n - 1, 0)]], dim=1)[:, :width]
    skip = skip.masked_fill(~skip_in, fill)
    return torch.stack([score, advance, skip])


def successors(score: torch.Tensor, skip_in: torch.Tensor, n: int, fill: float) -> torch.Tensor:
    """(3, B, W) the same arcs read backwards: for each node i, the next frame's (B, W) scores of the nodes it
    enters: itself (stay), i + 1 (next), i + n + 1 (skip, where that node may be entered so)."""
    batch, width = score.shape
    pad = score.new_full((batch, n + 1), fill)
    advance = torch.cat([score[:, 1:], pad[:, :1]], dim=1)
    skip = torch.cat([score.masked_fill(~skip_in, fill)[:, n + 1 :], pad], dim=1)[:, :width]
    return torch.stack([score, advance, skip])


def viterbi_align(
    log_probs: torch.Tensor, lengths: torch.Tensor, graphs: list[Graph], topo: Topology
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best path of each utterance through its graph.

    log_probs: (B, T, num_states) frame scores (log-posteriors, or scaled log-likelihoods).
    Returns (alignments (B, T) of HMM state ids, -1 past each length or where no path exists,
    log_likelihoods (B,) of the best paths, -inf where the utterance has fewer frames than its graph needs)."""
    n = topo.states_per_phone
    batch, frames, _ = log_probs.shape
    device = log_probs.device
    states, skip_in, start, end, valid = pad_graphs(graphs, n, device)
    width = states.shape[1]
    lengths = lengths.to(device)
    emissions = node_emissions(log_probs, states, valid, NEG_INF)

    score = emissions[:, 0].masked_fill(~start, NEG_INF)
    backptr = torch.zeros(batch, frames, width, dtype=torch.uint8, device=device)
    for t in range(1, frames):
        best, choice = predecessors(score, skip_in, n, NEG_INF).max(dim=0)
        active = (t < lengths).unsqueeze(1)
        score = torch.where(active, best + emissions[:, t], score)
        backptr[:, t] = choice.to(torch.uint8)

    final = score.masked_fill(~end, NEG_INF)
    loglik, node = final.max(dim=1)
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
    alignment = torch.gather(states, 1, path.clamp(min=0))
    found = torch.isfinite(loglik).unsqueeze(1)
    alignment = alignment.masked_fill((path < 0) | ~found, -1)
    return alignment, loglik


def align_utterances(
    scores: list[torch.Tensor],
    graphs: list[Graph],
    topo: Topology,
    log_priors: torch.Tensor | None = None,
    prior_scale: float = 1.0,
) -> list[tuple[torch.Tensor | None, float]]:
    """Viterbi alignment of several utterances at once, padded into one batch: each one's (T, S) log-posteriors
    (divided by the state priors ^ prior_scale when log_priors is given: scaled likelihoods) through its graph.
    Returns (the HMM state of each frame, the path's log-likelihood) per utterance; (None, -inf) for one with
    fewer frames than its graph needs."""
    lengths = torch.tensor([len(s) for s in scores])
    padded = torch.nn.utils.rnn.pad_sequence(scores, batch_first=True)
    if log_priors is not None:
        padded = padded - prior_scale * log_priors
    alignment, loglik = viterbi_align(padded, lengths, graphs, topo)
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
