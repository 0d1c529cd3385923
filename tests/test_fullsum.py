"""The batched forward-backward over alignment graphs against brute-force summation over all paths, finite
differences and autograd; Viterbi's best path never scores above the sum; the CTC loss on it against torch's."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchaudio
from conftest import graph_paths, path_transition_score

from phonerec.hmm.align import Topology, build_graph, viterbi_align
from phonerec.hmm.fullsum import ctc_graph, ctc_loss, forward_loglik, fullsum_loglik, occupations
from phonerec.hmm.transitions import Transitions

CASES = [([2, 3], [0]), ([4], None), ([2, 5, 3], [1]), ([3, 3], [0])]  # (phones, word ends)


def random_transitions(topo, seed, learn=False):
    """Transition probabilities far from uniform, different for every state."""
    transitions = Transitions(topo.num_states, learn=learn).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        transitions.state_logits.copy_(torch.randn(topo.num_states, 2, generator=gen, dtype=torch.float64))
        transitions.silence_logits.copy_(torch.randn(2, generator=gen, dtype=torch.float64))
    return transitions


def brute_force(log_probs, graph, topo, transitions=None):
    """log p and the state occupations by summing over every path."""
    frames, n = log_probs.shape[0], topo.states_per_phone
    paths = graph_paths(graph, n, frames)
    if not paths:
        return float("-inf"), torch.zeros_like(log_probs)
    scores = torch.stack(
        [
            sum(log_probs[t, graph.states[j]] for t, j in enumerate(p))
            + (0.0 if transitions is None else path_transition_score(graph, n, p, transitions))
            for p in paths
        ]
    )
    loglik = torch.logsumexp(scores, 0)
    occupation = torch.zeros_like(log_probs)
    for p, score in zip(paths, scores, strict=True):
        for t, j in enumerate(p):
            occupation[t, graph.states[j]] += (score - loglik).exp()
    return loglik.item(), occupation


def problem(states_per_phone, frames_list, seed=0):
    torch.manual_seed(seed)
    topo = Topology(num_phones=6, states_per_phone=states_per_phone)
    graphs = [build_graph(phones, topo, ends) for phones, ends in CASES]
    lengths = torch.tensor(frames_list)
    log_probs = torch.randn(len(CASES), max(frames_list), topo.num_states, dtype=torch.float64).log_softmax(-1)
    return topo, graphs, lengths, log_probs


@pytest.mark.parametrize("states_per_phone", [1, 2])
@pytest.mark.parametrize("frames_list", [[3, 7, 5, 8], [8, 4, 6, 6]])
@pytest.mark.parametrize("with_transitions", [False, True])
def test_forward_backward_equals_sum_over_all_paths(states_per_phone, frames_list, with_transitions):
    topo, graphs, lengths, log_probs = problem(states_per_phone, frames_list)
    transitions = random_transitions(topo, seed=3) if with_transitions else None
    loglik, occupation = occupations(log_probs, lengths, graphs, topo, transitions)
    by_autograd = forward_loglik(log_probs, lengths, graphs, topo, transitions)
    assert torch.equal(torch.isinf(by_autograd), torch.isinf(loglik))
    for b, graph in enumerate(graphs):
        frames = int(lengths[b])
        expected, expected_occupation = brute_force(log_probs[b, :frames], graph, topo, transitions)
        if expected == float("-inf"):  # fewer frames than the graph needs: reported, no gradient
            assert loglik[b] == float("-inf") and not occupation[b].any()
            continue
        assert loglik[b].item() == pytest.approx(expected, rel=1e-12)
        assert by_autograd[b].item() == pytest.approx(expected, rel=1e-12)
        assert torch.allclose(occupation[b, :frames], expected_occupation, atol=1e-12)
        assert not occupation[b, frames:].any()  # nothing past the length
        assert torch.allclose(occupation[b, :frames].sum(1), torch.ones(frames, dtype=torch.float64))


@pytest.mark.parametrize("states_per_phone", [1, 2])
def test_gradients_match_finite_differences_and_autograd(states_per_phone):
    topo, graphs, lengths, log_probs = problem(states_per_phone, [6, 7, 6, 8], seed=1)  # all traversable
    log_probs = log_probs.detach().requires_grad_()
    explicit = lambda x: fullsum_loglik(x, lengths, graphs, topo)  # noqa: E731
    by_autograd = lambda x: forward_loglik(x, lengths, graphs, topo)  # noqa: E731
    assert torch.autograd.gradcheck(explicit, (log_probs,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(by_autograd, (log_probs,), eps=1e-6, atol=1e-6)
    weights = torch.rand(len(graphs), dtype=torch.float64)
    (grad_explicit,) = torch.autograd.grad((explicit(log_probs) * weights).sum(), log_probs)
    (grad_autograd,) = torch.autograd.grad((by_autograd(log_probs) * weights).sum(), log_probs)
    assert torch.allclose(grad_explicit, grad_autograd, atol=1e-10)


class TransitionLogits:
    """The transitions' log-probabilities as a function of given logits, for gradcheck."""

    def __init__(self, state_logits, silence_logits):
        self.state_logits, self.silence_logits = state_logits, silence_logits

    log_probs = Transitions.log_probs


@pytest.mark.parametrize("states_per_phone", [1, 2])
def test_transition_gradients_match_finite_differences_and_autograd(states_per_phone):
    """The explicit backward's arc counts, through the softmax to the transitions' logits, against finite
    differences and autograd through the forward recursion."""
    topo, graphs, lengths, log_probs = problem(states_per_phone, [6, 7, 6, 8], seed=2)
    start = random_transitions(topo, seed=4)
    logits = (
        start.state_logits.detach().clone().requires_grad_(),
        start.silence_logits.detach().clone().requires_grad_(),
    )
    weights = torch.rand(len(graphs), dtype=torch.float64)
    explicit = lambda *x: fullsum_loglik(log_probs, lengths, graphs, topo, TransitionLogits(*x)) * weights  # noqa: E731
    by_autograd = lambda *x: forward_loglik(log_probs, lengths, graphs, topo, TransitionLogits(*x)) * weights  # noqa: E731
    assert torch.autograd.gradcheck(explicit, logits, eps=1e-6, atol=1e-6)
    grads_explicit = torch.autograd.grad(explicit(*logits).sum(), logits)
    grads_autograd = torch.autograd.grad(by_autograd(*logits).sum(), logits)
    for ours, reference in zip(grads_explicit, grads_autograd, strict=True):
        assert torch.allclose(ours, reference, atol=1e-10)


def test_viterbi_score_never_above_the_sum():
    for seed in range(5):
        topo, graphs, lengths, log_probs = problem(2, [9, 12, 10, 7], seed=seed)
        _, best = viterbi_align(log_probs, lengths, graphs, topo)
        total = forward_loglik(log_probs, lengths, graphs, topo)
        feasible = torch.isfinite(best)
        assert torch.equal(feasible, torch.isfinite(total)) and feasible.any()
        assert (best[feasible] <= total[feasible] + 1e-9).all()
        # and within log(number of paths) of it
        paths = [len(graph_paths(g, topo.states_per_phone, int(t))) for g, t in zip(graphs, lengths, strict=True)]
        for b in feasible.nonzero().flatten().tolist():
            assert total[b] <= best[b] + math.log(paths[b]) + 1e-9


def test_untraversable_utterance_has_no_path_and_a_zero_gradient_in_float32():
    topo = Topology(num_phones=6, states_per_phone=2)
    graphs = [build_graph([2, 3, 4], topo, [0, 1]), build_graph([2], topo)]  # 6 and 2 non-optional nodes
    lengths = torch.tensor([4, 4])
    log_probs = torch.randn(2, 4, topo.num_states).log_softmax(-1).requires_grad_()
    for loglik_of in (fullsum_loglik, forward_loglik):
        loglik = loglik_of(log_probs, lengths, graphs, topo)
        assert loglik[0] == float("-inf") and torch.isfinite(loglik[1])
        (grad,) = torch.autograd.grad(loglik[torch.isfinite(loglik)].sum(), log_probs)
        assert torch.isfinite(grad).all() and not grad[0].any() and grad[1].sum().item() == pytest.approx(4, rel=1e-5)


def ctc_problems(seed=0):
    """Random CTC problems: repeated labels, a single label, lengths at the feasibility edge (T = L + repeats)
    and below it."""
    gen = torch.Generator().manual_seed(seed)
    targets = [[1, 2, 2, 3], [4], [2, 2, 2], [1, 3, 1, 4, 2], [3, 3], [1, 2]]
    lengths = torch.tensor([9, 5, 5, 12, 3, 1])  # [2, 2, 2] needs 5 frames, [3, 3] needs 3: the edge; [1, 2] 1: too few
    logits = torch.randn(len(targets), int(lengths.max()), 5, generator=gen, dtype=torch.float64)
    return targets, lengths, logits


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_own_ctc_loss_equals_torch_value_and_gradient(reduction):
    targets, lengths, logits = ctc_problems()
    flat = torch.tensor([p for t in targets for p in t])
    target_lengths = torch.tensor([len(t) for t in targets])
    for zero_infinity in (True, False):
        ours_in = logits.clone().requires_grad_()
        torch_in = logits.clone().requires_grad_()
        ours = ctc_loss(ours_in.log_softmax(-1), lengths, targets, reduction=reduction, zero_infinity=zero_infinity)
        theirs = F.ctc_loss(
            torch_in.log_softmax(-1).transpose(0, 1),
            flat,
            lengths,
            target_lengths,
            reduction=reduction,
            zero_infinity=zero_infinity,
        )
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=0) or torch.equal(ours, theirs)  # inf == inf
        if not zero_infinity:  # torch's gradient of an infinite loss is not defined
            continue
        ours.sum().backward()
        theirs.sum().backward()
        assert torch.allclose(ours_in.grad, torch_in.grad, rtol=1e-6, atol=1e-12)


def test_own_ctc_gradient_matches_finite_differences_and_its_best_path_forced_align():
    targets, lengths, logits = ctc_problems(seed=1)
    keep = [0, 1, 2, 3, 4]  # traversable
    targets, lengths, logits = [targets[k] for k in keep], lengths[keep], logits[keep]
    log_probs = logits.log_softmax(-1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: ctc_loss(x, lengths, targets, reduction="none"), (log_probs,), eps=1e-6, atol=1e-6
    )
    graphs = [ctc_graph(t) for t in targets]
    alignment, _ = viterbi_align(log_probs.detach(), lengths, graphs, Topology(num_phones=5))
    for b, t in enumerate(targets):
        frames = int(lengths[b])
        expected, _ = torchaudio.functional.forced_align(
            log_probs.detach()[b : b + 1, :frames].float(), torch.tensor([t], dtype=torch.int32), blank=0
        )
        assert alignment[b, :frames].tolist() == expected[0].tolist()


def test_ctc_graph_forbids_the_jump_between_equal_labels_only():
    topo = Topology(num_phones=5)
    log_probs = torch.zeros(1, 2, 5, dtype=torch.float64)  # every path scores 0: log p = log(number of paths)
    loglik = forward_loglik(log_probs, torch.tensor([2]), [ctc_graph([2, 2])], topo)
    assert loglik.item() == float("-inf")  # [2, 2] needs a blank between: 3 frames
    loglik = forward_loglik(log_probs, torch.tensor([2]), [ctc_graph([2, 3])], topo)
    assert loglik.item() == pytest.approx(0.0)  # the one path 2, 3
