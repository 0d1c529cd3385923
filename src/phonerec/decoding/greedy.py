"""Greedy decoders on batched log-posteriors.

Both take `log_probs` (B, T, V), the network's per-frame (log-)posteriors over V outputs, and `lengths` (B,),
the number of valid frames of each sequence; frames at or past a sequence's length are padding and ignored.
Only the argmax is used, so posteriors, log-posteriors and raw logits give the same result. Ties go to the
lowest output index (torch.argmax). Each returns one list of python ints per sequence.

ctc_greedy    CTC best path: per-frame argmax, merge repeats, drop blanks.
frame_argmax  frame-level (Viterbi-trained hybrid) model whose outputs are HMM states: per-frame argmax,
              states mapped to phones, repeats merged.
"""

import torch


def _check(log_probs: torch.Tensor, lengths) -> torch.Tensor:
    """Validate the inputs; lengths as an int64 tensor on log_probs' device."""
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 3:
        raise ValueError(f"log_probs must be a (B, T, V) tensor, got {getattr(log_probs, 'shape', type(log_probs))}")
    batch, frames, outputs = log_probs.shape
    if outputs < 1:
        raise ValueError("log_probs has no outputs (V = 0)")
    lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be integers, got {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > frames):
        raise ValueError(f"lengths must lie in [0, {frames}], got {lengths.tolist()}")
    return lengths.to(device=log_probs.device, dtype=torch.long)


def _merge_repeats(labels: torch.Tensor, lengths: torch.Tensor, drop: int | None = None) -> list[list[int]]:
    """Keep frame t of (B, T) `labels` where t < length, labels[t] != labels[t-1] and labels[t] != drop."""
    batch, frames = labels.shape
    if frames == 0:
        return [[] for _ in range(batch)]
    valid = torch.arange(frames, device=labels.device)[None, :] < lengths[:, None]
    # The previous frame's label, -1 before the first frame (labels are >= 0, so frame 0 is always new).
    previous = torch.nn.functional.pad(labels[:, :-1], (1, 0), value=-1)
    keep = valid & (labels != previous)
    if drop is not None:
        keep &= labels != drop
    labels, keep = labels.cpu(), keep.cpu()
    return [labels[b][keep[b]].tolist() for b in range(batch)]


@torch.no_grad()
def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """CTC best-path decode: per-frame argmax, merge repeats, then drop blanks.

    Repeats are merged before blanks are dropped, so a blank between two equal labels keeps both:
    frames [1, 1, 0, 1, 2, 2, 0, 0, 3] give [1, 1, 2, 3]. An all-blank sequence gives [].
    """
    lengths = _check(log_probs, lengths)
    if not 0 <= blank < log_probs.shape[2]:
        raise ValueError(f"blank {blank} is not an output index (V = {log_probs.shape[2]})")
    return _merge_repeats(log_probs.argmax(dim=-1), lengths, drop=blank)


@torch.no_grad()
def frame_argmax(
    log_probs: torch.Tensor, lengths: torch.Tensor, state_to_phone: list[int] | None = None
) -> list[list[int]]:
    """Frame-level decode of a hybrid model: per-frame argmax state, mapped to its phone, repeats merged.

    `state_to_phone[s]` is the phone id of output (HMM state) s; None means the outputs are phones already.
    Caveat: this is the simplest decode, with no HMM topology or transition model, so two consecutive
    occurrences of the same phone (e.g. "s s" across a word boundary) collapse into one, and a one-frame
    flicker to another state shows up as a phone of its own.
    """
    lengths = _check(log_probs, lengths)
    labels = log_probs.argmax(dim=-1)
    if state_to_phone is not None:
        if len(state_to_phone) != log_probs.shape[2]:
            raise ValueError(f"state_to_phone has {len(state_to_phone)} entries for {log_probs.shape[2]} outputs")
        table = torch.as_tensor(list(state_to_phone), dtype=torch.long, device=labels.device)
        if len(table) and int(table.min()) < 0:
            raise ValueError("state_to_phone holds a negative phone id")
        labels = table[labels]
    return _merge_repeats(labels, lengths)
