"""Gated-feedback recurrent stacks (Chung, Gulcehre, Cho, Bengio 2015, "Gated Feedback Recurrent Neural
Networks", arXiv:1502.02367, section 3), bidirectional: `model.cell=gf_rnn | gf_gru | gf_lstm`.

In a stack of L layers every layer j at time t reads every layer i at t-1, each connection scaled by a global
reset gate computed from the layer's input and all layers' previous states:

    h*_{t-1}    = [h^1_{t-1}; ...; h^L_{t-1}]                      (all layers' states at t-1, joined)
    h^0_t       = x_t                                              (the input of the first layer)
    g^{i->j}    = sigmoid(w_g^{i->j} h^{j-1}_t + u_g^{i->j} h*_{t-1} + b_g^{i->j})
    s^j_t       = sum_{i=1..L} g^{i->j} * U^{i->j} h^i_{t-1}       (the gated feedback into layer j)

    gf_rnn:     h^j_t = tanh(W^j h^{j-1}_t + s^j_t + b^j)
    gf_lstm:    i, f, o = sigmoid(W_{i,f,o}^j h^{j-1}_t + U_{i,f,o}^j h^j_{t-1} + b_{i,f,o}^j)  (the layer's own state)
                c~^j_t = tanh(W_c^j h^{j-1}_t + s^j_t + b_c^j)    (only the candidate takes the gated sum)
                c^j_t = f * c^j_{t-1} + i * c~^j_t,   h^j_t = o * tanh(c^j_t)
    gf_gru:     z, r = sigmoid(W_{z,r}^j h^{j-1}_t + U_{z,r}^j h^j_{t-1} + b_{z,r}^j)          (the layer's own state)
                h~^j_t = tanh(W^j h^{j-1}_t + r * s^j_t + b^j)
                h^j_t = (1 - z) * h^j_{t-1} + z * h~^j_t          (the paper's z: the share of the new candidate)

The paper's section 3, as its published summaries and RecurrentNN.jl's code (src/gflstm.jl, src/gfgru.jl, read for
this) state it: the global gates read the layer's input and all previous states; in the LSTM only the candidate
takes the gated sum; in the GRU the reset gate scales the gated sum. Those equations have no biases; here every
affine map has one, as in RecurrentNN.jl. The gate g^{i->j} is a scalar in the paper (w_g, u_g vectors) and a
vector of the layer's size in RecurrentNN.jl (w_g, u_g matrices, an elementwise product): `model.gf_gate=scalar |
vector`. The stack's output is its top layer h^L_t, as a stacked RNN's.

Bidirectional: a forward stack over the utterance and a backward stack over it reversed within its length (padding
stays at the end, so it never reaches a valid frame), each with its own weights and gates, their top layers joined
at the output. A layer cannot read both directions of the layer below, as a stacked BLSTM's layers do: layer j's
backward state at t would need layer j-1's forward state at t, which needs the feedback from layer j's forward
state at t-1, ..., and so each direction's feedback would run through the other: a cycle, not a recurrence.

All layers have one hidden size (the feedback U^{i->j} maps layer i's size to layer j's, and the model config has
one `hidden_size`); `projection_size` is refused with a GF cell (a projection between layers would sit inside the
feedback loop). Dropout (model.dropout) masks the input each layer above the first reads from the layer below,
as between the standard cells' layers; the feedback is not masked.

Speed (benchmarks/bench_cells.py): the frame loop cannot be one fused kernel per layer, since layer j at t needs
the layers above it at t-1. Per frame it runs one batched product for every layer's feedback, own-state gates
and global-gate terms of both directions, and one per layer above the first for its input (both directions
stacked on a leading axis, `torch.bmm`); the first layer's input is projected for all frames before the loop.
The stack is written for `torch.jit.script`, which export uses (tracing would unroll the loop to one length).

Weights, both directions stacked on axis 0 (0 forward, 1 backward); `equation_weights` names the blocks:
    input_weight (2, D, N_in), input_bias (2, N_in):            layer 1's W, w_g and biases
    upper_weight (L-1, 2, H, N_in), upper_bias (L-1, 2, N_in):  layers 2..L's
        N_in columns: [own-state gates (G*H) | candidate (H) | w_g^{i->j} for i = 1..L (L*g)]
    recurrent_weight (2, L, H, N_rec), row block i reads h^i_{t-1}:
        N_rec columns: [U^{i->j} for j = 1..L (L*H) | own-state gates U^i (G*H) | u_g^{k->j} for j, k (L*L*g)]
with G = 0 (rnn), 2 (gru: z, r), 3 (lstm: i, f, o) and g = 1 (scalar) or H (vector).
"""

import functools
import math
import warnings

import torch
from torch import nn

from phonerec.base.schema import GF_CELLS, GF_GATES
from phonerec.model.time_axis import gather_time

OWN_GATES = {"gf_rnn": 0, "gf_gru": 2, "gf_lstm": 3}


def run_stacks(
    first_input: list[torch.Tensor],
    upper_weight: torch.Tensor,
    upper_bias: torch.Tensor,
    recurrent_weight: torch.Tensor,
    masks: torch.Tensor,
    cell: str,
    gate_size: int,
    save: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Both directions' stacks over the frames: first_input[t] (2, B, N_in) is layer 1's W x_t + b; masks (T, L-1,
    2, B, H) the dropout of the layers' inputs (size 0 on axis 1: none). Returns the top layer's states (T, 2, B, H)
    and, with `save`, what the backward pass reads, each stacked over the frames: [h, c, own-state gates, global
    gates, candidates, gated feedback s, feedback products U^{i->j} h^i_{t-1}, upper layers' inputs]."""
    directions, layers, size, n_rec = recurrent_weight.shape
    batch = first_input[0].size(1)
    own = (3 if cell == "gf_lstm" else 2 if cell == "gf_gru" else 0) * size  # OWN_GATES (TorchScript reads no dict)
    gates_at = layers * size + own  # where the u_g columns start in a recurrent product
    recurrent = recurrent_weight.reshape(directions * layers, size, n_rec)
    upper_bias = upper_bias.unsqueeze(2)  # (L-1, 2, 1, N_in)
    h = first_input[0].new_zeros(directions, layers, batch, size)
    c = first_input[0].new_zeros(directions, layers, batch, size)
    saved: list[list[torch.Tensor]] = [[] for _ in range(8)]
    tops: list[torch.Tensor] = []
    for t in range(len(first_input)):
        rec = torch.bmm(h.reshape(directions * layers, batch, size), recurrent).view(directions, layers, batch, n_rec)
        gate_terms = rec[..., gates_at:].sum(1)  # u_g^{k->j} h*_{t-1}: (2, B, L*L*g), summed over the sources k
        new_h: list[torch.Tensor] = []
        new_c: list[torch.Tensor] = []
        own_gates: list[torch.Tensor] = []
        global_gates: list[torch.Tensor] = []
        candidates: list[torch.Tensor] = []
        gated_sums: list[torch.Tensor] = []
        belows: list[torch.Tensor] = []
        inputs = first_input[t]
        for j in range(layers):
            if j > 0:
                below = new_h[j - 1]
                if masks.size(1) > 0:
                    below = below * masks[t, j - 1]
                belows.append(below)
                inputs = torch.baddbmm(upper_bias[j - 1], below, upper_weight[j - 1])
            gates = torch.sigmoid(
                inputs[..., own + size :] + gate_terms[..., j * layers * gate_size : (j + 1) * layers * gate_size]
            )
            feedback = rec[..., j * size : (j + 1) * size]  # U^{i->j} h^i_{t-1}: (2, L sources, B, H)
            gated = (gates.view(directions, batch, layers, gate_size).transpose(1, 2) * feedback).sum(1)
            candidate_in = inputs[..., own : own + size]
            if cell == "gf_rnn":
                candidate = torch.tanh(candidate_in + gated)
                h_j = candidate
            else:
                own_j = torch.sigmoid(inputs[..., :own] + rec[:, j, :, layers * size : gates_at])
                own_gates.append(own_j)
                if cell == "gf_lstm":
                    in_gate, forget, out_gate = own_j.chunk(3, dim=-1)
                    candidate = torch.tanh(candidate_in + gated)
                    c_j = forget * c[:, j] + in_gate * candidate
                    new_c.append(c_j)
                    h_j = out_gate * torch.tanh(c_j)
                else:  # gf_gru
                    update, reset = own_j.chunk(2, dim=-1)
                    candidate = torch.tanh(candidate_in + reset * gated)
                    h_j = h[:, j] + update * (candidate - h[:, j])
            new_h.append(h_j)
            global_gates.append(gates)
            candidates.append(candidate)
            gated_sums.append(gated)
        h = torch.stack(new_h, 1)
        tops.append(new_h[-1])
        if cell == "gf_lstm":
            c = torch.stack(new_c, 1)
        if not save:
            continue
        saved[0].append(h)
        if cell == "gf_lstm":
            saved[1].append(c)
        if own > 0:
            saved[2].append(torch.stack(own_gates, 1))
        saved[3].append(torch.stack(global_gates, 1))
        saved[4].append(torch.stack(candidates, 1))
        saved[5].append(torch.stack(gated_sums, 1))
        saved[6].append(rec[..., : layers * size])
        if layers > 1:
            saved[7].append(torch.stack(belows))
    return torch.stack(tops), [torch.stack(s) if len(s) > 0 else h.new_zeros(0) for s in saved]


def by_frame_and_layer(x: torch.Tensor) -> list[torch.Tensor]:
    """x (T, 2, L, ...) as the list of its (2, ...) slices, frame t and layer j at index t * L + j; [] for an empty
    x (a factor the cell does not have)."""
    if x.dim() < 3:
        return []
    return x.transpose(1, 2).contiguous().flatten(0, 1).unbind(0)


def backward_stacks(
    grad_top: torch.Tensor,
    upper_weight: torch.Tensor,
    recurrent_weight: torch.Tensor,
    masks: torch.Tensor,
    saved: list[torch.Tensor],
    cell: str,
    gate_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """run_stacks' backward pass through time, from the gradient of its top states (T, 2, B, H) and what it saved:
    the gradients of first_input (2, B, T, N_in), upper_weight, upper_bias and recurrent_weight. Per frame only the
    products that carry the gradient back (to the previous frame's states, to the layer below); the weights'
    gradients are one product over all frames each, after the loop."""
    h, c, own_all, gates_all, cand_all, sums, feedback_all, below = saved
    frames, directions, layers, batch, size = h.shape
    n_rec = recurrent_weight.size(-1)
    own = own_all.size(-1) if own_all.numel() > 0 else 0
    gsize = gate_size
    recurrent_t = recurrent_weight.reshape(directions * layers, size, n_rec).transpose(1, 2).contiguous()
    upper_t = upper_weight.transpose(2, 3).contiguous()  # (L-1, 2, N_in, H)
    zeros = h.new_zeros(directions, layers, batch, size)
    # What the frame loop multiplies by, for all frames at once (few large operations instead of many small ones).
    h_prev_all = torch.cat([zeros.unsqueeze(0), h[:-1]])  # (T, 2, L, B, H)
    candidate_slope = 1 - cand_all * cand_all  # tanh'
    own_factor = own_all  # d(own-state gates' pre-activations) = [d of what each gate multiplies] * own_factor
    if cell == "gf_lstm":
        in_gate, forget, out_gate = own_all.chunk(3, dim=-1)
        tanh_c = torch.tanh(c)
        c_prev_all = torch.cat([zeros.unsqueeze(0), c[:-1]])
        own_factor = torch.cat([cand_all, c_prev_all, tanh_c], dim=-1) * own_all * (1 - own_all)
        candidate_factor = in_gate * candidate_slope  # d(candidate's pre-activation) = dc * this
        cell_factor = out_gate * (1 - tanh_c * tanh_c)  # dc = dc(t+1) * forget + dh * this
        keep = forget
        reset = own_factor.new_zeros(0)  # no reset gate
    elif cell == "gf_gru":
        update, reset = own_all.chunk(2, dim=-1)
        own_factor = torch.cat([cand_all - h_prev_all, sums], dim=-1) * own_all * (1 - own_all)
        candidate_factor = update * candidate_slope  # d(candidate's pre-activation) = dh * this
        cell_factor = 1 - update  # dh(t-1) gets dh * this directly
        keep = own_factor.new_zeros(0)  # no cell
    else:
        candidate_factor = candidate_slope
        cell_factor = keep = reset = own_factor.new_zeros(0)  # neither gates nor a cell
    # Global gates with the sources on axis 3: (T, 2, L layers j, L sources i, B, g), and their slope.
    gates_by_source = gates_all.view(frames, directions, layers, batch, layers, gsize).transpose(3, 4).contiguous()
    gate_slope = gates_by_source * (1 - gates_by_source)
    # Each frame and layer's slice as a list item (index t * L + j): indexing inside the loop costs an operation.
    # (A factor the cell does not have is empty, and so is its list.)
    own_factor_at = by_frame_and_layer(own_factor)
    candidate_factor_at = by_frame_and_layer(candidate_factor)
    cell_factor_at = by_frame_and_layer(cell_factor)
    keep_at = by_frame_and_layer(keep)
    reset_at = by_frame_and_layer(reset)
    gates_at = by_frame_and_layer(gates_by_source)  # (2, L sources, B, g)
    gate_slope_at = by_frame_and_layer(gate_slope)
    feedback_at = by_frame_and_layer(feedback_all.view(frames, directions, layers, batch, layers, size).movedim(4, 2))
    mask_at = masks.flatten(0, 1).unbind(0)  # index t * (L-1) + j - 1
    grad_top_at = grad_top.unbind(0)
    dh_next = zeros
    dc_next = [zeros[:, 0] for _ in range(layers)]
    n_in = own + size + layers * gsize
    d_inputs = h.new_empty(layers, frames, directions, batch, n_in)
    d_inputs_at = d_inputs.flatten(0, 1).unbind(0)  # index j * T + t
    d_recurrent = h.new_empty(frames, directions, layers, batch, n_rec)
    d_recurrent_at = d_recurrent.unbind(0)
    for t in range(frames - 1, -1, -1):
        d_feedback: list[torch.Tensor] = []
        d_own: list[torch.Tensor] = []
        d_gate_pre: list[torch.Tensor] = []
        dh_direct: list[torch.Tensor] = []
        d_below = zeros[:, 0]
        dh_from_next = dh_next.unbind(1)
        for j in range(layers - 1, -1, -1):
            at = t * layers + j
            dh = dh_from_next[j] + (grad_top_at[t] if j == layers - 1 else d_below)
            if cell == "gf_lstm":
                dc = torch.addcmul(dc_next[j], dh, cell_factor_at[at])
                d_own.insert(0, torch.cat([dc, dc, dh], dim=-1) * own_factor_at[at])
                d_candidate_in = dc * candidate_factor_at[at]
                d_sum = d_candidate_in
                dc_next[j] = dc * keep_at[at]
            elif cell == "gf_gru":
                d_candidate_in = dh * candidate_factor_at[at]
                d_sum = d_candidate_in * reset_at[at]
                d_own.insert(0, torch.cat([dh, d_candidate_in], dim=-1) * own_factor_at[at])
                dh_direct.insert(0, dh * cell_factor_at[at])
            else:
                d_candidate_in = dh * candidate_factor_at[at]
                d_sum = d_candidate_in
            d_sum_by_source = d_sum.unsqueeze(1)
            d_feedback.insert(0, gates_at[at] * d_sum_by_source)  # (2, L sources, B, H)
            d_gates = d_sum_by_source * feedback_at[at]
            if gsize == 1:
                d_gates = d_gates.sum(-1, keepdim=True)
            d_gates = (d_gates * gate_slope_at[at]).transpose(1, 2).reshape(directions, batch, layers * gsize)
            d_gate_pre.insert(0, d_gates)
            d_in = d_inputs_at[j * frames + t]
            if own > 0:
                torch.cat([d_own[0], d_candidate_in, d_gates], dim=-1, out=d_in)
            else:
                torch.cat([d_candidate_in, d_gates], dim=-1, out=d_in)
            if j > 0:
                d_below = torch.bmm(d_in, upper_t[j - 1])
                if masks.size(1) > 0:
                    d_below = d_below * mask_at[t * (layers - 1) + j - 1]
        gate_grads = torch.cat(d_gate_pre, dim=-1).unsqueeze(1).expand(-1, layers, -1, -1)
        d_rec = d_recurrent_at[t]
        if own > 0:
            torch.cat([torch.cat(d_feedback, dim=-1), torch.stack(d_own, 1), gate_grads], dim=-1, out=d_rec)
        else:
            torch.cat([torch.cat(d_feedback, dim=-1), gate_grads], dim=-1, out=d_rec)
        dh_next = torch.bmm(d_rec.view(directions * layers, batch, n_rec), recurrent_t)
        dh_next = dh_next.view(directions, layers, batch, size)
        if cell == "gf_gru":
            dh_next = dh_next + torch.stack(dh_direct, 1)
    # The weights' gradients: one product over all frames each.
    grad_recurrent = torch.bmm(
        h_prev_all.permute(1, 2, 4, 0, 3).reshape(directions * layers, size, frames * batch),
        d_recurrent.permute(1, 2, 0, 3, 4).reshape(directions * layers, frames * batch, n_rec),
    ).view(recurrent_weight.shape)
    grad_first = d_inputs[0].permute(1, 2, 0, 3)  # (2, B, T, N_in)
    grad_upper = torch.zeros_like(upper_weight)
    grad_upper_bias = upper_weight.new_zeros(upper_weight.size(0), directions, n_in)
    for j in range(1, layers):
        d_in = d_inputs[j]  # (T, 2, B, N_in)
        inputs = below[:, j - 1]  # (T, 2, B, H)
        grad_upper[j - 1] = torch.bmm(
            inputs.permute(1, 3, 0, 2).reshape(directions, size, frames * batch),
            d_in.permute(1, 0, 2, 3).reshape(directions, frames * batch, n_in),
        )
        grad_upper_bias[j - 1] = d_in.sum((0, 2))
    return grad_first, grad_upper, grad_upper_bias, grad_recurrent


@functools.cache
def scripted(function):
    """`function` compiled by torch.jit.script once (the frame loops run about a third faster than in Python)."""
    with warnings.catch_warnings():  # torch 2.11 marks torch.jit deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(function)


class GatedFeedbackFunction(torch.autograd.Function):
    """run_stacks with backward_stacks as its backward pass: no autograd graph of the loop's many small operations."""

    @staticmethod
    def forward(ctx, first_input, upper_weight, upper_bias, recurrent_weight, masks, cell: str, gate_size: int):
        top, saved = scripted(run_stacks)(
            list(first_input.unbind(2)), upper_weight, upper_bias, recurrent_weight, masks, cell, gate_size
        )
        ctx.cell, ctx.gate_size = cell, gate_size
        ctx.save_for_backward(upper_weight, recurrent_weight, masks, *saved)
        return top

    @staticmethod
    def backward(ctx, grad_top):
        upper_weight, recurrent_weight, masks, *saved = ctx.saved_tensors
        grads = scripted(backward_stacks)(
            grad_top.contiguous(), upper_weight, recurrent_weight, masks, saved, ctx.cell, ctx.gate_size
        )
        return *grads, None, None, None


class GatedFeedbackStack(nn.Module):
    """Both directions' gated-feedback stacks of a bidirectional model: (B, T, D) -> (B, T, 2H), the forward
    stack's top layer then the backward stack's."""

    def __init__(self, cell: str, input_dim: int, hidden_size: int, num_layers: int, gate: str, dropout: float = 0.0):
        super().__init__()
        if cell not in GF_CELLS or gate not in GF_GATES:
            raise ValueError(f"cell {cell!r}, gate {gate!r}: expected a cell of {GF_CELLS}, a gate of {GF_GATES}")
        if num_layers < 1 or hidden_size < 1:
            raise ValueError(f"need num_layers >= 1 and hidden_size >= 1; got {num_layers=}, {hidden_size=}")
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.gate_size = 1 if gate == "scalar" else hidden_size
        self.own_gates = OWN_GATES[cell]
        self.dropout = dropout
        self.output_dim = 2 * hidden_size
        layers, size = num_layers, hidden_size
        n_in = (self.own_gates + 1) * size + layers * self.gate_size
        n_rec = layers * size + self.own_gates * size + layers * layers * self.gate_size
        self.input_weight = nn.Parameter(torch.empty(2, input_dim, n_in))
        self.input_bias = nn.Parameter(torch.empty(2, n_in))
        self.upper_weight = nn.Parameter(torch.empty(layers - 1, 2, size, n_in))
        self.upper_bias = nn.Parameter(torch.empty(layers - 1, 2, n_in))
        self.recurrent_weight = nn.Parameter(torch.empty(2, layers, size, n_rec))
        bound = 1.0 / math.sqrt(hidden_size)  # as torch's nn.RNN, nn.GRU and nn.LSTM initialise every weight
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, x: torch.Tensor, rev_index: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = x.shape
        size = self.hidden_size
        both = torch.stack([x, gather_time(x, rev_index)]).reshape(2, batch * frames, -1)
        first_input = torch.baddbmm(self.input_bias.unsqueeze(1), both, self.input_weight).view(2, batch, frames, -1)
        masks = x.new_ones(frames, 0, 2, batch, size)
        if self.training and self.dropout > 0 and self.num_layers > 1:  # drawn for all frames at once
            masks = nn.functional.dropout(x.new_ones(frames, self.num_layers - 1, 2, batch, size), self.dropout)
        if torch.jit.is_scripting():  # an exported model
            top = run_stacks(
                list(first_input.unbind(2)),
                self.upper_weight,
                self.upper_bias,
                self.recurrent_weight,
                masks,
                self.cell,
                self.gate_size,
                False,
            )[0]
        else:
            top = self._frame_loop(first_input, masks)
        out = top.permute(1, 2, 0, 3)  # (2, B, T, H)
        return torch.cat([out[0], gather_time(out[1], rev_index)], dim=-1)

    @torch.jit.unused
    def _frame_loop(self, first_input: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The compiled frame loop, with the hand-written backward pass where a gradient is wanted; under autocast
        (train.precision=bf16) in autocast's dtype, which TorchScript does not apply by itself."""
        weights = (self.upper_weight, self.upper_bias, self.recurrent_weight)
        device_type = first_input.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            first_input, masks, weights = first_input.to(dtype), masks.to(dtype), tuple(w.to(dtype) for w in weights)
        if torch.is_grad_enabled():
            return GatedFeedbackFunction.apply(first_input, *weights, masks, self.cell, self.gate_size)
        unbound = list(first_input.unbind(2))
        return scripted(run_stacks)(unbound, *weights, masks, self.cell, self.gate_size, False)[0]

    @torch.jit.unused
    def equation_weights(self, direction: int) -> dict:
        """One direction's weights named as the module docstring's equations (views of the parameters), for a
        reference written from them: W[j], U_own[j] and b[j] of layer j (rows: own-state gates then candidate,
        as (out, in) matrices), U[i][j], w_g[i][j], u_g[i][j] (u_g over h*, all layers joined) and b_g[i][j]."""
        layers, size, gsize, own = self.num_layers, self.hidden_size, self.gate_size, self.own_gates * self.hidden_size
        rec = self.recurrent_weight[direction]  # (L, H, N_rec)
        weights: dict = {"W": [], "b": [], "U_own": [], "U": [], "w_g": [], "u_g": [], "b_g": []}
        for j in range(layers):
            w = self.input_weight[direction] if j == 0 else self.upper_weight[j - 1, direction]
            b = self.input_bias[direction] if j == 0 else self.upper_bias[j - 1, direction]
            weights["W"].append(w[:, : own + size].T)
            weights["b"].append(b[: own + size])
            weights["U_own"].append(rec[j, :, layers * size : layers * size + own].T)
        gates_at = layers * size + own
        for i in range(layers):
            weights["U"].append([rec[i, :, j * size : (j + 1) * size].T for j in range(layers)])
            w_g, u_g, b_g = [], [], []
            for j in range(layers):
                w = self.input_weight[direction] if j == 0 else self.upper_weight[j - 1, direction]
                b = self.input_bias[direction] if j == 0 else self.upper_bias[j - 1, direction]
                cols = slice(own + size + i * gsize, own + size + (i + 1) * gsize)
                w_g.append(w[:, cols].T)
                b_g.append(b[cols])
                first = gates_at + (j * layers + i) * gsize
                u_g.append(torch.cat([rec[k, :, first : first + gsize] for k in range(layers)]).T)
            weights["w_g"].append(w_g)
            weights["u_g"].append(u_g)
            weights["b_g"].append(b_g)
        return weights
