"""SpecAugment (Park et al. 2019) without time warping: frequency and time masks drawn per utterance on the
fly, in training batches only. Masks act on the static features after CMVN, before deltas (the deltas are
computed again from the masked statics, as if the masked frames had been extracted so); a masked value is 0,
the mean after CMVN. Draws come from torch's global RNG, which every checkpoint saves, so a resumed run draws
the masks an uninterrupted one would."""

import torch
from omegaconf import DictConfig

from phonerec.data.features import delta_scales


class SpecAugment:
    def __init__(self, acfg: DictConfig, delta_order: int, delta_window: int):
        """acfg: train.spec_augment (freq_masks, freq_width, time_masks, time_width, time_max_fraction)."""
        self.freq_masks, self.freq_width = acfg.freq_masks, acfg.freq_width
        self.time_masks, self.time_width = acfg.time_masks, acfg.time_width
        self.time_max_fraction = acfg.time_max_fraction
        self.delta_order, self.delta_window = delta_order, delta_window

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "SpecAugment | None":
        """The augmentation train.spec_augment asks for, or None where it is off."""
        acfg = cfg.train.spec_augment
        if not acfg.enabled:
            return None
        return cls(acfg, cfg.features.delta_order, cfg.features.delta_window)

    def __call__(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Padded (batch, frames, dim) features as collate makes them (statics first, then each delta order) and
        their lengths -> masked, the padding left 0. Each utterance's masks are drawn in turn, the draws those of
        torchaudio's mask_along_axis on that utterance alone; the masking and the deltas act on the whole batch
        at once (per utterance they cost a tenth of a training step)."""
        batch, frames, dim = feats.shape
        static_dim = dim // (self.delta_order + 1)
        keep = torch.ones(batch, frames, static_dim, dtype=torch.bool)
        for b, length in enumerate(lengths.tolist()):
            for _ in range(self.freq_masks):
                start, end = _band(self.freq_width, static_dim)
                keep[b, :, start:end] = False
            for _ in range(self.time_masks):
                start, end = _band(self.time_width, length, self.time_max_fraction)
                keep[b, start:end, :] = False
        static = feats[..., :static_dim].masked_fill(~keep, 0.0)
        if self.delta_order == 0:
            return static
        return batch_deltas(static, lengths, self.delta_order, self.delta_window)


def _band(width: int, size: int, max_fraction: float = 1.0) -> tuple[int, int]:
    """[start, end) of one mask along an axis of `size`, drawn as torchaudio.functional.mask_along_axis draws it
    (the same two torch.rand calls, none when the widest mask allowed is under 1)."""
    widest = width if max_fraction == 1.0 else min(width, int(size * max_fraction))
    if widest < 1:
        return 0, 0
    value = torch.rand(1) * widest
    start = torch.rand(1) * (size - value)
    return int(start.long()), int(start.long() + value.long())


def batch_deltas(static: torch.Tensor, lengths: torch.Tensor, order: int, window: int) -> torch.Tensor:
    """phonerec.data.features.add_deltas of each utterance of a padded (batch, frames, dim) batch at once, bit for
    bit (the same float64 sums, each utterance's edge frames replicated); frames past an utterance's length 0."""
    batch, frames, dim = static.shape
    valid = torch.arange(frames)[None, :] < lengths[:, None]
    outputs = []
    for scale in delta_scales(order, window):
        half = (len(scale) - 1) // 2
        index = torch.minimum(torch.arange(-half, frames + half).clamp(min=0)[None, :], (lengths - 1)[:, None])
        padded = static.double().gather(1, index[:, :, None].expand(-1, -1, dim))
        outputs.append(sum(float(c) * padded[:, k : k + frames] for k, c in enumerate(scale)))
    return torch.cat(outputs, dim=2).float().masked_fill(~valid[:, :, None], 0.0)
