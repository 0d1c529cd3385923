"""The frame loops of Viterbi and forward-backward over a padded batch of graphs, compiled by numba for the CPU.

They compute what the pure-torch recursions of phonerec.hmm.align.best_paths and phonerec.hmm.fullsum
.forward_backward compute (those stay as the references the tests hold these to, and as the path on a GPU),
from the same inputs: node emissions (B, T, W), arc weights (3, B, W) into each node (stay, next, skip over n
nodes), start and end weights (B, W), log 0 where there is no arc. Torch's versions step all utterances and nodes
at once, a dozen tensor operations and allocations per frame; here each utterance is one pass over its own frames
and nodes, with one-byte back-pointers, utterances spread over numba's threads (as many as torch's:
`torch.get_num_threads()`).
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
def _viterbi(emissions, arcs, start, end, lengths, sizes, n):
    batch, frames, _ = emissions.shape
    nodes = np.full((batch, frames), -1, dtype=np.int64)
    scores = np.full(batch, -np.inf, dtype=emissions.dtype)
    for b in numba.prange(batch):
        length, size = lengths[b], sizes[b]
        backptr = np.zeros((length, size), dtype=np.int8)
        prev = np.empty(size, dtype=emissions.dtype)
        cur = np.empty(size, dtype=emissions.dtype)
        for j in range(size):
            prev[j] = emissions[b, 0, j] + start[b, j]
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
                cur[j] = best + emissions[b, t, j]
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


@numba.njit(cache=True, parallel=True)
def _forward_backward(emissions, arcs, start, end, lengths, sizes, n, want_counts):
    """Forward-backward in the probability domain with per-frame scaling (Rabiner's): each frame's emissions are
    exponentiated after subtracting the frame's best score, alpha_t is normalised to sum 1 and its scale kept in
    log, so one exp per node and frame replaces the log-space recursion's logsumexp over arcs. An utterance whose
    scaled alpha vanishes (no path, or every reachable node over 700 nats below the frame's best: float64's
    underflow) gets no log-likelihood here (NaN) and goes to the log-space kernel."""
    batch, frames, width = emissions.shape
    dtype = emissions.dtype
    logliks = np.full(batch, -np.inf, dtype=np.float64)
    gamma = np.zeros((batch, frames, width), dtype=dtype)
    arc_counts = np.zeros((3, batch, width), dtype=dtype)
    start_counts = np.zeros((batch, width), dtype=dtype)
    end_counts = np.zeros((batch, width), dtype=dtype)
    for b in numba.prange(batch):
        length, size = lengths[b], sizes[b]
        probs = np.empty((length, size))  # exp(y_t(j) - the frame's best)
        alpha = np.empty((length, size))
        scales = np.empty(length)  # the sum of each frame's alpha before normalising
        weights = np.empty((3, size))
        for k in range(3):
            for j in range(size):
                weights[k, j] = math.exp(arcs[k, b, j])
        log_scale = 0.0
        for t in range(length):
            top = -np.inf
            for j in range(size):
                top = max(top, emissions[b, t, j])
            for j in range(size):
                probs[t, j] = math.exp(emissions[b, t, j] - top)
            total = 0.0
            for j in range(size):
                if t == 0:
                    value = math.exp(start[b, j])
                else:
                    value = alpha[t - 1, j] * weights[STAY, j]
                    if j >= 1:
                        value += alpha[t - 1, j - 1] * weights[NEXT, j]
                    if j >= n + 1:
                        value += alpha[t - 1, j - n - 1] * weights[SKIP, j]
                value *= probs[t, j]
                alpha[t, j] = value
                total += value
            if not total > 0.0:
                log_scale = np.nan
                break
            for j in range(size):
                alpha[t, j] /= total
            scales[t] = total
            log_scale += math.log(total) + top
        if np.isnan(log_scale):
            logliks[b] = np.nan
            continue
        final = 0.0
        for j in range(size):
            final += alpha[length - 1, j] * math.exp(end[b, j])
        if not final > 0.0:
            logliks[b] = np.nan
            continue
        logliks[b] = log_scale + math.log(final)

        # beta_t scaled so that gamma_t(j) = alpha_t(j) beta_t(j) / final
        beta = np.empty(size)
        ahead = np.empty(size)  # beta_{t+1}(j) p_{t+1}(j) / (scale of frame t + 1)
        for j in range(size):
            beta[j] = math.exp(end[b, j])
            gamma[b, length - 1, j] = alpha[length - 1, j] * beta[j] / final
            if want_counts:
                end_counts[b, j] = gamma[b, length - 1, j]
        for t in range(length - 2, -1, -1):
            for j in range(size):
                ahead[j] = beta[j] * probs[t + 1, j] / scales[t + 1]
            for i in range(size):
                value = ahead[i] * weights[STAY, i]
                if i + 1 < size:
                    value += ahead[i + 1] * weights[NEXT, i + 1]
                if i + n + 1 < size:
                    value += ahead[i + n + 1] * weights[SKIP, i + n + 1]
                beta[i] = value
                gamma[b, t, i] = alpha[t, i] * value / final
            if want_counts:  # the posterior of each arc into j between frames t and t + 1
                for j in range(size):
                    into = ahead[j] / final
                    arc_counts[STAY, b, j] += alpha[t, j] * weights[STAY, j] * into
                    if j >= 1:
                        arc_counts[NEXT, b, j] += alpha[t, j - 1] * weights[NEXT, j] * into
                    if j >= n + 1:
                        arc_counts[SKIP, b, j] += alpha[t, j - n - 1] * weights[SKIP, j] * into
        if want_counts:
            for j in range(size):
                start_counts[b, j] = gamma[b, 0, j]
    return logliks, gamma, arc_counts, start_counts, end_counts


@numba.njit(cache=True, inline="always")
def _logaddexp3(a, b, c, floor):
    top = max(a, b, c)
    if top <= floor:
        return floor
    return top + math.log(math.exp(a - top) + math.exp(b - top) + math.exp(c - top))


@numba.njit(cache=True, parallel=True)
def _forward_backward_log(emissions, arcs, start, end, lengths, sizes, n, floor, no_path, want_counts):
    batch, frames, width = emissions.shape
    dtype = emissions.dtype
    logliks = np.full(batch, -np.inf, dtype=dtype)
    gamma = np.zeros((batch, frames, width), dtype=dtype)
    arc_counts = np.zeros((3, batch, width), dtype=dtype)
    start_counts = np.zeros((batch, width), dtype=dtype)
    end_counts = np.zeros((batch, width), dtype=dtype)
    for b in numba.prange(batch):
        length, size = lengths[b], sizes[b]
        alpha = np.empty((length, size), dtype=dtype)
        for j in range(size):
            alpha[0, j] = max(emissions[b, 0, j] + start[b, j], floor)
        for t in range(1, length):
            for j in range(size):
                stay = alpha[t - 1, j] + arcs[STAY, b, j]
                advance = alpha[t - 1, j - 1] + arcs[NEXT, b, j] if j >= 1 else floor
                skip = alpha[t - 1, j - n - 1] + arcs[SKIP, b, j] if j >= n + 1 else floor
                alpha[t, j] = max(_logaddexp3(stay, advance, skip, floor) + emissions[b, t, j], floor)
        top = floor
        for j in range(size):
            top = max(top, alpha[length - 1, j] + end[b, j])
        total = 0.0
        for j in range(size):
            total += math.exp(alpha[length - 1, j] + end[b, j] - top)
        loglik = top + math.log(total) if top > floor else floor
        if loglik < no_path:
            continue
        logliks[b] = loglik

        beta = np.empty(size, dtype=dtype)
        ahead = np.empty(size, dtype=dtype)  # beta_{t+1}(j) + y_{t+1}(j)
        for j in range(size):
            beta[j] = max(end[b, j], floor)
            gamma[b, length - 1, j] = math.exp(alpha[length - 1, j] + beta[j] - loglik)
            if want_counts:
                end_counts[b, j] = gamma[b, length - 1, j] if end[b, j] > no_path else 0.0
        for t in range(length - 2, -1, -1):
            for j in range(size):
                ahead[j] = beta[j] + emissions[b, t + 1, j]
            for i in range(size):
                stay = ahead[i] + arcs[STAY, b, i]
                advance = ahead[i + 1] + arcs[NEXT, b, i + 1] if i + 1 < size else floor
                skip = ahead[i + n + 1] + arcs[SKIP, b, i + n + 1] if i + n + 1 < size else floor
                beta[i] = max(_logaddexp3(stay, advance, skip, floor), floor)
                gamma[b, t, i] = math.exp(alpha[t, i] + beta[i] - loglik)
            if want_counts:  # the posterior of each arc into j between frames t and t + 1
                for j in range(size):
                    into = ahead[j] - loglik
                    arc_counts[STAY, b, j] += math.exp(alpha[t, j] + arcs[STAY, b, j] + into)
                    if j >= 1:
                        arc_counts[NEXT, b, j] += math.exp(alpha[t, j - 1] + arcs[NEXT, b, j] + into)
                    if j >= n + 1:
                        arc_counts[SKIP, b, j] += math.exp(alpha[t, j - n - 1] + arcs[SKIP, b, j] + into)
        if want_counts:
            for j in range(size):
                start_counts[b, j] = gamma[b, 0, j] if start[b, j] > no_path else 0.0
    return logliks, gamma, arc_counts, start_counts, end_counts


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().numpy())


def _threads() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def best_paths(emissions, lengths, weights, n: int, sizes: torch.Tensor):
    """phonerec.hmm.align.best_paths on the CPU; `sizes` (B,) the node count of each graph."""
    _threads()
    nodes, scores = _viterbi(
        _numpy(emissions),
        _numpy(weights.arcs),
        _numpy(weights.start),
        _numpy(weights.end),
        _numpy(lengths.long()),
        _numpy(sizes.long()),
        n,
    )
    return torch.from_numpy(nodes), torch.from_numpy(scores)


def forward_backward(
    emissions, lengths, weights, n: int, sizes: torch.Tensor, floor: float, no_path: float, counts: bool
):
    """phonerec.hmm.fullsum.forward_backward on the CPU: (log-likelihoods, -inf where there is no path; node
    occupations; the arcs', starts' and ends' expected counts, zero unless `counts`). The scaled kernel first; the
    utterances it cannot take (no path, or underflow) by the log-space one."""
    _threads()
    arrays = [_numpy(t) for t in (emissions, weights.arcs, weights.start, weights.end)]
    lengths, sizes = _numpy(lengths.long()), _numpy(sizes.long())
    found = list(_forward_backward(*arrays, lengths, sizes, n, counts))
    redo = np.flatnonzero(np.isnan(found[0]))
    if len(redo):
        emissions, arcs, start, end = arrays
        again = _forward_backward_log(
            emissions[redo],
            arcs[:, redo],
            start[redo],
            end[redo],
            lengths[redo],
            sizes[redo],
            n,
            floor,
            no_path,
            counts,
        )
        for k, part in enumerate(again):
            if k == 2:  # the arc counts, (3, B, W)
                found[k][:, redo] = part
            else:
                found[k][redo] = part
    loglik = found[0].astype(arrays[0].dtype)
    return (torch.from_numpy(loglik), *(torch.from_numpy(a) for a in found[1:]))
