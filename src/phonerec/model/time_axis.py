"""The model's operations along the time axis of a padded batch: reversing each utterance within its own
length (the backward direction of every cell), reordering frames by such an index, and splicing neighbours."""

import torch


def reverse_index(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) time indices reversing each row within its length and leaving padding in place.

    Reversing inside the length keeps padding at the end, so the backward RNN sees every valid frame
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
