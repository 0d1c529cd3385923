"""phonerec.hmm.kernels' frame loops for graphs whose words branch into pronunciations (align.BranchedBatch).

The same recursions, results and fallbacks as the chain kernels (their module docstring says what each does and why),
with a node's arcs read from a list of predecessors instead of three fixed offsets: arcs (1 + K, B, W) are the
self-loop and then the arcs from preds[k] (K, B, W), -1 where a node has fewer than K. The forward recursions
gather over each node's predecessors; the backward ones scatter each arc into the node it leaves. Back-pointers are
one byte: 0 for the self-loop, k + 1 for predecessor k (align.pad_branched refuses more than 254). The bound on what
underflow took follows the same arcs, each node's sum made of up to K + 1 products instead of 3.

Chains keep their own kernels (fixed offsets vectorise; these gathers do not): these run only for batches holding
a branched graph.
"""

import math

import numba
import numpy as np
import torch

from phonerec.hmm.kernels import (
    _BIG,
    _EXACT,
    _GUARD,
    _SMALLEST_WEIGHT,
    _TINY,
    _logaddexp,
    _numpy,
    _probabilities,
    _scaled_outputs,
    _threaded,
)


@numba.njit(cache=True)
def _viterbi_one(b, log_probs, states, preds, arcs, start, end, lengths, sizes, nodes, scores):
    length, size, fan_in = lengths[b], sizes[b], preds.shape[0]
    column = states[b]
    backptr = np.zeros((length, size), dtype=np.uint8)
    prev = np.empty(size, dtype=log_probs.dtype)
    cur = np.empty(size, dtype=log_probs.dtype)
    for j in range(size):
        prev[j] = log_probs[b, 0, column[j]] + start[b, j]
    for t in range(1, length):
        for j in range(size):
            best, code = prev[j] + arcs[0, b, j], 0
            for k in range(fan_in):
                i = preds[k, b, j]
                if i < 0:
                    break
                score = prev[i] + arcs[k + 1, b, j]
                if score > best:
                    best, code = score, k + 1
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
        return
    for t in range(length - 1, -1, -1):
        nodes[b, t] = node
        code = backptr[t, node]
        if code:
            node = preds[code - 1, b, node]


@numba.njit(cache=True, parallel=True)
def _viterbi_threads(log_probs, states, preds, arcs, start, end, lengths, sizes, nodes, scores):
    for b in numba.prange(log_probs.shape[0]):
        _viterbi_one(b, log_probs, states, preds, arcs, start, end, lengths, sizes, nodes, scores)


@numba.njit(cache=True)
def _viterbi_serial(log_probs, states, preds, arcs, start, end, lengths, sizes, nodes, scores):
    for b in range(log_probs.shape[0]):
        _viterbi_one(b, log_probs, states, preds, arcs, start, end, lengths, sizes, nodes, scores)


@numba.njit(cache=True, parallel=True)
def _forward_backward(emissions, preds, arcs, start, end, lengths, sizes, floor, no_path, want_counts):
    """The log-space recursions (kernels._forward_backward) over predecessor lists."""
    batch, frames, width = emissions.shape
    fan_in = preds.shape[0]
    dtype = emissions.dtype
    logliks = np.full(batch, -np.inf, dtype=dtype)
    gamma = np.zeros((batch, frames, width), dtype=dtype)
    arc_counts = np.zeros((1 + fan_in, batch, width), dtype=dtype)
    start_counts = np.zeros((batch, width), dtype=dtype)
    end_counts = np.zeros((batch, width), dtype=dtype)
    for b in numba.prange(batch):
        length, size = lengths[b], sizes[b]
        alpha = np.empty((length, size), dtype=np.float64)
        for j in range(size):
            alpha[0, j] = max(emissions[b, 0, j] + start[b, j], floor)
        for t in range(1, length):
            for j in range(size):
                total = alpha[t - 1, j] + arcs[0, b, j]
                for k in range(fan_in):
                    i = preds[k, b, j]
                    if i < 0:
                        break
                    if arcs[k + 1, b, j] > no_path:
                        total = _logaddexp(total, alpha[t - 1, i] + arcs[k + 1, b, j])
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
                beta[j] = ahead[j] + arcs[0, b, j]
            for j in range(size):  # each arc i -> j adds to beta_t(i)
                for k in range(fan_in):
                    i = preds[k, b, j]
                    if i < 0:
                        break
                    if arcs[k + 1, b, j] > no_path:
                        beta[i] = _logaddexp(beta[i], ahead[j] + arcs[k + 1, b, j])
            for i in range(size):
                beta[i] = max(beta[i], floor)
                gamma[b, t, i] = math.exp(alpha[t, i] + beta[i] - loglik)
            if want_counts:  # the posterior of each arc into j between frames t and t + 1
                for j in range(size):
                    into = ahead[j] - loglik
                    arc_counts[0, b, j] += math.exp(alpha[t, j] + arcs[0, b, j] + into)
                    for k in range(fan_in):
                        i = preds[k, b, j]
                        if i < 0:
                            break
                        if arcs[k + 1, b, j] > no_path:
                            arc_counts[k + 1, b, j] += math.exp(alpha[t, i] + arcs[k + 1, b, j] + into)
        if want_counts:
            for j in range(size):
                if start[b, j] > no_path:
                    start_counts[b, j] = gamma[b, 0, j]
    return logliks, gamma, arc_counts, start_counts, end_counts


@numba.njit(cache=True)
def _fewest_arcs(b, preds, arcs, start, end, length, size, no_arc):
    """kernels._fewest_arcs over predecessor lists (the nodes in topological order: every arc goes forward)."""
    fan_in = preds.shape[0]
    first = np.full(size, length + size, dtype=np.int64)
    to_end = np.full(size, length + size, dtype=np.int64)
    loops = True
    for j in range(size):
        loops = loops and arcs[0, b, j] > no_arc
        if start[b, j] > no_arc:
            first[j] = 0
        if end[b, j] > no_arc:
            to_end[j] = 0
        for k in range(fan_in):
            i = preds[k, b, j]
            if i < 0:
                break
            if arcs[k + 1, b, j] > no_arc:
                first[j] = min(first[j], first[i] + 1)
    for j in range(size - 1, -1, -1):  # to_end[j] is final here: every node after j has passed its count on
        for k in range(fan_in):
            i = preds[k, b, j]
            if i < 0:
                break
            if arcs[k + 1, b, j] > no_arc:
                to_end[i] = min(to_end[i], to_end[j] + 1)
    return first, to_end, loops


@numba.njit(cache=True)
def _scatter(values, weight, preds, b, size, fan_in, into):
    """into[i] = sum over the arcs out of i (self-loop first) of the value of the node each enters times its
    weight: the backward recursions' sum (one call a frame: a call per node, taking arrays, costs more than
    the node's sum)."""
    for i in range(size):
        into[i] = values[i] * weight[0, i]
    for j in range(size):
        for k in range(fan_in):
            i = preds[k, b, j]
            if i < 0:
                break
            into[i] += values[j] * weight[k + 1, j]


@numba.njit(cache=True)
def _scaled_one(b, probs, shift, preds, arcs, start, end, lengths, sizes, no_path, want_counts, loss, out):
    """kernels._scaled_one over predecessor lists: the same scaled recursions, bound on underflow (`loss`: what one
    node's sum may lose in a frame) and fallbacks; returns whether utterance b's results are exact."""
    logliks, gamma, arc_counts, start_counts, end_counts = out
    length, size, fan_in = lengths[b], sizes[b], preds.shape[0]
    if length < 1 or size < 1:
        return False
    weight = np.zeros((1 + fan_in, size))
    start_p = np.zeros(size)
    end_p = np.zeros(size)
    for j in range(size):
        for k in range(1 + fan_in):
            if arcs[k, b, j] > no_path:
                if arcs[k, b, j] < _SMALLEST_WEIGHT:
                    return False
                weight[k, j] = math.exp(arcs[k, b, j])
        if start[b, j] > no_path:
            if start[b, j] < _SMALLEST_WEIGHT:
                return False
            start_p[j] = math.exp(start[b, j])
        if end[b, j] > no_path:
            if end[b, j] < _SMALLEST_WEIGHT:
                return False
            end_p[j] = math.exp(end[b, j])
    first, to_end, loops = _fewest_arcs(b, preds, arcs, start, end, length, size, no_path)
    if not loops:
        return False
    emit = probs[b]

    # Forward: alpha[t] from the normalised alpha[t - 1]; lost[t] bounds what underflow took.
    alpha = np.zeros((length, size))
    lost = np.zeros((length, size))
    loglik, lossy, lossy_from, scale = 0.0, False, length, 1.0
    for t in range(length):
        # The rows as views taken once a frame (a view taken per node costs a reference count each time).
        row, e, total, low = alpha[t], emit[t], 0.0, 0
        previous, previous_lost = alpha[max(t - 1, 0)], lost[max(t - 1, 0)]
        for j in range(size):
            if t == 0:
                value = start_p[j] * e[j]
            else:
                # The arcs into j written out here: a function call taking arrays, per node, was 4 times slower.
                value = previous[j] * weight[0, j]
                for k in range(fan_in):
                    i = preds[k, b, j]
                    if i < 0:
                        break
                    value += previous[i] * weight[k + 1, j]
                value *= scale * e[j]
            row[j] = value
            total += value
            low += (value < _GUARD) & (first[j] <= t)
        if low and not lossy:
            lossy, lossy_from = True, t
        if not total > 1e-290:
            return False
        if lossy:
            bounds = lost[t]
            for j in range(size):
                bound = 0.0
                if t > lossy_from:
                    bound = previous_lost[j] * weight[0, j]
                    for k in range(fan_in):
                        i = preds[k, b, j]
                        if i < 0:
                            break
                        bound += previous_lost[i] * weight[k + 1, j]
                    bound *= scale * e[j]
                if first[j] <= t and row[j] < _GUARD:
                    bound += loss
                if bound > 1e290 * total:
                    return False
                bounds[j] = bound
        scale = 1.0 / total
        loglik += shift[b, t] + (math.log(total) if t < length - 1 else 0.0)
    final, final_lost = 0.0, 0.0
    for j in range(size):
        final += alpha[length - 1, j] * end_p[j]
        final_lost += lost[length - 1, j] * end_p[j]
    if not final > 1e-290 or final_lost > _EXACT * final:
        return False
    loglik += math.log(final)

    # Backward: beta[t] from the normalised beta[t + 1]; occupations and arc posteriors as the chain kernel's.
    occupation = gamma[b]
    counts = np.zeros((1 + fan_in, size))
    beta = np.zeros(size)
    beta_lost = np.zeros(size)
    ahead = np.zeros(size)  # e[t + 1, j] beta[t + 1, j]
    ahead_lost = np.zeros(size)
    lossy_back = False
    total, overlap = 0.0, 0.0
    for j in range(size):
        beta[j] = end_p[j]
        ahead[j] = emit[length - 1, j] * end_p[j]
        total += end_p[j]
        overlap += alpha[length - 1, j] * end_p[j]
    for t in range(length - 1, -1, -1):
        if t < length - 1:
            scale = 1.0 / total  # beta[t + 1] / total is normalised
            left = length - 1 - t  # frames after t
            _scatter(ahead, weight, preds, b, size, fan_in, beta)
            total, overlap, low = 0.0, 0.0, 0
            for i in range(size):
                beta[i] *= scale
                total += beta[i]
                overlap += alpha[t, i] * beta[i]
                low += (beta[i] < _GUARD) & (to_end[i] <= left)
            if low and not lossy_back:
                lossy_back = True
            if not total > 1e-290:
                return False
            if lossy_back:
                _scatter(ahead_lost, weight, preds, b, size, fan_in, beta_lost)
                for i in range(size):
                    bound = beta_lost[i] * scale
                    if to_end[i] <= left and beta[i] < _GUARD:
                        bound += loss
                    if bound > 1e290 * total:
                        return False
                    beta_lost[i] = bound
        if not overlap > 1e-290:
            return False
        if lossy or lossy_back:
            overlap_lost = 0.0  # a bound on what the overlap lost
            for j in range(size):
                overlap_lost += alpha[t, j] * beta_lost[j] + lost[t, j] * beta[j]
            if overlap_lost > _EXACT * overlap:
                return False
        normaliser = 1.0 / overlap
        for j in range(size):
            occupation[t, j] = alpha[t, j] * beta[j] * normaliser
        if want_counts and t < length - 1:  # ahead still holds frame t + 1's part
            for j in range(size):
                arriving = ahead[j] * scale * normaliser
                counts[0, j] += alpha[t, j] * weight[0, j] * arriving
                for k in range(fan_in):
                    i = preds[k, b, j]
                    if i < 0:
                        break
                    counts[k + 1, j] += alpha[t, i] * weight[k + 1, j] * arriving
        for j in range(size):
            ahead[j] = emit[t, j] * beta[j]
            ahead_lost[j] = emit[t, j] * beta_lost[j]
    logliks[b] = loglik
    if want_counts:
        arc_counts[:, b, :size] = counts
        for j in range(size):
            if start_p[j] > 0.0:
                start_counts[b, j] = occupation[0, j]
            if end_p[j] > 0.0:
                end_counts[b, j] = occupation[length - 1, j]
    return True


@numba.njit(cache=True, parallel=True)
def _scaled_threads(probs, shift, preds, arcs, start, end, lengths, sizes, no_path, want_counts, loss, out, exact):
    for b in numba.prange(probs.shape[0]):
        exact[b] = _scaled_one(
            b, probs, shift, preds, arcs, start, end, lengths, sizes, no_path, want_counts, loss, out
        )
        if not exact[b]:
            out[1][b] = 0.0  # the occupations it had written


@numba.njit(cache=True)
def _scaled_serial(probs, shift, preds, arcs, start, end, lengths, sizes, no_path, want_counts, loss, out, exact):
    for b in range(probs.shape[0]):
        exact[b] = _scaled_one(
            b, probs, shift, preds, arcs, start, end, lengths, sizes, no_path, want_counts, loss, out
        )
        if not exact[b]:
            out[1][b] = 0.0  # the occupations it had written


def best_paths(log_probs, graphs, lengths, weights):
    """kernels.best_paths for a BranchedBatch."""
    scores_in = _numpy(log_probs)
    batch, frames, _ = scores_in.shape
    nodes = np.full((batch, frames), -1, dtype=np.int64)
    scores = np.full(batch, -np.inf, dtype=scores_in.dtype)
    kernel = _viterbi_threads if _threaded(batch) else _viterbi_serial
    kernel(
        scores_in,
        _numpy(graphs.states),
        _numpy(graphs.preds),
        *(_numpy(t) for t in (weights.arcs, weights.start, weights.end)),
        _numpy(lengths.long()),
        _numpy(graphs.sizes.long()),
        nodes,
        scores,
    )
    return torch.from_numpy(nodes), torch.from_numpy(scores)


def _underflow_loss(graphs) -> float:
    """What one node's sum may lose to underflow in a frame: a product under float64's smallest normal per term
    (the self-loop and the arcs into it forward, out of it backward), and the emission's and scale's products."""
    fan = max(graphs.preds.shape[0], graphs.out_arcs.shape[0])
    return (fan + 3) * _TINY * _BIG


def scaled_forward_backward(emissions, lengths, weights, graphs, no_path: float, counts: bool):
    """kernels.scaled_forward_backward for a BranchedBatch."""
    threaded = _threaded(len(emissions))
    lengths, sizes, scores = _numpy(lengths.long()), _numpy(graphs.sizes.long()), _numpy(emissions)
    probs, shift = _probabilities(scores, lengths, sizes, no_path)
    out = _scaled_outputs(probs, scores.dtype, weights.arcs.shape[0])
    exact = np.zeros(len(probs), dtype=np.bool_)
    kernel = _scaled_threads if threaded else _scaled_serial
    kernel(
        probs,
        shift,
        _numpy(graphs.preds),
        *(_numpy(t) for t in (weights.arcs, weights.start, weights.end)),
        lengths,
        sizes,
        no_path,
        counts,
        _underflow_loss(graphs),
        out,
        exact,
    )
    return (*(torch.from_numpy(a) for a in out), torch.from_numpy(exact))


def log_space_forward_backward(emissions, lengths, weights, graphs, floor: float, no_path: float, counts: bool):
    """kernels.log_space_forward_backward for a BranchedBatch."""
    _threaded(len(emissions))
    found = _forward_backward(
        _numpy(emissions),
        _numpy(graphs.preds),
        *(_numpy(t) for t in (weights.arcs, weights.start, weights.end)),
        _numpy(lengths.long()),
        _numpy(graphs.sizes.long()),
        floor,
        no_path,
        counts,
    )
    return tuple(torch.from_numpy(a) for a in found)
