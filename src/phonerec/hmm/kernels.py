"""The frame loops of Viterbi and forward-backward over a padded batch of graphs, compiled by numba for the CPU.

They compute what the pure-torch recursions of phonerec.hmm.align.best_paths and phonerec.hmm.fullsum
.forward_backward compute (those stay as the references the tests hold these to, and as the path on a GPU),
from the same inputs: the arc weights (3, B, W) into each node (stay, next, skip over n nodes), start and end
weights (B, W), log 0 where there is no arc, and the node emissions (B, T, W), which Viterbi reads in place from
the frame scores (B, T, S) and each node's state. Torch's versions step all utterances and nodes
at once, a dozen tensor operations and allocations per frame; here each utterance is one pass over its own frames
and nodes, with one-byte back-pointers, utterances spread over numba's threads (as many as torch's:
`torch.get_num_threads()`).

The forward-backward runs on probabilities scaled per frame (Rabiner's scaling: each frame's forward and backward
vectors normalised to sum 1, the emissions divided by their frame's best), a few multiply-adds per arc where log
space needs an exp and a log. Scaled probabilities lose a path whose share of its frame falls below float64's
smallest normal number, and a lost path can matter later (a trained model's scores of one frame span thousands of
nats). So the kernel bounds what it may have lost: a product that underflows loses less than 2.2e-308, and what
a node lost at one frame weighs later as much as a path through that node would, which a second recursion on
the same arcs follows. Where the bound exceeds 1e-15 of the sums the results are made of, the utterance is
redone by the log-space kernel (`_forward_backward`), which is exact at any range, and so is one without a path.
Both give the same numbers to float64's precision; the scaled one is the fast path.
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
_SMALLEST_WEIGHT = -700.0  # log-weights below this underflow as probabilities: such an utterance goes to log space


@numba.njit(cache=True, parallel=True)
def _forward_backward_scaled(emissions, arcs, start, end, lengths, sizes, n, no_path, want_counts):
    """`_forward_backward` on scaled probabilities: each utterance's node emissions as exp(emission - its frame's
    best); arcs, start, end the log-weights. Returns its results and `exact` (B,): False where the
    bound on what underflow may have lost says the utterance must be redone in log space (its other results are
    then zero). An utterance without a path is one of those: the log-space kernel tells it apart.

    The bound is a second recursion beside each of alpha and beta, on the same arcs and emissions: every node a
    path can reach (tracked exactly, as booleans) takes in _LOSS at every frame, and the bound then grows and
    shrinks as the share of a path through that node would. At the end (forward) and at every frame (the
    occupations), it must stay below 1e-15 of the sum it bounds."""
    batch, frames, width = emissions.shape
    logliks = np.full(batch, -np.inf)
    exact = np.ones(batch, dtype=np.bool_)
    gamma = np.zeros((batch, frames, width))
    arc_counts = np.zeros((3, batch, width))
    start_counts = np.zeros((batch, width))
    end_counts = np.zeros((batch, width))
    for b in numba.prange(batch):
        length, size = lengths[b], sizes[b]
        if length < 1 or size < 1:
            exact[b] = False
            continue
        weight = np.zeros((3, size))
        has = np.zeros((3, size), dtype=np.bool_)
        start_p = np.zeros(size)
        end_p = np.zeros(size)
        tiny_weight = False
        for j in range(size):
            for k in range(3):
                if arcs[k, b, j] > no_path and (k != NEXT or j >= 1) and (k != SKIP or j >= n + 1):
                    weight[k, j] = math.exp(arcs[k, b, j])
                    has[k, j] = True
                    tiny_weight = tiny_weight or arcs[k, b, j] < _SMALLEST_WEIGHT
            if start[b, j] > no_path:
                start_p[j] = math.exp(start[b, j])
                tiny_weight = tiny_weight or start[b, j] < _SMALLEST_WEIGHT
            if end[b, j] > no_path:
                end_p[j] = math.exp(end[b, j])
                tiny_weight = tiny_weight or end[b, j] < _SMALLEST_WEIGHT
        if tiny_weight:
            exact[b] = False
            continue
        probs = np.empty((length, size))
        shift = np.empty(length)
        for t in range(length):
            best = no_path
            for j in range(size):
                best = max(best, emissions[b, t, j])
            shift[t] = best
            for j in range(size):
                probs[t, j] = math.exp(emissions[b, t, j] - best)

        # Forward: alpha[t] sums to 1, loglik gathers the normalisers; lost[t] bounds what underflow took.
        alpha = np.zeros((length, size))
        lost = np.zeros((length, size))
        reach = np.zeros(size, dtype=np.bool_)
        reached = np.zeros(size, dtype=np.bool_)
        loglik, failed = 0.0, False
        for t in range(length):
            total = 0.0
            for j in range(size):
                if t == 0:
                    value, bound, now = start_p[j], 0.0, start_p[j] > 0.0
                else:
                    value = alpha[t - 1, j] * weight[STAY, j]
                    bound = lost[t - 1, j] * weight[STAY, j]
                    now = reach[j] and has[STAY, j]
                    if j >= 1:
                        value += alpha[t - 1, j - 1] * weight[NEXT, j]
                        bound += lost[t - 1, j - 1] * weight[NEXT, j]
                        now = now or (reach[j - 1] and has[NEXT, j])
                    if j >= n + 1:
                        value += alpha[t - 1, j - n - 1] * weight[SKIP, j]
                        bound += lost[t - 1, j - n - 1] * weight[SKIP, j]
                        now = now or (reach[j - n - 1] and has[SKIP, j])
                alpha[t, j] = value * probs[t, j]
                lost[t, j] = bound * probs[t, j] + (_LOSS if now else 0.0)
                reached[j] = now
                total += alpha[t, j]
            reach, reached = reached, reach
            if not total > 1e-290:
                failed = True
                break
            scale = 1.0 / total
            for j in range(size):
                alpha[t, j] *= scale
                lost[t, j] *= scale
                if lost[t, j] > 1e290:
                    failed = True
            if failed:
                break
            loglik += math.log(total) + shift[t]
        final, final_lost = 0.0, 0.0
        if not failed:
            for j in range(size):
                final += alpha[length - 1, j] * end_p[j]
                final_lost += lost[length - 1, j] * end_p[j]
            failed = not final > 1e-290 or final_lost > _EXACT * final
        if failed:
            exact[b] = False
            continue
        loglik += math.log(final)

        # Backward: beta sums to 1, its bound beside it; gamma and the arc counts are normalised per frame (each
        # sums to 1 exactly).
        beta = np.zeros(size)
        beta_lost = np.zeros(size)
        ahead = np.zeros(size)  # e_{t+1}(j) beta_{t+1}(j)
        ahead_lost = np.zeros(size)
        total = 0.0
        for j in range(size):
            beta[j] = end_p[j]
            beta_lost[j] = _LOSS if end_p[j] > 0.0 else 0.0
            reach[j] = end_p[j] > 0.0
            total += beta[j]
        for j in range(size):
            beta[j] /= total
            beta_lost[j] /= total
        normaliser = total  # d_t: the sum beta_t had before it was normalised
        for t in range(length - 1, -1, -1):
            if t < length - 1:
                for j in range(size):
                    ahead[j] = probs[t + 1, j] * beta[j]
                    ahead_lost[j] = probs[t + 1, j] * beta_lost[j]
                total = 0.0
                for i in range(size):
                    value = ahead[i] * weight[STAY, i]
                    bound = ahead_lost[i] * weight[STAY, i]
                    now = reach[i] and has[STAY, i]
                    if i + 1 < size:
                        value += ahead[i + 1] * weight[NEXT, i + 1]
                        bound += ahead_lost[i + 1] * weight[NEXT, i + 1]
                        now = now or (reach[i + 1] and has[NEXT, i + 1])
                    if i + n + 1 < size:
                        value += ahead[i + n + 1] * weight[SKIP, i + n + 1]
                        bound += ahead_lost[i + n + 1] * weight[SKIP, i + n + 1]
                        now = now or (reach[i + n + 1] and has[SKIP, i + n + 1])
                    beta[i] = value
                    beta_lost[i] = bound + (_LOSS if now else 0.0)
                    reached[i] = now
                    total += value
                reach, reached = reached, reach
                if not total > 1e-290:
                    failed = True
                    break
                normaliser = total
                scale = 1.0 / total
                for i in range(size):
                    beta[i] *= scale
                    beta_lost[i] *= scale
                    if beta_lost[i] > 1e290:
                        failed = True
                if failed:
                    break
            overlap, overlap_lost = 0.0, 0.0  # g_t = sum_j alpha_t(j) beta_t(j), and a bound on its loss
            for j in range(size):
                overlap += alpha[t, j] * beta[j]
                overlap_lost += lost[t, j] * beta[j] + alpha[t, j] * beta_lost[j]
            if not overlap > 1e-290 or overlap_lost > _EXACT * overlap:
                failed = True
                break
            scale = 1.0 / overlap
            for j in range(size):
                gamma[b, t, j] = alpha[t, j] * beta[j] * scale
            if want_counts and t < length - 1:
                # xi_t(i -> j) = alpha_t(i) w(i -> j) e_{t+1}(j) beta_{t+1}(j) / (d_t g_t): summed over the arcs,
                # sum_i alpha_t(i) d_t beta_t(i) = d_t g_t
                scale = 1.0 / (normaliser * overlap)
                for j in range(size):
                    into = ahead[j] * scale
                    arc_counts[STAY, b, j] += alpha[t, j] * weight[STAY, j] * into
                    if j >= 1:
                        arc_counts[NEXT, b, j] += alpha[t, j - 1] * weight[NEXT, j] * into
                    if j >= n + 1:
                        arc_counts[SKIP, b, j] += alpha[t, j - n - 1] * weight[SKIP, j] * into
        if failed:
            exact[b] = False
            gamma[b] = 0.0
            arc_counts[:, b] = 0.0
            continue
        logliks[b] = loglik
        if want_counts:
            for j in range(size):
                if start_p[j] > 0.0:
                    start_counts[b, j] = gamma[b, 0, j]
                if end_p[j] > 0.0:
                    end_counts[b, j] = gamma[b, length - 1, j]
    return logliks, gamma, arc_counts, start_counts, end_counts, exact


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
    occupations; the arcs', starts' and ends' expected counts, zero unless `counts`), in emissions' dtype. By the
    scaled kernel; the utterances it cannot vouch for by the log-space one."""
    *results, exact = scaled_forward_backward(emissions, lengths, weights, n, sizes, no_path, counts)
    results = [r.to(emissions.dtype) for r in results]
    redo = torch.nonzero(~exact).flatten()
    if len(redo):
        redone = log_space_forward_backward(
            emissions[redo],
            lengths[redo],
            type(weights)(weights.arcs[:, redo], weights.start[redo], weights.end[redo]),
            n,
            sizes[redo],
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


def scaled_forward_backward(emissions, lengths, weights, n: int, sizes: torch.Tensor, no_path: float, counts: bool):
    """The scaled kernel alone, in float64: forward_backward's results and `exact` (B,) (False: redo in log
    space)."""
    _threads()
    found = _forward_backward_scaled(
        *(_numpy(t) for t in (emissions, weights.arcs, weights.start, weights.end)),
        _numpy(lengths.long()),
        _numpy(sizes.long()),
        n,
        no_path,
        counts,
    )
    return tuple(torch.from_numpy(a) for a in found)


def log_space_forward_backward(
    emissions, lengths, weights, n: int, sizes: torch.Tensor, floor: float, no_path: float, counts: bool
):
    """The log-space kernel alone: exact at any range, and slower."""
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
