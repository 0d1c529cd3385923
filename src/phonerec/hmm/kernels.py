"""The frame loops of Viterbi and forward-backward over a padded batch of graphs, compiled by numba for the CPU.

They compute what the pure-torch recursions of phonerec.hmm.align.best_paths and phonerec.hmm.fullsum
.forward_backward compute (those stay as the references the tests hold these to, and as the path on a GPU),
from the same inputs: the arc weights (3, B, W) into each node (stay, next, skip over n nodes), start and end
weights (B, W), log 0 where there is no arc, and the node emissions (B, T, W), which Viterbi reads in place from
the frame scores (B, T, S) and each node's state. Torch's versions step all utterances and nodes
at once, a dozen tensor operations and allocations per frame; here each utterance is one pass over its own frames
and nodes, with one-byte back-pointers, utterances spread over numba's threads (as many as torch's:
`torch.get_num_threads()`). The forward-backward stays in log space, as torch's does.
"""

import math

import numba
import numpy as np
import torch

STAY, NEXT, SKIP = 0, 1, 2
# numba's own thread pool, not OpenMP's: an OpenMP worker spins between parallel regions, and on 2 cores shared
# with torch that made a training epoch 10 times slower (FSDD connected digits: 237 s against 23 s).
numba.config.THREADING_LAYER = "workqueue"


@numba.njit(cache=True, parallel=True)
def _viterbi(log_probs, states, arcs, start, end, lengths, sizes, n):
    """Node j's score at frame t is log_probs[b, t, states[b, j]], read in place (no (B, T, W) copy)."""
    batch, frames, _ = log_probs.shape
    nodes = np.full((batch, frames), -1, dtype=np.int64)
    scores = np.full(batch, -np.inf, dtype=log_probs.dtype)
    for b in numba.prange(batch):
        length, size = lengths[b], sizes[b]
        column = states[b]
        backptr = np.zeros((length, size), dtype=np.int8)
        prev = np.empty(size, dtype=log_probs.dtype)
        cur = np.empty(size, dtype=log_probs.dtype)
        for j in range(size):
            prev[j] = log_probs[b, 0, column[j]] + start[b, j]
        for t in range(1, length):
            for j in range(size):
                best, code = prev[j] + arcs[STAY, b, j], STAY
                if j >= 1:
                    score = prev[j - 1] + arcs[NEXT, b, j]
                    if score > best:
                        best, code = score, NEXT
                if j >= n + 1:
                    score = prev[j - n - 1] + arcs[SKIP, b, j]
                    if score > best:
                        best, code = score, SKIP
                cur[j] = best + log_probs[b, t, column[j]]
                backptr[t, j] = code
            prev, cur = cur, prev
        node, best = -1, -np.inf
        for j in range(size):
            score = prev[j] + end[b, j]
            if score > best:
                node, best = j, score
        scores[b] = best
        if node < 0 or best == -np.inf:
            continue
        for t in range(length - 1, -1, -1):
            nodes[b, t] = node
            code = backptr[t, node]
            node -= 0 if code == STAY else (1 if code == NEXT else n + 1)
    return nodes, scores


@numba.njit(cache=True, inline="always")
def _logaddexp(a, b):
    """log(exp(a) + exp(b)), one exp and one log1p; a term at -inf (or the floor) adds nothing."""
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a))


@numba.njit(cache=True, parallel=True)
def _forward_backward(emissions, arcs, start, end, lengths, sizes, n, floor, no_path, want_counts):
    """The log-space recursions of phonerec.hmm.fullsum, an arc left out of each sum where its weight is the floor
    (the jump over an optional block exists into few nodes). In log space, not scaled probabilities: with a trained
    model the nodes of one frame span more than float64's 700 nats, and per-frame scaling then loses the paths that
    matter (the TIMIT sample: log-likelihoods 0.5 off, occupations wrong)."""
    batch, frames, width = emissions.shape
    dtype = emissions.dtype
    logliks = np.full(batch, -np.inf, dtype=dtype)
    gamma = np.zeros((batch, frames, width), dtype=dtype)
    arc_counts = np.zeros((3, batch, width), dtype=dtype)
    start_counts = np.zeros((batch, width), dtype=dtype)
    end_counts = np.zeros((batch, width), dtype=dtype)
    for b in numba.prange(batch):
        length, size = lengths[b], sizes[b]
        alpha = np.empty((length, size), dtype=np.float64)
        for j in range(size):
            alpha[0, j] = max(emissions[b, 0, j] + start[b, j], floor)
        for t in range(1, length):
            for j in range(size):
                total = alpha[t - 1, j] + arcs[STAY, b, j]
                if j >= 1 and arcs[NEXT, b, j] > no_path:
                    total = _logaddexp(total, alpha[t - 1, j - 1] + arcs[NEXT, b, j])
                if j >= n + 1 and arcs[SKIP, b, j] > no_path:
                    total = _logaddexp(total, alpha[t - 1, j - n - 1] + arcs[SKIP, b, j])
                alpha[t, j] = max(total + emissions[b, t, j], floor)
        loglik = -np.inf
        for j in range(size):
            if end[b, j] > no_path:
                loglik = _logaddexp(loglik, alpha[length - 1, j] + end[b, j])
        if not loglik > no_path:
            continue
        logliks[b] = loglik

        beta = np.empty(size, dtype=np.float64)
        ahead = np.empty(size, dtype=np.float64)  # beta_{t+1}(j) + y_{t+1}(j)
        for j in range(size):
            beta[j] = max(end[b, j], floor)
            gamma[b, length - 1, j] = math.exp(alpha[length - 1, j] + beta[j] - loglik)
            if want_counts and end[b, j] > no_path:
                end_counts[b, j] = gamma[b, length - 1, j]
        for t in range(length - 2, -1, -1):
            for j in range(size):
                ahead[j] = beta[j] + emissions[b, t + 1, j]
            for i in range(size):
                total = ahead[i] + arcs[STAY, b, i]
                if i + 1 < size and arcs[NEXT, b, i + 1] > no_path:
                    total = _logaddexp(total, ahead[i + 1] + arcs[NEXT, b, i + 1])
                if i + n + 1 < size and arcs[SKIP, b, i + n + 1] > no_path:
                    total = _logaddexp(total, ahead[i + n + 1] + arcs[SKIP, b, i + n + 1])
                beta[i] = max(total, floor)
                gamma[b, t, i] = math.exp(alpha[t, i] + beta[i] - loglik)
            if want_counts:  # the posterior of each arc into j between frames t and t + 1
                for j in range(size):
                    into = ahead[j] - loglik
                    arc_counts[STAY, b, j] += math.exp(alpha[t, j] + arcs[STAY, b, j] + into)
                    if j >= 1 and arcs[NEXT, b, j] > no_path:
                        arc_counts[NEXT, b, j] += math.exp(alpha[t, j - 1] + arcs[NEXT, b, j] + into)
                    if j >= n + 1 and arcs[SKIP, b, j] > no_path:
                        arc_counts[SKIP, b, j] += math.exp(alpha[t, j - n - 1] + arcs[SKIP, b, j] + into)
        if want_counts:
            for j in range(size):
                if start[b, j] > no_path:
                    start_counts[b, j] = gamma[b, 0, j]
    return logliks, gamma, arc_counts, start_counts, end_counts


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().numpy())


def _threads() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def best_paths(log_probs, states, lengths, weights, n: int, sizes: torch.Tensor):
    """phonerec.hmm.align.best_paths on the CPU, from the (B, T, S) frame scores and each node's state (B, W)
    instead of the node emissions; `sizes` (B,) the node count of each graph."""
    _threads()
    nodes, scores = _viterbi(
        _numpy(log_probs),
        _numpy(states),
        *(_numpy(t) for t in (weights.arcs, weights.start, weights.end)),
        _numpy(lengths.long()),
        _numpy(sizes.long()),
        n,
    )
    return torch.from_numpy(nodes), torch.from_numpy(scores)


def forward_backward(
    emissions, lengths, weights, n: int, sizes: torch.Tensor, floor: float, no_path: float, counts: bool
):
    """phonerec.hmm.fullsum.forward_backward on the CPU: (log-likelihoods, -inf where there is no path; node
    occupations; the arcs', starts' and ends' expected counts, zero unless `counts`)."""
    _threads()
    found = _forward_backward(
        *(_numpy(t) for t in (emissions, weights.arcs, weights.start, weights.end)),
        _numpy(lengths.long()),
        _numpy(sizes.long()),
        n,
        floor,
        no_path,
        counts,
    )
    return tuple(torch.from_numpy(a) for a in found)
