"""The recurrent acoustic model, shared by Viterbi (framewise cross-entropy) and CTC training: a bidirectional
stack of one cell (`model.cell`, schema.CELLS): torch's LSTM (the default), GRU, tanh or ReLU RNN, or a
gated-feedback RNN, GRU or LSTM (phonerec.model.gated_feedback, whose docstring gives their equations).

With a standard cell each bidirectional layer is two unidirectional torch RNNs (nn.LSTM, nn.GRU, nn.RNN) run on the
padded batch, the backward one on each utterance reversed within its own length, instead of a packed
bidirectional one: on a 2-core CPU the packed form is several times slower (benchmarks/bench_blstm.py) and the
result is the same exact bidirectional RNN. A gated-feedback stack is one module for all layers, since each layer
reads every layer's previous state.

Determinism on CPU: with the same seed (initialisation and dropout draw from torch's global RNG), the same
batches in the same order and the same torch thread count, training and inference give bitwise identical
results. A different thread count can split matrix products differently and so change the order of float
summation, giving differences in the last bits that training can amplify; a different batch composition
(batch size, padded length) can do the same through different kernel blocking, although padding never
changes an utterance's output beyond that rounding. Nothing here is claimed about GPUs.
"""

import torch
from torch import nn

from phonerec.base.schema import CELLS, GF_CELLS, GF_GATES
from phonerec.model.gated_feedback import GatedFeedbackStack
from phonerec.model.time_axis import gather_time, reverse_index, splice_frames

# The torch module of each standard cell, and its nonlinearity for nn.RNN.
STANDARD_CELLS = {
    "lstm": (nn.LSTM, {}),
    "gru": (nn.GRU, {}),
    "rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
}


class BidirectionalLayer(nn.Module):
    """One bidirectional layer of a standard cell: a forward and a backward torch RNN, optionally a projection of
    their concatenation. The RNNs are named after their torch module (forward_lstm, forward_gru, forward_rnn), so an
    LSTM layer keeps the state_dict keys the BLSTM had."""

    def __init__(self, cell: str, input_dim: int, hidden_size: int, projection_size: int = 0):
        super().__init__()
        module, options = STANDARD_CELLS[cell]
        self.rnn_name = module.__name__.lower()
        setattr(self, f"forward_{self.rnn_name}", module(input_dim, hidden_size, batch_first=True, **options))
        setattr(self, f"backward_{self.rnn_name}", module(input_dim, hidden_size, batch_first=True, **options))
        self.projection = nn.Linear(2 * hidden_size, projection_size) if projection_size > 0 else None
        self.output_dim = projection_size if projection_size > 0 else 2 * hidden_size

    def forward(self, x: torch.Tensor, rev_index: torch.Tensor) -> torch.Tensor:
        # Padding sits at the end for both directions, so neither reads it before a valid frame.
        forward_out, _ = getattr(self, f"forward_{self.rnn_name}")(x)
        backward_out, _ = getattr(self, f"backward_{self.rnn_name}")(gather_time(x, rev_index))
        out = torch.cat([forward_out, gather_time(backward_out, rev_index)], dim=-1)
        return self.projection(out) if self.projection is not None else out


class RecurrentAcousticModel(nn.Module):
    """Frame posteriors (log-softmax) from features; output 0 is the CTC blank in a CTC model.

    cell: schema.CELLS; gf_gate (gated-feedback cells only): the global reset gate a scalar or a vector.

    splice and subsample trade frame rate for context before the first layer: subsample=3 with splice=1
    gives every third frame its two neighbours, so no frame is dropped unseen and the recurrent layers run 3x
    fewer steps.

    pool_states=N (a CTC model made from a Viterbi model with N HMM states per phone, `add_blank`): the output
    layer has the blank and then N outputs per phone, and a phone's posterior is the sum of its N states'
    posteriors (logsumexp of their log-posteriors), so the model outputs blank + phones and starts out with the
    Viterbi model's state scores: the phones ranked as the Viterbi model ranks them, the blank taking its share."""

    def __init__(
        self,
        input_dim: int,
        num_outputs: int,
        num_layers: int = 3,
        hidden_size: int = 256,
        dropout: float = 0.2,
        projection_size: int = 0,
        splice: int = 0,
        subsample: int = 1,
        pool_states: int = 1,
        cell: str = "lstm",  # checkpoints made before there was a choice of cell hold an LSTM
        gf_gate: str = "scalar",
    ):
        super().__init__()
        if num_layers < 1 or subsample < 1 or splice < 0 or projection_size < 0 or pool_states < 1:
            raise ValueError(
                f"need num_layers >= 1, subsample >= 1, splice >= 0, projection_size >= 0, pool_states >= 1; got "
                f"{num_layers=}, {subsample=}, {splice=}, {projection_size=}, {pool_states=}"
            )
        if cell not in CELLS or gf_gate not in GF_GATES:
            raise ValueError(f"cell {cell!r}, gf_gate {gf_gate!r}: expected a cell of {CELLS}, a gate of {GF_GATES}")
        if cell in GF_CELLS and projection_size:
            raise ValueError(f"projection_size={projection_size}: no projection in a {cell} stack")
        if pool_states > 1 and (num_outputs - 1) % pool_states:
            raise ValueError(f"num_outputs={num_outputs} is not the blank plus groups of {pool_states} states")
        self.pool_states = pool_states
        self.input_dim = input_dim
        self.splice = splice
        self.subsample = subsample
        self.cell = cell
        dim = input_dim * (2 * splice + 1)
        self.layers = nn.ModuleList()
        self.gated_feedback = None
        if cell in GF_CELLS:
            self.gated_feedback = GatedFeedbackStack(cell, dim, hidden_size, num_layers, gf_gate, dropout)
            dim = self.gated_feedback.output_dim
        else:
            for _ in range(num_layers):
                layer = BidirectionalLayer(cell, dim, hidden_size, projection_size)
                self.layers.append(layer)
                dim = layer.output_dim
        # Between layers only, as nn.LSTM's dropout: the output layer sees the last layer undropped.
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(dim, num_outputs)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per utterance after subsampling: ceil(length / subsample)."""
        return torch.div(lengths + self.subsample - 1, self.subsample, rounding_mode="floor")

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last layer's outputs (B, T', dim) and their lengths, before the output layer."""
        if feats.dim() != 3 or feats.size(-1) != self.input_dim:
            raise ValueError(f"feats must be (batch, frames, {self.input_dim}); got {tuple(feats.shape)}")
        if lengths.numel() != feats.size(0) or (lengths.numel() and int(lengths.max()) > feats.size(1)):
            raise ValueError(f"lengths {lengths.tolist()} do not fit feats of shape {tuple(feats.shape)}")
        lengths = lengths.to(device=feats.device, dtype=torch.long)
        max_len = feats.size(1)
        # Zeroed padding keeps padded outputs finite whatever the caller padded with (NaN, garbage).
        valid = torch.arange(max_len, device=feats.device).unsqueeze(0) < lengths.unsqueeze(1)
        x = feats.masked_fill(~valid.unsqueeze(-1), 0.0)
        if self.splice:
            x = splice_frames(x, lengths, self.splice)
        if self.subsample > 1:
            x = x[:, :: self.subsample]
            lengths = self.output_lengths(lengths)
        rev_index = reverse_index(lengths, x.size(1))
        if self.gated_feedback is not None:
            return self.gated_feedback(x, rev_index), lengths
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)
            x = layer(x, rev_index)
        return x, lengths

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log_probs (B, T', outputs), out_lengths (B,)); frames past out_lengths are don't-care. outputs is
        num_outputs, or with pool_states=N the blank and one per group of N states."""
        hidden, out_lengths = self.encode(feats, lengths)
        log_probs = self.output(hidden).log_softmax(dim=-1)
        if self.pool_states > 1:
            batch, frames, _ = log_probs.shape
            states = log_probs[..., 1:].reshape(batch, frames, -1, self.pool_states)
            log_probs = torch.cat([log_probs[..., :1], states.logsumexp(dim=-1)], dim=-1)
        return log_probs, out_lengths

    def replace_output_layer(self, num_outputs: int) -> None:
        """A fresh output layer with num_outputs, keeping the recurrent layers: CTC training starts from a Viterbi model
        with one more output (the blank, output 0), and the old phone outputs do not map onto the new ones."""
        old = self.output
        self.output = nn.Linear(old.in_features, num_outputs, device=old.weight.device, dtype=old.weight.dtype)

    def add_blank(self, copy_of: int, bias_offset: float, pool_states: int) -> None:
        """Turn a Viterbi model (outputs: HMM states, N per phone in phone order) into a CTC model that starts
        where it is: the state outputs stay, pooled per phone (pool_states=N), and a blank output 0 is added as
        a copy of state output `copy_of` with `bias_offset` added to its bias."""
        old = self.output
        if (old.out_features % pool_states) or self.pool_states != 1:
            raise ValueError(f"{old.out_features} state outputs do not form groups of {pool_states}")
        self.output = nn.Linear(old.in_features, old.out_features + 1, device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            self.output.weight.copy_(torch.cat([old.weight[copy_of : copy_of + 1], old.weight]))
            self.output.bias.copy_(torch.cat([old.bias[copy_of : copy_of + 1] + bias_offset, old.bias]))
        self.pool_states = pool_states


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def hidden_size_matching(parameters: int, **model_args) -> int:
    """The hidden size at which a model of model_args (RecurrentAcousticModel's, less hidden_size) has the number of
    parameters closest to `parameters`: to compare cells at equal size (benchmarks/bench_cells.py, the recipes'
    cell comparisons). The models are built on the meta device, without memory."""

    def count(hidden_size: int) -> int:
        with torch.device("meta"):
            return num_parameters(RecurrentAcousticModel(**model_args, hidden_size=hidden_size))

    low, high = 1, 1
    while count(high) < parameters:
        low, high = high, 2 * high
    while high - low > 1:  # count grows with the hidden size: the last size below and the first at or above
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) < parameters else (low, middle)
    return min((low, high), key=lambda size: abs(count(size) - parameters))


def model_arguments(model_config: dict, input_dim: int, num_outputs: int) -> dict:
    """RecurrentAcousticModel's arguments from the `model` config group (as a dict): with match_lstm_parameters,
    the hidden size at which the cell's model has the parameters of the LSTM of the configured hidden size."""
    args = {"input_dim": input_dim, "num_outputs": num_outputs, **model_config}
    if args.pop("match_lstm_parameters", False) and args["cell"] != "lstm":
        with torch.device("meta"):
            lstm_parameters = num_parameters(RecurrentAcousticModel(**{**args, "cell": "lstm"}))
        shape = {key: value for key, value in args.items() if key != "hidden_size"}
        args["hidden_size"] = hidden_size_matching(lstm_parameters, **shape)
    return args
