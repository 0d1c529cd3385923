"""Where a frame lies in time: the boundary offset of Kaldi's framing, and the shift and offset of a model's output
frames from the config (the times of alignments, CTM and TextGrid files, and their accuracy)."""

from omegaconf import DictConfig


def frame_offset(frame_length: float, frame_shift: float, snip_edges: bool = True) -> float:
    """Seconds from t * frame_shift to the boundary between frames t - 1 and t: halfway between the middles of
    their windows, (length - shift) / 2 with Kaldi's snip-edges framing (window t starts at t * shift), 0 without
    it (window t is centred on t * shift + shift / 2)."""
    return (frame_length - frame_shift) / 2 if snip_edges else 0.0


# The config keys frame_timing reads: where a frame lies in time (the times of alignments and their accuracy).
FRAME_TIMING = ("features.kaldi.frame_shift", "features.kaldi.frame_length", "features.kaldi.snip_edges")


def frame_shift(cfg: DictConfig, subsample: int) -> float:
    """Seconds between model output frames (features.kaldi.frame_shift, the model's subsampling)."""
    return cfg.features.kaldi.frame_shift / 1000 * subsample


def frame_timing(cfg: DictConfig, subsample: int) -> tuple[float, float]:
    """(frame shift, boundary offset) of the model's output frames in seconds, for align_eval's segments: the
    offset from features.kaldi's frame_length, frame_shift and snip_edges (FRAME_TIMING). A
    subsampled frame t starts at input frame subsample * t, so the offset is the input frames'."""
    kaldi = cfg.features.kaldi
    offset = frame_offset(kaldi.frame_length / 1000, kaldi.frame_shift / 1000, kaldi.snip_edges)
    return frame_shift(cfg, subsample), offset
