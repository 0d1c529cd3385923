"""Full-sum HMM criterion: log p(X | graph) summed over every path, by a batched forward-backward in log space.

For an utterance of T frames with frame scores y_t(s) (log-posteriors, or scaled log-likelihoods) and the nodes j
of its alignment graph (align.build_graph), node j carrying HMM state s_j, with arcs i -> j for stay (j -> j), next
(j - 1 -> j) and the jump over an optional silence block (j - n - 1 -> j), each of log-weight w(i -> j), and
start and end log-weights a(j), z(j) (align.graph_weights: the transition log-probabilities, or all 0):

    alpha_0(j) = a(j) + y_0(s_j)
    alpha_t(j) = y_t(s_j) + logsumexp_{i -> j} (alpha_{t-1}(i) + w(i -> j))
    beta_{T-1}(i) = z(i)
    beta_t(i)  = logsumexp_{i -> j} (w(i -> j) + y_{t+1}(s_j) + beta_{t+1}(j))
    log p(X | graph) = logsumexp_j (alpha_{T-1}(j) + z(j))
    gamma_t(j) = exp(alpha_t(j) + beta_t(j) - log p(X | graph))          (occupation of node j at frame t)
    xi_t(i -> j) = exp(alpha_t(i) + w(i -> j) + y_{t+1}(s_j) + beta_{t+1}(j) - log p(X | graph))

The gradient of log p(X | graph) with respect to y_t(s) is the occupation of state s at frame t,
sum_{j: s_j = s} gamma_t(j), and with respect to w(i -> j) the arc's expected count sum_t xi_t(i -> j) (as
HMMGradients.jl derives them; a(j) and z(j) get gamma_0(j) and gamma_{T-1}(j)): `fullsum_loglik` returns them
from the explicit backward pass, `forward_loglik` leaves them to autograd through the forward recursion. Both run
over a padded batch of graphs, vectorised over utterances and nodes, looping over frames only.

CTC is the same sum over another graph (`ctc_graph`): blank, l_1, blank, l_2, ..., blank, the blanks optional
and the jump over a blank forbidden between equal labels; `ctc_loss` is its negative log-likelihood, as
torch.nn.functional.ctc_loss computes it.

Log space uses a finite floor (`FLOOR`) instead of -inf: logsumexp over arcs that are all -inf has a NaN gradient,
and an utterance with fewer frames than its graph needs must come out as "no path" with a zero gradient, not NaN.
"""

import torch

from phonerec.hmm.align import (
    ArcWeights,
    Graph,
    Topology,
    graph_weights,
    node_emissions,
    pad_any,
    predecessors,
    successors,
)

FLOOR = -1.0e30  # log(0); sums of FLOOR with any frame score stay below NO_PATH
NO_PATH = -1.0e29  # a log-likelihood below this means the graph cannot be traversed in the utterance's frames


def _alphas(emissions: torch.Tensor, lengths: torch.Tensor, weights: ArcWeights, graphs) -> torch.Tensor:
    """The forward recursion: alpha_t for every frame (B, T, W); frames past a length repeat the last one."""
    alpha = (emissions[:, 0] + weights.start).clamp(min=FLOOR)
    alphas = [alpha]
    for t in range(1, emissions.shape[1]):
        arrived = torch.logsumexp(predecessors(alpha, weights.arcs, graphs, FLOOR), dim=0) + emissions[:, t]
        alpha = torch.where((t < lengths).unsqueeze(1), arrived.clamp(min=FLOOR), alpha)
        alphas.append(alpha)
    return torch.stack(alphas, dim=1)


def _final_loglik(last_alpha: torch.Tensor, weights: ArcWeights) -> torch.Tensor:
    loglik = torch.logsumexp(last_alpha + weights.end, dim=1)
    return torch.where(loglik < NO_PATH, torch.full_like(loglik, float("-inf")), loglik)


def _problem(log_probs, lengths, graphs, topo, transitions):
    """The padded graphs, their arc weights (differentiable in the transitions) and node emissions."""
    batch = pad_any(graphs, topo.states_per_phone, log_probs.device)
    log_transitions = None if transitions is None else transitions.log_probs()
    weights = graph_weights(batch, log_transitions, FLOOR, log_probs.dtype)
    emissions = node_emissions(log_probs, batch.states, batch.valid, FLOOR)
    return batch, weights, emissions, lengths.to(log_probs.device)


def forward_loglik(
    log_probs: torch.Tensor, lengths: torch.Tensor, graphs: list[Graph], topo: Topology, transitions=None
) -> torch.Tensor:
    """log p(X | graph) per utterance (B,), differentiable by autograd (in log_probs and the transitions'
    parameters); -inf (with a zero gradient) where the utterance has fewer frames than its graph needs.
    log_probs: (B, T, num_states); transitions: a phonerec.hmm.transitions.Transitions, or None (arcs weigh 0)."""
    batch, weights, emissions, lengths = _problem(log_probs, lengths, graphs, topo, transitions)
    alphas = _alphas(emissions, lengths, weights, batch)
    return _final_loglik(alphas[:, -1], weights)


def forward_backward(
    emissions: torch.Tensor, lengths: torch.Tensor, weights: ArcWeights, graphs, arc_counts: bool = False
) -> tuple[torch.Tensor, torch.Tensor, ArcWeights | None]:
    """The forward-backward over a padded batch of graphs (GraphBatch or BranchedBatch): emissions (B, T, W) of
    each node (FLOOR at padding),
    the arc weights (FLOOR where there is no arc). Returns log p(X | graph) (B,), -inf where there is no path; the
    node occupations gamma (B, T, W), 0 past each length and for an utterance without a path; and with
    arc_counts, each arc's expected count (summed over frames), in the shape of the weights."""
    with torch.no_grad():
        batch, frames, width = emissions.shape
        alphas = _alphas(emissions, lengths, weights, graphs)
        loglik = _final_loglik(alphas[:, -1], weights)
        found = torch.isfinite(loglik)
        log_z = torch.where(found, loglik, 0.0)

        last = (lengths - 1).unsqueeze(1)
        init = weights.end.clamp(min=FLOOR)
        beta, betas = init, [init]
        counts = torch.zeros_like(weights.arcs) if arc_counts else None
        for t in range(frames - 2, -1, -1):
            arriving = beta + emissions[:, t + 1]  # node j at frame t + 1, and all that follows it
            if arc_counts:  # the posterior of each arc into j between frames t and t + 1
                into = predecessors(alphas[:, t], weights.arcs, graphs, FLOOR) + arriving - log_z[:, None]
                counts += into.exp() * ((t < last) & found[:, None])
            ahead = successors(arriving + weights.arcs, graphs, FLOOR)
            beta = torch.where(t >= last, init, torch.logsumexp(ahead, dim=0).clamp(min=FLOOR))
            betas.append(beta)
        betas = torch.stack(betas[::-1], dim=1)

        gamma = (alphas + betas - log_z[:, None, None]).exp()
        in_length = torch.arange(frames, device=gamma.device)[None, :] < lengths[:, None]
        gamma = gamma * (in_length & found[:, None]).unsqueeze(2)
        if not arc_counts:
            return loglik, gamma, None
        rows = torch.arange(batch, device=gamma.device)
        end_counts = gamma[rows, (lengths - 1).clamp(min=0)] * (weights.end > NO_PATH)
        start_counts = gamma[:, 0] * (weights.start > NO_PATH)
    return loglik, gamma, ArcWeights(counts, start_counts, end_counts)


def _forward_backward(emissions, lengths, weights: ArcWeights, graphs, arc_counts: bool):
    """forward_backward, by the compiled kernel on the CPU (phonerec.hmm.kernels: on probabilities scaled per frame,
    in log space where those could have lost what matters) and by torch elsewhere."""
    if emissions.device.type != "cpu":
        return forward_backward(emissions, lengths, weights, graphs, arc_counts)
    from phonerec.hmm import kernels  # numba compiles on first use: only where it runs

    loglik, gamma, arcs, start, end = kernels.forward_backward(
        emissions, lengths, weights, graphs, FLOOR, NO_PATH, arc_counts
    )
    return loglik, gamma, ArcWeights(arcs, start, end) if arc_counts else None


def state_occupations(gamma: torch.Tensor, states: torch.Tensor, num_states: int) -> torch.Tensor:
    """(B, T, num_states) the node occupations summed over the nodes carrying each state."""
    batch, frames, width = gamma.shape
    occupation = gamma.new_zeros(batch, frames, num_states)
    return occupation.scatter_add_(2, states.unsqueeze(1).expand(batch, frames, width), gamma)


class _FullSum(torch.autograd.Function):
    """log p(X | graph) per utterance from the node emissions and arc weights, with the explicit backward pass:
    the gradient is the node occupations (for the emissions) and the arcs' expected counts (for their weights)."""

    @staticmethod
    def forward(ctx, emissions, arcs, start, end, lengths, graphs):
        weights = ArcWeights(arcs, start, end)
        need_counts = any(ctx.needs_input_grad[1:4])
        loglik, gamma, counts = _forward_backward(emissions, lengths, weights, graphs, need_counts)
        ctx.save_for_backward(gamma, *((counts.arcs, counts.start, counts.end) if need_counts else ()))
        return loglik

    @staticmethod
    def backward(ctx, grad_loglik):
        gamma, *counts = ctx.saved_tensors
        arc_grads = (None, None, None)
        if counts:
            arcs, start, end = counts
            per_utt = grad_loglik[:, None]
            arc_grads = (per_utt.unsqueeze(0) * arcs, per_utt * start, per_utt * end)
        return grad_loglik[:, None, None] * gamma, *arc_grads, None, None


def fullsum_loglik(
    log_probs: torch.Tensor, lengths: torch.Tensor, graphs: list[Graph], topo: Topology, transitions=None
) -> torch.Tensor:
    """log p(X | graph) per utterance (B,), as forward_loglik, with the explicit backward pass: the gradient with
    respect to log_probs is the state occupations, and with respect to the transitions' log-probabilities their
    arcs' expected counts."""
    batch, weights, emissions, lengths = _problem(log_probs, lengths, graphs, topo, transitions)
    return _FullSum.apply(emissions, weights.arcs, weights.start, weights.end, lengths, batch)


def occupations(
    log_probs: torch.Tensor, lengths: torch.Tensor, graphs: list[Graph], topo: Topology, transitions=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(X | graph) per utterance (B,) and the state occupations (B, T, num_states): the posterior probability
    of each HMM state at each frame, summed over the graph's nodes carrying it; 0 past each length and for an
    utterance without a path (whose log-likelihood is -inf)."""
    with torch.no_grad():
        batch, weights, emissions, lengths = _problem(log_probs, lengths, graphs, topo, transitions)
        loglik, gamma, _ = _forward_backward(emissions, lengths, weights, batch, False)
    return loglik, state_occupations(gamma, batch.states, log_probs.shape[2])


def ctc_min_frames(phones: list[int]) -> int:
    """Frames a CTC path needs: one per label, plus a blank between equal neighbours."""
    return len(phones) + sum(1 for a, b in zip(phones, phones[1:], strict=False) if a == b)


def ctc_graph(labels: list[int], blank: int = 0) -> Graph:
    """CTC's topology for a label sequence, as a graph whose nodes carry output indices."""
    states, optional = [blank], [True]
    for label in labels:
        states += [label, blank]
        optional += [False, True]
    return Graph(states, optional, skip_between_equal=False)


def ctc_loss(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    targets: list[list[int]],
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """CTC's negative log-likelihood by the forward-backward above, with torch.nn.functional.ctc_loss's
    reductions ("mean": each utterance's loss divided by its label count, then the batch mean) and
    zero_infinity (an utterance too short for its labels gives 0 and no gradient, instead of inf).
    log_probs: (B, T, V), batch first."""
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction must be none, sum or mean, not {reduction!r}")
    graphs = [ctc_graph(t, blank) for t in targets]
    one_state_per_output = Topology(num_phones=log_probs.shape[2])  # the graphs' nodes index outputs directly
    nll = -fullsum_loglik(log_probs, lengths, graphs, one_state_per_output)
    if zero_infinity:
        nll = torch.where(torch.isinf(nll), torch.zeros_like(nll), nll)
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    label_counts = torch.tensor([max(len(t), 1) for t in targets], dtype=nll.dtype, device=nll.device)
    return (nll / label_counts).mean()
