"""The gated-feedback stacks (phonerec.model.gated_feedback) against a step-by-step reference written from the
equations of its docstring (Chung et al. 2015), in float64: outputs, and the hand-written backward pass's gradients
against autograd through the reference and against finite differences (gradcheck); the bidirectional model is its
two stacks run by hand, one over each utterance, one over it reversed; padding never reaches a valid output."""

import pytest
import torch

from phonerec.base.config import load_config
from phonerec.base.errors import RecipeError
from phonerec.base.schema import GF_CELLS, GF_GATES
from phonerec.model.gated_feedback import GatedFeedbackStack
from phonerec.model.recurrent import RecurrentAcousticModel
from phonerec.model.time_axis import reverse_index

DIM, HIDDEN = 4, 5
LENGTHS = [9, 4, 6]


def reference_stack(x: torch.Tensor, w: dict, cell: str, layers: int) -> torch.Tensor:
    """One direction's stack over x (T, D), frame by frame, layer by layer, as the equations say: its top layer's
    states (T, H)."""
    h = [x.new_zeros(HIDDEN) for _ in range(layers)]
    c = [x.new_zeros(HIDDEN) for _ in range(layers)]
    top = []
    for t in range(x.size(0)):
        h_star = torch.cat(h)  # all layers' states at t-1
        new_h, new_c = [], []
        below = x[t]
        for j in range(layers):
            gated_sum = sum(
                torch.sigmoid(w["w_g"][i][j] @ below + w["u_g"][i][j] @ h_star + w["b_g"][i][j]) * (w["U"][i][j] @ h[i])
                for i in range(layers)
            )
            pre = w["W"][j] @ below + w["b"][j]  # the own-state gates' rows, then the candidate's
            own = pre.numel() - HIDDEN
            own_pre, candidate_in = pre[:own] + w["U_own"][j] @ h[j], pre[own:]
            if cell == "gf_rnn":
                h_j, c_j = torch.tanh(candidate_in + gated_sum), c[j]
            elif cell == "gf_lstm":
                in_gate, forget, out_gate = torch.sigmoid(own_pre).chunk(3)
                c_j = forget * c[j] + in_gate * torch.tanh(candidate_in + gated_sum)
                h_j = out_gate * torch.tanh(c_j)
            else:  # gf_gru
                update, reset = torch.sigmoid(own_pre).chunk(2)
                h_j, c_j = (1 - update) * h[j] + update * torch.tanh(candidate_in + reset * gated_sum), c[j]
            new_h.append(h_j)
            new_c.append(c_j)
            below = h_j
        h, c = new_h, new_c
        top.append(h[-1])
    return torch.stack(top)


def stack_and_batch(cell: str, gate: str, layers: int, dropout: float = 0.0, lengths=LENGTHS, hidden_size=HIDDEN):
    torch.manual_seed(0)
    stack = GatedFeedbackStack(cell, DIM, hidden_size, layers, gate, dropout).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(len(lengths), max(lengths), DIM, generator=generator, dtype=torch.float64)
    for k, n in enumerate(lengths):
        x[k, n:] = 1e3  # padding that would show wherever it reached
    return stack, x, reverse_index(torch.tensor(lengths), max(lengths))


@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("gate", GF_GATES)
@pytest.mark.parametrize("cell", GF_CELLS)
def test_equals_the_equations_run_frame_by_frame_in_each_direction(cell, gate, layers):
    stack, x, rev_index = stack_and_batch(cell, gate, layers)
    x.requires_grad_(True)
    out = stack(x, rev_index)  # the hand-written backward pass
    weights = [stack.equation_weights(d) for d in (0, 1)]  # views of the parameters: autograd reaches them
    reference = [
        torch.cat(
            [
                reference_stack(x[k, :n], weights[0], cell, layers),
                reference_stack(x[k, :n].flip(0), weights[1], cell, layers).flip(0),
            ],
            dim=-1,
        )
        for k, n in enumerate(LENGTHS)
    ]
    for k, n in enumerate(LENGTHS):
        torch.testing.assert_close(out[k, :n], reference[k], atol=1e-12, rtol=0)
    assert torch.isfinite(out).all()
    # Gradients of a weighted sum of the valid outputs: the hand-written pass against autograd through the reference.
    generator = torch.Generator().manual_seed(2)
    weight_of = [torch.randn(n, 2 * HIDDEN, generator=generator, dtype=torch.float64) for n in LENGTHS]
    inputs = [x, *stack.parameters()]
    mine = torch.autograd.grad(sum((out[k, :n] * weight_of[k]).sum() for k, n in enumerate(LENGTHS)), inputs)
    theirs = torch.autograd.grad(sum((r * w).sum() for r, w in zip(reference, weight_of, strict=True)), inputs)
    for name, a, b in zip(["x", *(n for n, _ in stack.named_parameters())], mine, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10, msg=name)
    assert float(mine[0][0, LENGTHS[0] :].abs().sum()) == 0 and float(mine[0][1, LENGTHS[1] :].abs().sum()) == 0


@pytest.mark.parametrize("gate", GF_GATES)
@pytest.mark.parametrize("cell", GF_CELLS)
def test_gradients_match_finite_differences_with_dropout(cell, gate):
    """gradcheck of the whole stack (inputs and every weight) with dropout's masks drawn the same on each call."""
    stack, x, rev_index = stack_and_batch(cell, gate, layers=2, dropout=0.4, lengths=[4, 2], hidden_size=3)
    stack.train()
    x.requires_grad_(True)
    names = [name for name, _ in stack.named_parameters()]

    def run(x, *parameters):
        torch.manual_seed(3)  # the same dropout masks each call
        return torch.func.functional_call(stack, dict(zip(names, parameters, strict=True)), (x, rev_index))

    assert torch.autograd.gradcheck(run, (x, *(p.detach().requires_grad_(True) for p in stack.parameters())))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_a_scripted_stack_equals_the_eager_one():
    """Export scripts the stack (tracing would unroll the frame loop to one length): the same outputs."""
    stack, x, rev_index = stack_and_batch("gf_lstm", "vector", layers=2)
    scripted = torch.jit.script(stack.eval())
    with torch.no_grad():
        torch.testing.assert_close(scripted(x, rev_index), stack(x, rev_index), atol=1e-12, rtol=0)


def test_a_projection_is_refused_with_a_gated_feedback_cell():
    with pytest.raises(ValueError, match="no projection in a gf_gru stack"):
        RecurrentAcousticModel(DIM, 3, num_layers=2, hidden_size=HIDDEN, projection_size=4, cell="gf_gru")
    with pytest.raises(RecipeError, match="model.cell=gf_lstm, model.projection_size=8: a gated-feedback stack"):
        load_config(["model.cell=gf_lstm", "model.projection_size=8"])
    with pytest.raises(RecipeError, match="model.cell=gf_cell: expected one of lstm, gru"):
        load_config(["model.cell=gf_cell"])
