"""SpecAugment (Park et al. 2019) without time warping: frequency and time masks drawn per utterance on the
fly, in training batches only. Masks act on the static features after CMVN, before deltas (the deltas are
computed again from the masked statics, as if the masked frames had been extracted so); a masked value is 0,
the mean after CMVN. Draws come from torch's global RNG, which every checkpoint saves, so a resumed run draws
the masks an uninterrupted one would."""

import torch
import torchaudio.functional as AF
from omegaconf import DictConfig

from phonerec.features import add_deltas


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

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """(frames, dim) features as load_examples gives them (statics first, then each delta order) -> masked."""
        static = feats[:, : feats.shape[1] // (self.delta_order + 1)].clone()
        for _ in range(self.freq_masks):
            static = AF.mask_along_axis(static, self.freq_width, 0.0, axis=1)
        for _ in range(self.time_masks):
            static = AF.mask_along_axis(static, self.time_width, 0.0, axis=0, p=self.time_max_fraction)
        if self.delta_order == 0:
            return static
        return torch.from_numpy(add_deltas(static.numpy(), self.delta_order, self.delta_window))
