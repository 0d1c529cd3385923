"""The BiLSTM acoustic model, shared by Viterbi (framewise cross-entropy) and CTC training.

Each bidirectional layer is two unidirectional nn.LSTMs run on the padded batch, the backward one on each
utterance reversed within its own length, instead of a packed bidirectional nn.LSTM: on a 2-core CPU the
packed form is several times slower (benchmarks/bench_blstm.py) and the result is the same exact BLSTM.

Determinism on CPU: with the same seed (initialisation and dropout draw from torch's global RNG), the same
batches in the same order and the same torch thread count, training and inference give bitwise identical
results. A different thread count can split matrix products differently and so change the order of float
summation, giving differences in the last bits that training can amplify; a different batch composition
(batch size, padded length) can do the same through different kernel blocking, although padding never
changes an utterance's output beyond that rounding. Nothing here is claimed about GPUs.
"""

import torch
from torch import nn


def reverse_index(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) time indices reversing each row within its length and leaving padding in place.

    Reversing inside the length keeps padding at the end, so the backward LSTM sees every valid frame
    before any padding frame and padding cannot reach valid outputs. The map is its own inverse."""
    t = torch.arange(max_len, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    return torch.where(t < lengths, lengths - 1 - t, t)


def gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, D) reordered in time per row by index (B, T')."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


def splice_frames(feats: torch.Tensor, lengths: torch.Tensor, context: int) -> torch.Tensor:
    """(B, T, D) -> (B, T, (2 * context + 1) * D), frames -context..+context as Kaldi's splice-feats orders them.

    Neighbours are clamped to each utterance's own first and last valid frame, so the last frames replicate
    the utterance's edge and never read padding."""
    batch, max_len, dim = feats.shape
    offsets = torch.arange(-context, context + 1, device=feats.device)
    t = torch.arange(max_len, device=feats.device)
    last = (lengths - 1).clamp(min=0).view(batch, 1, 1)
    index = (t.view(1, max_len, 1) + offsets.view(1, 1, -1)).clamp(min=0)
    index = torch.minimum(index.expand(batch, -1, -1), last)  # (B, T, 2c+1)
    spliced = feats.gather(1, index.reshape(batch, -1, 1).expand(-1, -1, dim))
    return spliced.view(batch, max_len, (2 * context + 1) * dim)


class BLSTMLayer(nn.Module):
    """One bidirectional layer: forward and backward nn.LSTM, optionally a projection of their concatenation."""

    def __init__(self, input_dim: int, hidden_size: int, projection_size: int = 0):
        super().__init__()
        self.forward_lstm = nn.LSTM(input_dim, hidden_size, batch_first=True)
        self.backward_lstm = nn.LSTM(input_dim, hidden_size, batch_first=True)
        self.projection = nn.Linear(2 * hidden_size, projection_size) if projection_size > 0 else None
        self.output_dim = projection_size if projection_size > 0 else 2 * hidden_size

    def forward(self, x: torch.Tensor, rev_index: torch.Tensor) -> torch.Tensor:
        # Padding sits at the end for both directions, so neither reads it before a valid frame.
        forward_out, _ = self.forward_lstm(x)
        backward_out, _ = self.backward_lstm(gather_time(x, rev_index))
        out = torch.cat([forward_out, gather_time(backward_out, rev_index)], dim=-1)
        return self.projection(out) if self.projection is not None else out


class BLSTMAcousticModel(nn.Module):
    """Frame posteriors (log-softmax) from features; output 0 is the CTC blank in a CTC model.

    splice and subsample trade frame rate for context before the first layer: subsample=3 with splice=1
    gives every third frame its two neighbours, so no frame is dropped unseen and the LSTMs run 3x fewer
    steps.

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
    ):
        super().__init__()
        if num_layers < 1 or subsample < 1 or splice < 0 or projection_size < 0 or pool_states < 1:
            raise ValueError(
                f"need num_layers >= 1, subsample >= 1, splice >= 0, projection_size >= 0, pool_states >= 1; got "
                f"{num_layers=}, {subsample=}, {splice=}, {projection_size=}, {pool_states=}"
            )
        if pool_states > 1 and (num_outputs - 1) % pool_states:
            raise ValueError(f"num_outputs={num_outputs} is not the blank plus groups of {pool_states} states")
        self.pool_states = pool_states
        self.input_dim = input_dim
        self.splice = splice
        self.subsample = subsample
        dim = input_dim * (2 * splice + 1)
        self.layers = nn.ModuleList()
        for _ in range(num_layers):
            layer = BLSTMLayer(dim, hidden_size, projection_size)
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
        """A fresh output layer with num_outputs, keeping the LSTMs: CTC training starts from a Viterbi model
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
