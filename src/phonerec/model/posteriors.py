"""A model's log-posteriors over a set of utterances, in length-bucketed batches: the one loop that validation,
re-alignment and decoding share. Call it under torch.no_grad(). The batches are those of make_batches without
shuffling, so the same batch_frames and max_utts give the same batches (and the same last bits) every time."""

from collections.abc import Iterator

import torch

from phonerec.data.dataset import Example, collate, make_batches
from phonerec.model.device import model_device


def batched_posteriors(
    model, examples: list[Example], batch_frames: int, max_utts: int
) -> Iterator[tuple[list[Example], torch.Tensor, torch.Tensor]]:
    """(the batch's examples, log_probs (B, T', outputs), out_lengths (B,)) per batch, on the model's device."""
    lengths = [e.feats.shape[0] for e in examples]
    device = model_device(model)
    for batch in make_batches(lengths, batch_frames, max_utts):
        batch_examples = [examples[i] for i in batch]
        feats, feat_lengths = collate(batch_examples)
        log_probs, out_lengths = model(feats.to(device), feat_lengths.to(device))
        yield batch_examples, log_probs, out_lengths


def utterance_posteriors(
    model, examples: list[Example], batch_frames: int, max_utts: int
) -> Iterator[tuple[Example, torch.Tensor]]:
    """(example, its log-posteriors (frames, outputs)) per utterance, batch by batch."""
    for batch_examples, log_probs, out_lengths in batched_posteriors(model, examples, batch_frames, max_utts):
        for k, example in enumerate(batch_examples):
            yield example, log_probs[k, : out_lengths[k]]
