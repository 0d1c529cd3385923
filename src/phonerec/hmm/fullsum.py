"""Full-sum HMM criterion: log p(X | graph) summed over every path, by a batched forward-backward in log space.

For an utterance of T frames with frame scores y_t(s) (log-posteriors, or scaled log-likelihoods) and the nodes j
of its alignment graph (align.build_graph), node j carrying HMM state s_j, with arcs i -> j for stay (j -> j), next
(j - 1 -> j) and the jump over an optional silence block (j - n - 1 -> j), and no transition weights:

    alpha_0(j) = y_0(s_j)                                   for the start nodes j
    alpha_t(j) = y_t(s_j) + logsumexp_{i -> j} alpha_{t-1}(i)
    beta_{T-1}(i) = 0                                       for the end nodes i
    beta_t(i)  = logsumexp_{i -> j} (y_{t+1}(s_j) + beta_{t+1}(j))
    log p(X | graph) = logsumexp_{j end} alpha_{T-1}(j)
    gamma_t(j) = exp(alpha_t(j) + beta_t(j) - log p(X | graph))          (occupation of node j at frame t)

The gradient of log p(X | graph) with respect to y_t(s) is the occupation of state s at frame t,
sum_{j: s_j = s} gamma_t(j) (as HMMGradients.jl derives it): `FullSumLogLik` returns it from the explicit backward
pass, `forward_loglik` leaves it to autograd through the forward recursion. Both run over a padded batch of graphs,
vectorised over utterances and nodes, looping over frames only.

CTC is the same sum over another graph (`ctc_graph`): blank, l_1, blank, l_2, ..., blank, the blanks optional
and the jump over a blank forbidden between equal labels; `ctc_loss` is its negative log-likelihood, as
torch.nn.functional.ctc_loss computes it.

Log space uses a finite floor (`FLOOR`) instead of -inf: logsumexp over arcs that are all -inf has a NaN gradient,
and an utterance with fewer frames than its graph needs must come out as "no path" with a zero gradient, not NaN.
"""

import torch

from phonerec.hmm.align import Graph, Topology, node_emissions, pad_graphs, predecessors, successors

FLOOR = -1.0e30  # log(0); sums of FLOOR with any frame score stay below NO_PATH
NO_PATH = -1.0e29  # a log-likelihood below this means the graph cannot be traversed in the utterance's frames


def _graph_tensors(log_probs: torch.Tensor, graphs: list[Graph], topo: Topology):
    states, skip_in, start, end, valid = pad_graphs(graphs, topo.states_per_phone, log_probs.device)
    return states, skip_in, start, end, node_emissions(log_probs, states, valid, FLOOR)


def _alphas(emissions: torch.Tensor, lengths: torch.Tensor, skip_in: torch.Tensor, start: torch.Tensor, n: int):
    """The forward recursion: alpha_t for every frame (B, T, W); frames past a length repeat the last one."""
    alpha = emissions[:, 0].masked_fill(~start, FLOOR)
    alphas = [alpha]
    for t in range(1, emissions.shape[1]):
        arrived = torch.logsumexp(predecessors(alpha, skip_in, n, FLOOR), dim=0) + emissions[:, t]
        alpha = torch.where((t < lengths).unsqueeze(1), arrived.clamp(min=FLOOR), alpha)
        alphas.append(alpha)
    return torch.stack(alphas, dim=1)


def _final_loglik(last_alpha: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    loglik = torch.logsumexp(last_alpha.masked_fill(~end, FLOOR), dim=1)
    return torch.where(loglik < NO_PATH, torch.full_like(loglik, float("-inf")), loglik)


def forward_loglik(log_probs: torch.Tensor, lengths: torch.Tensor, graphs: list[Graph], topo: Topology) -> torch.Tensor:
    """log p(X | graph) per utterance (B,), differentiable by autograd; -inf (with a zero gradient) where the
    utterance has fewer frames than its graph needs. log_probs: (B, T, num_states)."""
    lengths = lengths.to(log_probs.device)
    _, skip_in, start, end, emissions = _graph_tensors(log_probs, graphs, topo)
    alphas = _alphas(emissions, lengths, skip_in, start, topo.states_per_phone)
    return _final_loglik(alphas[:, -1], end)


def forward_backward(
    log_probs: torch.Tensor, lengths: torch.Tensor, graphs: list[Graph], topo: Topology
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(X | graph) per utterance (B,) and the state occupations (B, T, num_states): the posterior probability
    of each HMM state at each frame, summed over the graph's nodes carrying it; 0 past each length and for an
    utterance without a path (whose log-likelihood is -inf)."""
    n = topo.states_per_phone
    with torch.no_grad():
        lengths = lengths.to(log_probs.device)
        states, skip_in, start, end, emissions = _graph_tensors(log_probs, graphs, topo)
        batch, frames, width = emissions.shape
        alphas = _alphas(emissions, lengths, skip_in, start, n)
        loglik = _final_loglik(alphas[:, -1], end)

        last = (lengths - 1).unsqueeze(1)
        beta = torch.zeros(batch, width, dtype=emissions.dtype, device=emissions.device).masked_fill(~end, FLOOR)
        init = beta
        betas = [beta]
        for t in range(frames - 2, -1, -1):
            ahead = successors(beta + emissions[:, t + 1], skip_in, n, FLOOR)
            beta = torch.where(t >= last, init, torch.logsumexp(ahead, dim=0).clamp(min=FLOOR))
            betas.append(beta)
        betas = torch.stack(betas[::-1], dim=1)

        found = torch.isfinite(loglik)
        gamma = (alphas + betas - torch.where(found, loglik, 0.0)[:, None, None]).exp()
        in_length = torch.arange(frames, device=gamma.device)[None, :] < lengths[:, None]
        gamma = gamma * (in_length & found[:, None]).unsqueeze(2)
        occupation = torch.zeros_like(log_probs)
        occupation.scatter_add_(2, states.unsqueeze(1).expand(batch, frames, width), gamma)
    return loglik, occupation


class FullSumLogLik(torch.autograd.Function):
    """log p(X | graph) per utterance, with the occupations of `forward_backward` as its gradient."""

    @staticmethod
    def forward(ctx, log_probs, lengths, graphs, topo):
        loglik, occupation = forward_backward(log_probs, lengths, graphs, topo)
        ctx.save_for_backward(occupation)
        return loglik

    @staticmethod
    def backward(ctx, grad_loglik):
        (occupation,) = ctx.saved_tensors
        return grad_loglik[:, None, None] * occupation, None, None, None


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
    nll = -FullSumLogLik.apply(log_probs, lengths, graphs, one_state_per_output)
    if zero_infinity:
        nll = torch.where(torch.isinf(nll), torch.zeros_like(nll), nll)
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    label_counts = torch.tensor([max(len(t), 1) for t in targets], dtype=nll.dtype, device=nll.device)
    return (nll / label_counts).mean()
