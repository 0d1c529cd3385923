"""Training-time augmentation: SpecAugment masks on the statics before deltas, and speed perturbation of a
training data dir as Kaldi's perturb_data_dir_speed_3way.sh does it."""

import logging
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from conftest import write_wav
from omegaconf import OmegaConf

from phonerec.base.config import load_config
from phonerec.base.errors import RecipeError
from phonerec.data.audio import read_audio
from phonerec.data.data_dir import Utterance, read_table, validate_data_dir, write_data_dir
from phonerec.data.dataset import Example, collate
from phonerec.data.features import add_deltas
from phonerec.data.speed_perturb import perturb_samples
from phonerec.hmm.align_eval import Segment, read_ctm, write_ctm
from phonerec.model.recurrent import RecurrentAcousticModel
from phonerec.pipeline.prepare_stage import speed_perturb_stage
from phonerec.training.augment import SpecAugment
from phonerec.training.loop import train_one_epoch


def spec_augment(delta_order: int = 2, **settings) -> SpecAugment:
    acfg = {"freq_masks": 2, "freq_width": 4, "time_masks": 2, "time_width": 10, "time_max_fraction": 0.2}
    return SpecAugment(OmegaConf.create(acfg | settings), delta_order=delta_order, delta_window=2)


def one(augment: SpecAugment, feats: torch.Tensor) -> torch.Tensor:
    """One utterance's (frames, dim) features through the batch augmentation."""
    return augment(feats[None], torch.tensor([len(feats)]))[0]


def per_utterance_reference(augment: SpecAugment, feats: torch.Tensor) -> torch.Tensor:
    """SpecAugment of one utterance as torchaudio's mask_along_axis and add_deltas compute it."""
    static = feats[:, : feats.shape[1] // (augment.delta_order + 1)].clone()
    for _ in range(augment.freq_masks):
        static = AF.mask_along_axis(static, augment.freq_width, 0.0, axis=1)
    for _ in range(augment.time_masks):
        static = AF.mask_along_axis(static, augment.time_width, 0.0, axis=0, p=augment.time_max_fraction)
    return torch.from_numpy(add_deltas(static.numpy(), augment.delta_order, augment.delta_window))


def test_a_batch_is_masked_bit_for_bit_as_each_utterance_alone_would_be():
    generator = torch.Generator().manual_seed(0)
    lengths = (100, 37, 4, 61)  # 4 frames: no time mask fits under the 20% limit, and none is drawn
    utterances = [torch.from_numpy(add_deltas((torch.randn(n, 13, generator=generator) + 3).numpy())) for n in lengths]
    augment = spec_augment(time_width=30)
    torch.manual_seed(3)
    reference = [per_utterance_reference(augment, u) for u in utterances]
    next_reference_draw = torch.rand(1)
    torch.manual_seed(3)
    feats, _ = collate([Example(str(k), "s", u, [1], None) for k, u in enumerate(utterances)], augment)
    assert torch.equal(torch.rand(1), next_reference_draw)  # the same draws, in the same order
    for k, ref in enumerate(reference):
        assert torch.equal(feats[k, : len(ref)], ref)
        assert not feats[k, len(ref) :].any()  # the padding stays 0


def test_masks_act_on_the_statics_and_the_deltas_follow():
    torch.manual_seed(0)
    static = torch.randn(100, 13) + 3.0  # no exact zeros
    feats = torch.from_numpy(add_deltas(static.numpy(), 2, 2))
    augment = spec_augment(freq_masks=1, time_masks=1, time_width=30)
    both_masked = 0
    for _ in range(20):
        out = one(augment, feats)
        assert out.shape == feats.shape
        masked = out[:, :13]
        zero_dims, zero_frames = (masked == 0).all(dim=0), (masked == 0).all(dim=1)
        assert int(zero_dims.sum()) <= 4 and int(zero_frames.sum()) <= 20  # 20 = 0.2 x 100 frames
        for band in (zero_dims, zero_frames):  # each mask is one contiguous band
            idx = band.nonzero().flatten()
            assert len(idx) == 0 or int(idx[-1] - idx[0]) + 1 == len(idx)
        untouched = ~zero_frames
        assert torch.equal(masked[untouched][:, ~zero_dims], static[untouched][:, ~zero_dims])
        # The deltas are those of the masked statics, as if the masked features had been extracted.
        assert torch.allclose(out, torch.from_numpy(add_deltas(masked.numpy(), 2, 2)))
        both_masked += bool(zero_dims.any() and zero_frames.any())
    assert both_masked >= 10  # mask widths are drawn from 0 up


def test_masks_are_drawn_per_call_from_the_seeded_global_rng():
    feats = torch.from_numpy(add_deltas(np.random.default_rng(0).normal(3, 1, (80, 13)).astype(np.float32)))
    augment = spec_augment()
    torch.manual_seed(5)
    first, second = one(augment, feats), one(augment, feats)
    torch.manual_seed(5)
    assert torch.equal(one(augment, feats), first)
    assert not torch.equal(first, second)


def test_switch_and_feature_layout_come_from_the_config():
    assert SpecAugment.from_config(load_config(["recipe=timit_sample"])) is None  # off by default
    assert SpecAugment.from_config(load_config([])).freq_width == 4  # the FSDD recipe's: 4 of 13 cepstra
    cfg = load_config(["recipe=timit_sample", "train.spec_augment.enabled=true"])  # 40 fbank bins
    augment = SpecAugment.from_config(cfg)
    feats = torch.randn(60, 40) + 3.0
    torch.manual_seed(1)
    out = one(augment, feats)
    assert out.shape == feats.shape and (out == 0).any() and augment.delta_order == 0


class _FrameTask:
    """A frame-classification task that records the features each batch trains on."""

    kind = "test"

    def __init__(self):
        self.seen = []

    def train_examples(self, train):
        return train

    def loss(self, model, feats, lengths, examples):
        self.seen.append(feats.clone())
        out, _ = model(feats, lengths)
        return out.mean(), 1


def test_training_batches_are_augmented_and_the_examples_are_not():
    torch.manual_seed(0)
    examples = [Example(f"u{i}", "s", torch.randn(50, 13) + 3.0, [1], None) for i in range(4)]
    originals = [e.feats.clone() for e in examples]
    model = RecurrentAcousticModel(input_dim=13, num_outputs=3, num_layers=1, hidden_size=8)
    task = _FrameTask()
    tcfg = OmegaConf.create({"batch_frames": 1000, "max_batch_utts": 8, "grad_clip": 5.0})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, task, examples, optimizer, tcfg, 1, spec_augment(delta_order=0))
    assert any((batch == 0).any() for batch in task.seen)
    for e, original in zip(examples, originals, strict=True):
        assert torch.equal(e.feats, original)  # dev scoring and re-alignment see clean features


def test_a_copy_is_the_recording_played_faster_or_slower():
    rate = 8000
    t = np.arange(rate) / rate
    tone = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    for factor in (0.9, 1.1):
        out = perturb_samples(tone, rate, factor)
        assert out.dtype == np.int16 and abs(len(out) - len(tone) / factor) <= 1
        spectrum = np.abs(np.fft.rfft(out[200:-200] * np.hanning(len(out) - 400)))
        peak_hz = np.argmax(spectrum) * rate / (len(out) - 400)
        assert abs(peak_hz - 500 * factor) < 5  # the pitch moves with the tempo, as sox's speed does
    with pytest.raises(RecipeError, match="not a whole sample rate"):
        perturb_samples(tone, 8001, 0.9)


@pytest.fixture
def train_dir(tmp_path):
    wav_dir = tmp_path / "audio"
    utts = [
        Utterance("spk1_a", "spk1", str(write_wav(wav_dir / "a.wav", seconds=0.5)), ["a", "b"], ["x"]),
        Utterance("spk2_b", "spk2", str(write_wav(wav_dir / "b.wav", seconds=0.4, seed=1)), ["b"], ["y"]),
    ]
    data = tmp_path / "train"
    write_data_dir(data, utts)
    write_ctm(data / "phones.ctm", {"spk1_a": [Segment(0.0, 0.2, "a"), Segment(0.2, 0.5, "b")]})
    return data


def test_perturbed_dir_holds_the_originals_and_a_copy_per_factor(train_dir, tmp_path, caplog):
    cfg = load_config(["train.speed_perturb=[0.9,1.1]"])
    out = tmp_path / "train_sp"
    speed_perturb_stage(cfg, train_dir, out)
    assert validate_data_dir(out) == 6
    utt2spk = read_table(out / "utt2spk")
    assert utt2spk["sp0.9-spk1_a"] == "sp0.9-spk1" and utt2spk["spk2_b"] == "spk2"
    assert read_table(out / "text")["sp1.1-spk2_b"] == "b" and read_table(out / "text.words")["sp0.9-spk1_a"] == "x"
    wav_scp = read_table(out / "wav.scp")
    assert wav_scp["spk1_a"] == read_table(train_dir / "wav.scp")["spk1_a"]  # the original is not rewritten
    samples, rate = read_audio(wav_scp["sp0.9-spk1_a"])
    assert rate == 8000 and abs(len(samples) - 4000 / 0.9) <= 1
    assert sf.info(wav_scp["sp1.1-spk1_a"]).frames == math.ceil(4000 / 1.1)  # as torchaudio resamples
    ctm = read_ctm(out / "phones.ctm")
    assert [round(s.end, 4) for s in ctm["sp1.1-spk1_a"]] == [round(0.2 / 1.1, 4), round(0.5 / 1.1, 4)]
    assert ctm["spk1_a"] == read_ctm(train_dir / "phones.ctm")["spk1_a"]

    with caplog.at_level(logging.INFO):
        speed_perturb_stage(cfg, train_dir, out)
    assert "speed_perturb already done" in caplog.text

    # Other factors: redone, and no audio of the old ones left behind.
    speed_perturb_stage(load_config(["train.speed_perturb=[1.2]"]), train_dir, out)
    assert validate_data_dir(out) == 4
    assert sorted(p.name for p in (out / "wav").glob("*.wav")) == ["sp1.2-spk1_a.wav", "sp1.2-spk2_b.wav"]


@pytest.mark.parametrize("factors", ["[]", "[1.0]", "[0.9,0.9]", "[3.0]"])
def test_bad_factors_are_refused(train_dir, tmp_path, factors):
    with pytest.raises(RecipeError, match="train.speed_perturb"):
        speed_perturb_stage(load_config([f"train.speed_perturb={factors}"]), train_dir, tmp_path / "train_sp")
