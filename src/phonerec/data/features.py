"""Kaldi-compatible features of one recording, and the load-time pipeline every model input passes through.

Extraction (stage 1, phonerec.pipeline.features_stage) stores static features (torchaudio.compliance.kaldi on
int16-scaled samples at the audio's own rate) and per-speaker CMVN statistics in Kaldi's format. Loading applies
CMVN to the static features and then adds deltas, as Kaldi's `apply-cmvn ... | add-deltas ...` does, so changing
either needs no re-extraction.
"""

import logging
from pathlib import Path

import kaldiio
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchaudio.compliance import kaldi

from phonerec.base.errors import RecipeError
from phonerec.data.data_dir import read_table

log = logging.getLogger(__name__)


def compute_features(samples: np.ndarray, sample_rate: int, fcfg: DictConfig) -> torch.Tensor:
    """(frames, dims) static features of int16 samples. Audio shorter than one analysis window is a RecipeError
    (torchaudio would fail an assertion)."""
    waveform = torch.from_numpy(samples.astype(np.float32)).unsqueeze(0)
    options = OmegaConf.to_container(fcfg.kaldi, resolve=True)
    window = int(sample_rate * options.get("frame_length", 25.0) / 1000)
    if len(samples) < window:
        raise RecipeError(
            f"{len(samples)} samples ({len(samples) / sample_rate:.3f} s), shorter than one frame "
            f"({window} samples of features.kaldi.frame_length)"
        )
    if fcfg.type == "mfcc":
        return kaldi.mfcc(waveform, sample_frequency=sample_rate, **options)
    if fcfg.type == "fbank":
        return kaldi.fbank(waveform, sample_frequency=sample_rate, **options)
    raise RecipeError(f"features.type={fcfg.type}: expected mfcc or fbank")


def warn_long_recording(what: str, seconds: float, limit: float) -> None:
    """The one warning of a recording over corpus.max_utterance_seconds (stage 1 and the model tools)."""
    log.warning(
        "%s is %.1f s long, over corpus.max_utterance_seconds=%g: one pass of the model over a long recording is slow "
        "and its alignment drifts (a model trained on short utterances may give one word); segment long recordings "
        "first",
        *(what, seconds, limit),
    )


# CMVN statistics, in Kaldi's layout: a 2 x (dim + 1) double matrix per speaker (or utterance):
# row 0 = sum of frames and the frame count, row 1 = sum of squares and 0.


def cmvn_stats(feats: np.ndarray) -> np.ndarray:
    stats = np.zeros((2, feats.shape[1] + 1), dtype=np.float64)
    stats[0, :-1] = feats.sum(axis=0)
    stats[0, -1] = feats.shape[0]
    stats[1, :-1] = (feats.astype(np.float64) ** 2).sum(axis=0)
    return stats


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, norm_vars: bool = False) -> np.ndarray:
    """Kaldi's apply-cmvn: subtract the mean; with norm_vars also divide by the standard deviation."""
    count = stats[0, -1]
    mean = stats[0, :-1] / count
    out = feats - mean
    if norm_vars:
        var = np.maximum(stats[1, :-1] / count - mean**2, 1e-20)  # Kaldi's variance floor
        out = out / np.sqrt(var)
    return out.astype(np.float32)


def delta_scales(order: int, window: int) -> list[np.ndarray]:
    """Kaldi's DeltaFeatures filters: order i is order i-1 convolved with the regression window."""
    scales = [np.array([1.0])]
    taps = np.arange(-window, window + 1, dtype=np.float64)
    for _ in range(order):
        scales.append(np.convolve(scales[-1], taps) / (taps**2).sum())
    return scales


def add_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi's add-deltas: each order filters the static features, frames past the edges replicated.

    Differs from applying torchaudio.functional.compute_deltas twice in the first and last frames:
    Kaldi pads the static features once, not each order's output."""
    frames = feats.shape[0]
    outputs = []
    for scale in delta_scales(order, window):
        half = (len(scale) - 1) // 2
        padded = np.pad(feats, ((half, half), (0, 0)), mode="edge")
        outputs.append(sum(c * padded[k : k + frames] for k, c in enumerate(scale)))
    return np.concatenate(outputs, axis=1).astype(np.float32)


def features_at_load(
    statics: np.ndarray, stats: np.ndarray | None, fcfg: DictConfig, where: str = "features"
) -> np.ndarray:
    """Static features as the models see them: CMVN with `stats` (None: none), then deltas. Every matrix a model
    sees passes here (training, decoding, inference), so here a NaN or inf is refused, naming `where`: trained
    on, it surfaced later as a failure blamed on an intact utterance."""
    feats = statics if stats is None else apply_cmvn(statics, stats, fcfg.norm_vars)
    if not np.isfinite(feats).all():
        frame = int(np.flatnonzero(~np.isfinite(feats).all(axis=1))[0])
        cause = "the stored features" if not np.isfinite(statics).all() else "the CMVN statistics"
        raise RecipeError(f"{where}: NaN or inf values from {cause}, the first in frame {frame}")
    return add_deltas(feats, fcfg.delta_order, fcfg.delta_window)


class FeatureReader:
    """Features of a feature dir as the models see them: stored statics -> CMVN -> deltas. An ark that cannot
    be read (clipped, overwritten) or holds NaN or inf is a RecipeError naming the ark, offset and utterance."""

    def __init__(self, feat_dir: Path, fcfg: DictConfig):
        self.feats = read_table(feat_dir / "feats.scp")  # utterance -> ark:offset
        self.utt2spk = read_table(feat_dir / "utt2spk")
        cmvn_scp = feat_dir / "cmvn.scp"
        self.cmvn = read_table(cmvn_scp) if cmvn_scp.is_file() else None
        self.cmvn_per_speaker = fcfg.cmvn == "speaker"
        self.fcfg = fcfg

    def __len__(self) -> int:
        return len(self.feats)

    def keys(self):
        return self.feats.keys()

    def __getitem__(self, utt: str) -> np.ndarray:
        where = f"{self.feats[utt]} (utterance '{utt}')"
        statics, stats = _load_matrix(self.feats[utt], where), None
        if self.cmvn is not None:
            key = self.utt2spk[utt] if self.cmvn_per_speaker else utt
            stats = _load_matrix(self.cmvn[key], f"{self.cmvn[key]} (CMVN statistics of '{key}')")
            where += f" with CMVN statistics {self.cmvn[key]}"
        return features_at_load(statics, stats, self.fcfg, where)


def _load_matrix(entry: str, where: str) -> np.ndarray:
    """One matrix of an ark by its scp entry (ark:offset)."""
    try:
        return kaldiio.load_mat(entry)
    except Exception as err:  # kaldiio's errors on a clipped ark: ValueError, EOFError, struct.error ...
        raise RecipeError(f"{where}: cannot read the matrix (a clipped or overwritten ark?): {err}") from None
