"""The frame loops of Viterbi and forward-backward over a padded batch of graphs, compiled by numba for the CPU.

They compute what the pure-torch recursions of phonerec.hmm.align.best_paths and phonerec.hmm.fullsum
.forward_backward compute (those stay as the references the tests hold these to, and as the path on a GPU),
from the same inputs: the arc weights (3, B, W) into each node (stay, next, skip over n nodes), start and end
weights (B, W), log 0 where there is no arc, and the node emissions (B, T, W), which Viterbi reads in place from
the frame scores (B, T, S) and each node's state. Torch's versions step all utterances and nodes
at once, a dozen tensor operations and allocations per frame; here each utterance is one pass over its own frames
and nodes, with one-byte back-pointers, utterances spread over numba's threads (as many as torch's:
`torch.get_num_threads()`; one thread or one utterance runs a plain loop, which starts 0.1 ms sooner).

The forward-backward runs on probabilities scaled per frame (Rabiner's scaling: each frame's forward and backward
vectors normalised, the emissions divided by their frame's best), a few multiply-adds per arc where log
space needs an exp and a log; the emissions' exps are taken beforehand by numpy, whose exp works on vectors.
Scaled probabilities lose a path whose share of its frame falls below float64's smallest normal number, and a
lost path can matter later (a trained model's scores of one frame span thousands of nats). So the kernel bounds
what it may have lost: a product that underflows loses less than 2.2e-308, and what a node lost at one frame
weighs later as much as a path through that node would, which a second recursion on the same arcs follows; it
starts at the first node whose sum falls below 1e-280 (above that, underflow is rounding), so where nothing
comes near the edge of the range it costs nothing. Where the bound exceeds 1e-15 of the sums the results are made
of, the utterance is redone by the log-space kernel (`_forward_backward`), which is exact at any range, and so is
one without a path. Both give the same numbers to float64's precision; the scaled one is the fast path.
"""

import math

import numba
import numpy as np
import torch

from phonerec.hmm.align import BranchedBatch

STAY, NEXT, SKIP = 0, 1, 2
# numba's own thread pool, not OpenMP's: an OpenMP worker spins between parallel regions, and on 2 cores shared
# with torch that made a training epoch 10 times slower (FSDD connected digits: 237 s against 23 s).
numba.config.THREADING_LAYER = "workqueue"


@numba.njit(cache=True)
def _fewest_arcs(b, arcs, start, end, length, size, n, no_arc):
    """(first, to_end, loops) of utterance b's graph: the fewest arcs from a start to each node and from each node
    to an end (length + size where there is no way), and whether every node has a self-loop (an arc weighs more
    than no_arc). With the self-loops (as in every graph built here) a node reachable at frame t stays reachable:
    a path reaches node j at frame t exactly when t >= first[j], and goes on from it to an end exactly when the
    frames after t are at least to_end[j]."""
    first = np.full(size, length + size, dtype=np.int64)
    to_end = np.full(size, length + size, dtype=np.int64)
    loops = True
    for j in range(size):
        loops = loops and arcs[STAY, b, j] > no_arc
        if start[b, j] > no_arc:
            first[j] = 0
        if j >= 1 and arcs[NEXT, b, j] > no_arc:
            first[j] = min(first[j], first[j - 1] + 1)
        if j >= n + 1 and arcs[SKIP, b, j] > no_arc:
            first[j] = min(first[j], first[j - n - 1] + 1)
    for i in range(size - 1, -1, -1):
        if end[b, i] > no_arc:
            to_end[i] = 0
        if i + 1 < size and arcs[NEXT, b, i + 1] > no_arc:
            to_end[i] = min(to_end[i], to_end[i + 1] + 1)
        if i + n + 1 < size and arcs[SKIP, b, i + n + 1] > no_arc:
            to_end[i] = min(to_end[i], to_end[i + n + 1] + 1)
    return first, to_end, loops


@numba.njit(cache=True)
def _viterbi_one(b, log_probs, states, arcs, start, end, lengths, sizes, n, nodes, scores):
    """Utterance b's best path into nodes[b] and its score into scores[b]; node j's score at frame t is
    log_probs[b, t, states[b, j]], read in place (no (B, T, W) copy)."""
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
        return
    for t in range(length - 1, -1, -1):
        nodes[b, t] = node
        code = backptr[t, node]
        node -= 0 if code == STAY else (1 if code == NEXT else n + 1)


@numba.njit(cache=True, parallel=True)
def _viterbi_threads(log_probs, states, arcs, start, end, lengths, sizes, n, nodes, scores):
    for b in numba.prange(log_probs.shape[0]):
        _viterbi_one(b, log_probs, states, arcs, start, end, lengths, sizes, n, nodes, scores)


@numba.njit(cache=True)
def _viterbi_serial(log_probs, states, arcs, start, end, lengths, sizes, n, nodes, scores):
    for b in range(log_probs.shape[0]):
        _viterbi_one(b, log_probs, states, arcs, start, end, lengths, sizes, n, nodes, scores)


@numba.njit(cache=True, inline="always")
def _logaddexp(a, b):
    """log(exp(a) + exp(b)), one exp and one log1p; a term at -inf (or the floor) adds nothing."""
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a))


@numba.njit(cache=True, parallel=True)
def _forward_backward(emissions, arcs, start, end, lengths, sizes, n, floor, no_path, want_counts):
    """The log-space recursions of phonerec.hmm.fullsum, an arc left out of each sum where its weight is the floor
    (the jump over an optional block exists into few nodes): exact at any range of scores, the fallback of the
    scaled kernel."""
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


_TINY = 2.2250738585072014e-308  # float64's smallest normal number: below it a scaled value loses its precision
_BIG = 1.0e300  # the bounds on lost shares are kept multiplied by this, so that the smallest loss is a normal number
_LOSS = 4.0 * _TINY * _BIG  # what underflow may take from one node's sum in a frame: 4 products of < _TINY each
_EXACT = 1.0e-15 * _BIG  # a lost share at most 1e-15 of what a result is made of leaves it exact to float64's
_GUARD = 1.0e-280  # a reachable node whose sum is below this may have lost a share to underflow
_SMALLEST_WEIGHT = -700.0  # log-weights below this underflow as probabilities: such an utterance goes to log space


@numba.njit(cache=True, fastmath={"reassoc", "contract"})  # reassociated sums vectorise
def _scaled_one(b, probs, shift, arcs, start, end, lengths, sizes, n, no_path, want_counts, out):
    """Utterance b on scaled probabilities: probs[b] its node emissions as exp(emission - shift[b, t]), shift[b, t]
    its frame's best; arcs, start, end the log-weights. Writes its results into `out` (_scaled_outputs: the
    log-likelihood, occupations, arc, start and end counts) and returns whether they are exact; when not, the
    caller clears what it wrote and the utterance must be redone in log space (one without a path among them: the
    log-space kernel tells it apart).

    The bound on what underflow took is a second recursion beside each of alpha and beta, on the same arcs and
    emissions: a node a path can reach (at frame t: t >= first[j], and from it an end: to_end[j] <= the frames
    left; _fewest_arcs) whose sum falls below _GUARD takes in _LOSS, and the bound then grows and shrinks as the
    share of a path through that node would. A reachable node whose sum is _GUARD or more lost to underflow at
    most 4 x 2.2e-308 of it, a relative error of 1e-27: rounding, which the bound need not follow. So the bound is
    zero, and its recursion skipped, until some node falls below _GUARD. At the end (forward) and at every frame
    (the occupations) it must stay below 1e-15 of the sum it bounds."""
    logliks, gamma, arc_counts, start_counts, end_counts = out
    length, size = lengths[b], sizes[b]
    if length < 1 or size < 1:
        return False
    weight = np.zeros((3, size))
    start_p = np.zeros(size)
    end_p = np.zeros(size)
    for j in range(size):
        for k in range(3):
            if arcs[k, b, j] > no_path and (k != NEXT or j >= 1) and (k != SKIP or j >= n + 1):
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
    first, to_end, loops = _fewest_arcs(b, arcs, start, end, length, size, n, no_path)
    if not loops:
        return False
    emit = probs[b]
    # The weights of the arcs into each node and alpha, padded with zeros (no arc) beyond the last node and before
    # the first: the hot loops below then index with j alone. Indexed with j - 1 or j - n - 1, numba's handling
    # of negative indices kept them scalar; so the backward loop and the occupations now run as vector code (2.3
    # times faster). The forward loop measured no faster, for a reason not found.
    off = n + 1
    into = np.zeros((3, size + off))
    into[:, :size] = weight

    # Forward. alpha[t] is kept as computed from the normalised alpha[t - 1] (alpha[t] / total[t] sums to 1), so
    # each frame is one pass over the nodes; loglik gathers the normalisers. lost[t] bounds what underflow took,
    # on the scale of alpha[t].
    padded = np.zeros((length, size + off))
    alpha = padded[:, off:]
    lost = np.empty((length, size))  # written (and read) from frame lossy_from on: zero before it
    loglik, lossy, lossy_from, scale = 0.0, False, length, 1.0
    for t in range(length):
        row, e, total, low = padded[t, off:], emit[t], 0.0, 0
        if t == 0:
            for j in range(size):
                row[j] = start_p[j] * e[j]
                total += row[j]
                low += (row[j] < _GUARD) & (first[j] <= t)
        else:
            stay, advance, skip = padded[t - 1, off:], padded[t - 1, off - 1 :], padded[t - 1]
            for j in range(size):
                value = (stay[j] * into[STAY, j] + advance[j] * into[NEXT, j] + skip[j] * into[SKIP, j]) * scale * e[j]
                row[j] = value
                total += value
                low += (value < _GUARD) & (first[j] <= t)  # a reachable node near the edge of the range
        if low and not lossy:
            lossy, lossy_from = True, t
        if not total > 1e-290:
            return False
        if lossy:
            for j in range(size):
                bound = 0.0
                if t > lossy_from:
                    bound = lost[t - 1, j] * weight[STAY, j]
                    if j >= 1:
                        bound += lost[t - 1, j - 1] * weight[NEXT, j]
                    if j >= n + 1:
                        bound += lost[t - 1, j - n - 1] * weight[SKIP, j]
                bound *= scale * emit[t, j]
                if first[j] <= t and alpha[t, j] < _GUARD:
                    bound += _LOSS
                if bound > 1e290 * total:
                    return False
                lost[t, j] = bound
        scale = 1.0 / total
        loglik += shift[b, t] + (math.log(total) if t < length - 1 else 0.0)
    final, final_lost = 0.0, 0.0
    for j in range(size):
        final += alpha[length - 1, j] * end_p[j]
        if lossy:
            final_lost += lost[length - 1, j] * end_p[j]
    if not final > 1e-290 or final_lost > _EXACT * final:
        return False
    loglik += math.log(final)

    # Backward, beta[t] likewise from the normalised beta[t + 1]. With overlap_t = sum_j alpha[t, j] beta[t, j],
    # the occupation of node j is alpha[t, j] beta[t, j] / overlap_t and the posterior of the arc i -> j between
    # frames t and t + 1 is alpha[t, i] w(i -> j) e[t + 1, j] beta_{t+1}(j) / overlap_t (beta_{t+1} normalised):
    # the scales of alpha and beta cancel. Each frame's occupations and arc posteriors sum to 1.
    occupation = gamma[b]
    counts = np.zeros((3, size))
    beta = np.zeros(size)
    beta_lost = np.zeros(size)
    # e[t + 1, j] beta[t + 1, j] (`ahead`, zero beyond the last node), and the same for frame t being made
    ahead, behind = np.zeros(size + off), np.zeros(size + off)
    ahead_lost = np.zeros(size)
    out_next, out_skip = into[NEXT, 1:], into[SKIP, off:]  # the weights of the arcs out of i to i + 1, i + n + 1
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
            stay, advance, skip, row, e = ahead, ahead[1:], ahead[off:], alpha[t], emit[t]
            total, overlap, low = 0.0, 0.0, 0
            for i in range(size):
                value = (stay[i] * into[STAY, i] + advance[i] * out_next[i] + skip[i] * out_skip[i]) * scale
                beta[i] = value
                behind[i] = e[i] * value
                total += value
                overlap += row[i] * value
                low += (value < _GUARD) & (to_end[i] <= left)
            if low and not lossy_back:
                lossy_back = True
            if not total > 1e-290:
                return False
            if lossy_back:
                for i in range(size):
                    bound = ahead_lost[i] * weight[STAY, i]
                    if i + 1 < size:
                        bound += ahead_lost[i + 1] * weight[NEXT, i + 1]
                    if i + n + 1 < size:
                        bound += ahead_lost[i + n + 1] * weight[SKIP, i + n + 1]
                    bound *= scale
                    if to_end[i] <= left and beta[i] < _GUARD:
                        bound += _LOSS
                    if bound > 1e290 * total:
                        return False
                    beta_lost[i] = bound
                    ahead_lost[i] = emit[t, i] * bound
        if not overlap > 1e-290:
            return False
        if lossy or lossy_back:
            overlap_lost = 0.0  # a bound on what the overlap lost
            for j in range(size):
                overlap_lost += alpha[t, j] * beta_lost[j] + (lost[t, j] * beta[j] if t >= lossy_from else 0.0)
            if overlap_lost > _EXACT * overlap:
                return False
        normaliser = 1.0 / overlap
        row, occupied = alpha[t], occupation[t]
        for j in range(size):
            occupied[j] = row[j] * beta[j] * normaliser
        if want_counts and t < length - 1:  # ahead still holds frame t + 1's part
            for j in range(size):
                arriving = ahead[j] * scale * normaliser
                counts[STAY, j] += alpha[t, j] * weight[STAY, j] * arriving
                if j >= 1:
                    counts[NEXT, j] += alpha[t, j - 1] * weight[NEXT, j] * arriving
                if j >= n + 1:
                    counts[SKIP, j] += alpha[t, j - n - 1] * weight[SKIP, j] * arriving
        if t < length - 1:
            ahead, behind = behind, ahead
    logliks[b] = loglik
    if want_counts:
        arc_counts[:, b, :size] = counts
        for j in range(size):
            if start_p[j] > 0.0:
                start_counts[b, j] = occupation[0, j]
            if end_p[j] > 0.0:
                end_counts[b, j] = occupation[length - 1, j]
    return True


@numba.njit(cache=True)
def _centre(emissions, lengths, sizes, no_path, centred):
    """Writes the emissions less their frame's best into `centred` (float64, -inf outside each utterance) and
    returns the frames' bests (B, T)."""
    batch, frames, width = emissions.shape
    best = np.zeros((batch, frames))
    for b in range(batch):
        size, length = sizes[b], lengths[b]
        for t in range(frames):
            row, target = emissions[b, t], centred[b, t]
            if t >= length:
                target[:] = -np.inf
                continue
            # The frame's best in four running maxima: one alone waits on each comparison (a quarter slower).
            top0 = top1 = top2 = top3 = no_path
            j = 0
            while j + 4 <= size:
                top0, top1 = max(top0, row[j]), max(top1, row[j + 1])
                top2, top3 = max(top2, row[j + 2]), max(top3, row[j + 3])
                j += 4
            for k in range(j, size):
                top0 = max(top0, row[k])
            top = max(max(top0, top1), max(top2, top3))
            best[b, t] = top
            for j in range(size):
                target[j] = row[j] - top
            target[size:] = -np.inf
    return best


def _probabilities(emissions: np.ndarray, lengths, sizes, no_path: float) -> tuple[np.ndarray, np.ndarray]:
    """(the node emissions as probabilities, each frame's best 1; the frames' bests), by numpy's exp, which works
    on vectors (the kernel's exp, one number at a time, was 6 times slower and half of the kernel's time)."""
    probs = np.empty(emissions.shape)
    shift = _centre(emissions, lengths, sizes, no_path, probs)
    np.exp(probs, out=probs)
    return probs, shift


def _scaled_outputs(probs, occupation_dtype, arc_kinds: int = 3):
    """The kernel's results, zero (log-likelihoods -inf); the occupations, the largest, in the emissions' dtype."""
    batch, frames, width = probs.shape
    return (
        np.full(batch, -np.inf),
        np.zeros((batch, frames, width), dtype=occupation_dtype),
        np.zeros((arc_kinds, batch, width)),
        np.zeros((batch, width)),
        np.zeros((batch, width)),
    )


@numba.njit(cache=True, parallel=True)
def _scaled_threads(probs, shift, arcs, start, end, lengths, sizes, n, no_path, want_counts, out, exact):
    for b in numba.prange(probs.shape[0]):
        exact[b] = _scaled_one(b, probs, shift, arcs, start, end, lengths, sizes, n, no_path, want_counts, out)
        if not exact[b]:
            out[1][b] = 0.0  # the occupations it had written


@numba.njit(cache=True)
def _scaled_serial(probs, shift, arcs, start, end, lengths, sizes, n, no_path, want_counts, out, exact):
    for b in range(probs.shape[0]):
        exact[b] = _scaled_one(b, probs, shift, arcs, start, end, lengths, sizes, n, no_path, want_counts, out)
        if not exact[b]:
            out[1][b] = 0.0  # the occupations it had written


@numba.njit(cache=True)
def graph_masks(states, optional, sizes, skip_between_equal, n):
    """phonerec.hmm.align.pad_graphs' arrays, in GraphBatch's order (states, valid, skip_in, block_entry, start,
    end, beside_block: (B, W); arcs_in: (3, B, W)), from the graphs' states and optional flags one graph after
    another, each graph's node count and skip_between_equal."""
    batch, width = len(sizes), sizes.max()
    padded = np.zeros((batch, width), dtype=np.int64)
    valid = np.zeros((batch, width), dtype=np.bool_)
    skip_in = np.zeros((batch, width), dtype=np.bool_)
    block_entry = np.zeros((batch, width), dtype=np.bool_)
    start = np.zeros((batch, width), dtype=np.bool_)
    end = np.zeros((batch, width), dtype=np.bool_)
    beside_block = np.zeros((batch, width), dtype=np.bool_)
    arcs_in = np.zeros((3, batch, width), dtype=np.bool_)
    first = 0
    for b in range(batch):
        size = sizes[b]
        state, opt = states[first : first + size], optional[first : first + size]
        first += size
        run = 0  # optional nodes in a row just before node j
        for j in range(size):
            padded[b, j] = state[j]
            valid[b, j] = True
            block_entry[b, j] = opt[j] and (j == 0 or not opt[j - 1])
            # Node j may be entered from j - n - 1 when nodes j-n .. j-1 are one optional block.
            if run == n and j >= n + 1:
                skip_in[b, j] = skip_between_equal[b] or state[j] != state[j - n - 1]
            run = run + 1 if opt[j] else 0
            arcs_in[STAY, b, j], arcs_in[NEXT, b, j], arcs_in[SKIP, b, j] = True, j >= 1, skip_in[b, j]
        start[b, 0] = True
        end[b, size - 1] = True
        if size > n and opt[:n].all():  # begin after the leading silence
            start[b, n] = beside_block[b, n] = True
        if size > n and opt[size - n :].all():  # stop before the trailing silence
            end[b, size - n - 1] = beside_block[b, size - n - 1] = True
    return padded, valid, skip_in, block_entry, start, end, beside_block, arcs_in


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().numpy())


def _threaded(batch: int) -> bool:
    """Whether to spread the batch over numba's threads (as many as torch's: `torch.get_num_threads()`). With one
    thread or one utterance the serial loop runs instead: starting the parallel one costs about 0.1 ms, as much as
    aligning a 300-frame utterance."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads > 1 and batch > 1


def best_paths(log_probs, graphs, lengths, weights):
    """phonerec.hmm.align.best_paths on the CPU, from the (B, T, S) frame scores and each node's state (the
    graphs' GraphBatch, or BranchedBatch: phonerec.hmm.branched_kernels) instead of the node emissions."""
    if isinstance(graphs, BranchedBatch):
        from phonerec.hmm import branched_kernels

        return branched_kernels.best_paths(log_probs, graphs, lengths, weights)
    states, n, sizes = graphs.states, graphs.n, graphs.sizes
    scores_in = _numpy(log_probs)
    batch, frames, _ = scores_in.shape
    nodes = np.full((batch, frames), -1, dtype=np.int64)
    scores = np.full(batch, -np.inf, dtype=scores_in.dtype)
    kernel = _viterbi_threads if _threaded(batch) else _viterbi_serial
    kernel(
        scores_in,
        _numpy(states),
        *(_numpy(t) for t in (weights.arcs, weights.start, weights.end)),
        _numpy(lengths.long()),
        _numpy(sizes.long()),
        n,
        nodes,
        scores,
    )
    return torch.from_numpy(nodes), torch.from_numpy(scores)


def forward_backward(emissions, lengths, weights, graphs, floor: float, no_path: float, counts: bool):
    """phonerec.hmm.fullsum.forward_backward on the CPU: (log-likelihoods, -inf where there is no path; node
    occupations; the arcs', starts' and ends' expected counts, zero unless `counts`), in emissions' dtype. By the
    scaled kernel; the utterances it cannot vouch for by the log-space one. `graphs`: the GraphBatch, or a
    BranchedBatch (phonerec.hmm.branched_kernels)."""
    *results, exact = scaled_forward_backward(emissions, lengths, weights, graphs, no_path, counts)
    results = [r.to(emissions.dtype) for r in results]
    redo = torch.nonzero(~exact).flatten()
    if len(redo):
        redone = log_space_forward_backward(
            emissions[redo],
            lengths[redo],
            type(weights)(weights.arcs[:, redo], weights.start[redo], weights.end[redo]),
            _select(graphs, redo),
            floor,
            no_path,
            counts,
        )
        results[0][redo] = redone[0]
        results[1][redo] = redone[1]
        results[2][:, redo] = redone[2]
        results[3][redo] = redone[3]
        results[4][redo] = redone[4]
    return tuple(results)


def _select(graphs, rows: torch.Tensor):
    """The utterances `rows` of a padded batch of graphs (GraphBatch or BranchedBatch), for the kernels (which read
    states, sizes and a branched batch's predecessors)."""
    fields = {name: getattr(graphs, name) for name in graphs.__dataclass_fields__}
    for name, value in fields.items():
        if isinstance(value, torch.Tensor) and value.dim() == 3:
            fields[name] = value[:, rows]
        elif isinstance(value, torch.Tensor):
            fields[name] = value[rows]
    return type(graphs)(**fields)


def scaled_forward_backward(emissions, lengths, weights, graphs, no_path: float, counts: bool):
    """The scaled kernel alone, computing in float64: forward_backward's results (the occupations in the
    emissions' dtype, the rest in float64) and `exact` (B,) (False: redo in log space)."""
    if isinstance(graphs, BranchedBatch):
        from phonerec.hmm import branched_kernels

        return branched_kernels.scaled_forward_backward(emissions, lengths, weights, graphs, no_path, counts)
    n, sizes = graphs.n, graphs.sizes
    threaded = _threaded(len(emissions))
    lengths, sizes, scores = _numpy(lengths.long()), _numpy(sizes.long()), _numpy(emissions)
    probs, shift = _probabilities(scores, lengths, sizes, no_path)
    out = _scaled_outputs(probs, scores.dtype)
    exact = np.zeros(len(probs), dtype=np.bool_)
    kernel = _scaled_threads if threaded else _scaled_serial
    kernel(
        probs,
        shift,
        *(_numpy(t) for t in (weights.arcs, weights.start, weights.end)),
        lengths,
        sizes,
        n,
        no_path,
        counts,
        out,
        exact,
    )
    return (*(torch.from_numpy(a) for a in out), torch.from_numpy(exact))


def log_space_forward_backward(emissions, lengths, weights, graphs, floor: float, no_path: float, counts: bool):
    """The log-space kernel alone: exact at any range, and slower."""
    if isinstance(graphs, BranchedBatch):
        from phonerec.hmm import branched_kernels

        return branched_kernels.log_space_forward_backward(emissions, lengths, weights, graphs, floor, no_path, counts)
    n, sizes = graphs.n, graphs.sizes
    _threaded(len(emissions))
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
