"""Feature extraction: equal to a direct torchaudio call, Kaldi's CMVN and deltas, jobs, skip and resume."""

import logging
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from conftest import write_wav
from torchaudio.compliance import kaldi

from phonerec.base.config import load_config
from phonerec.base.errors import DataDirError, RecipeError
from phonerec.data.data_dir import Utterance, read_table, write_data_dir
from phonerec.data.features import FeatureReader, add_deltas, apply_cmvn, cmvn_stats
from phonerec.pipeline.features_stage import make_features


@pytest.fixture
def data_dir(tmp_path):
    utts = []
    for spk in ("spka", "spkb"):
        for i in range(5):
            wav = write_wav(tmp_path / "wav" / f"{spk}_{i}.wav", seconds=0.3 + 0.05 * i, seed=i + (spk == "spkb") * 10)
            utts.append(Utterance(f"{spk}_{i}", spk, str(wav), ["a", "b"], ["w"]))
    write_data_dir(tmp_path / "data", utts)
    return tmp_path / "data"


def config(*overrides):
    return load_config(["corpus.sample_rate=8000", "nj=1", *overrides])


@pytest.mark.parametrize("kind", ["mfcc", "fbank"])
def test_features_equal_a_direct_torchaudio_call(data_dir, tmp_path, kind):
    cfg = config(f"features={kind}")
    make_features(data_dir, tmp_path / "feats", cfg)
    stored = kaldiio.load_scp(str(tmp_path / "feats" / "feats.scp"))
    wav_scp = read_table(data_dir / "wav.scp")
    assert sorted(stored.keys()) == sorted(wav_scp)
    for utt, path in wav_scp.items():
        samples, rate = sf.read(path, dtype="int16")
        waveform = torch.from_numpy(samples.astype(np.float32)).unsqueeze(0)  # int16-scaled, as Kaldi reads
        if kind == "mfcc":
            expected = kaldi.mfcc(waveform, sample_frequency=rate, num_ceps=13, num_mel_bins=23, use_energy=False)
        else:
            expected = kaldi.fbank(waveform, sample_frequency=rate, num_mel_bins=40, use_energy=False)
        np.testing.assert_allclose(stored[utt], expected.numpy(), rtol=1e-6, atol=1e-5)
    num_frames = read_table(tmp_path / "feats" / "utt2num_frames")
    assert {u: int(n) for u, n in num_frames.items()} == {u: stored[u].shape[0] for u in wav_scp}


def test_fbank_80_bins_and_its_dir_name():
    cfg = config("features=fbank", "features.kaldi.num_mel_bins=80")
    assert cfg.features.name == "fbank80"


def test_deltas_match_kaldi_definition():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(30, 4)).astype(np.float32)
    out = add_deltas(feats, order=2, window=2)
    assert out.shape == (30, 12)
    np.testing.assert_allclose(out[:, :4], feats)
    # Order 1 is the regression (sum_n n (x[t+n] - x[t-n])) / (2 sum_n n^2) with edge frames replicated,
    # exactly torchaudio's compute_deltas.
    delta = torchaudio.functional.compute_deltas(torch.from_numpy(feats.T.copy()), win_length=5).numpy().T
    np.testing.assert_allclose(out[:, 4:8], delta, rtol=1e-5, atol=1e-5)
    # Order 2 equals the delta of the delta away from the edges; at the edges Kaldi pads the statics once.
    delta2 = torchaudio.functional.compute_deltas(torch.from_numpy(delta.T.copy()), win_length=5).numpy().T
    np.testing.assert_allclose(out[4:-4, 8:], delta2[4:-4], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out[:2, 8:], delta2[:2])
    # Kaldi's order-2 filter at t: (1/100) * [4 4 1 -4 -10 -4 1 4 4] over t-4..t+4.
    t = 10
    kaldi_filter = np.array([4, 4, 1, -4, -10, -4, 1, 4, 4]) / 100.0
    np.testing.assert_allclose(out[t, 8:], kaldi_filter @ feats[t - 4 : t + 5], rtol=1e-5, atol=1e-6)


def test_cmvn_as_kaldi_apply_cmvn():
    rng = np.random.default_rng(1)
    feats = rng.normal(3.0, 2.0, size=(200, 5)).astype(np.float32)
    stats = cmvn_stats(feats)
    assert stats.shape == (2, 6) and stats[0, -1] == 200 and stats[1, -1] == 0
    mean_only = apply_cmvn(feats, stats)
    np.testing.assert_allclose(mean_only.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(mean_only.std(axis=0), feats.std(axis=0), rtol=1e-5)
    normalised = apply_cmvn(feats, stats, norm_vars=True)
    np.testing.assert_allclose(normalised.std(axis=0), 1, rtol=1e-4)


def test_reader_applies_speaker_cmvn_before_deltas(data_dir, tmp_path):
    cfg = config()
    make_features(data_dir, tmp_path / "feats", cfg)
    reader = FeatureReader(tmp_path / "feats", cfg.features)
    raw = kaldiio.load_scp(str(tmp_path / "feats" / "feats.scp"))
    spka = [u for u in raw if u.startswith("spka")]
    stats = sum(cmvn_stats(raw[u]) for u in spka)
    stored_stats = kaldiio.load_scp(str(tmp_path / "feats" / "cmvn.scp"))
    assert sorted(stored_stats.keys()) == ["spka", "spkb"]
    np.testing.assert_allclose(stored_stats["spka"], stats, rtol=1e-6)
    utt = spka[0]
    expected = add_deltas(apply_cmvn(raw[utt], stats), 2, 2)
    np.testing.assert_allclose(reader[utt], expected, rtol=1e-5, atol=1e-5)
    assert reader[utt].shape[1] == 39
    # The statics of one speaker have zero mean over all its frames.
    frames = np.concatenate([reader[u][:, :13] for u in spka])
    np.testing.assert_allclose(frames.mean(axis=0), 0, atol=1e-4)


def test_parallel_jobs_give_the_same_features(data_dir, tmp_path):
    make_features(data_dir, tmp_path / "one", config())
    make_features(data_dir, tmp_path / "two", config("nj=2"))
    one = kaldiio.load_scp(str(tmp_path / "one" / "feats.scp"))
    two = kaldiio.load_scp(str(tmp_path / "two" / "feats.scp"))
    assert len(list((tmp_path / "two" / "ark").glob("raw_mfcc.*.ark"))) == 2
    for utt in one:
        np.testing.assert_array_equal(one[utt], two[utt])


def test_rerun_skips_and_a_changed_setting_redoes(data_dir, tmp_path, caplog):
    feat_dir = tmp_path / "feats"
    make_features(data_dir, feat_dir, config())
    ark = next((feat_dir / "ark").glob("*.ark"))
    mtime = ark.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        make_features(data_dir, feat_dir, config("features.delta_order=1", "nj=2"))  # load-time setting, nj
    assert "already done" in caplog.text
    assert ark.stat().st_mtime_ns == mtime
    caplog.clear()
    with caplog.at_level(logging.INFO):
        make_features(data_dir, feat_dir, config("features.kaldi.num_ceps=10"))
    assert "already done" not in caplog.text
    assert kaldiio.load_scp(str(feat_dir / "feats.scp"))["spka_0"].shape[1] == 10


def test_killed_run_resumes_without_a_half_written_feats_scp(data_dir, tmp_path, caplog):
    feat_dir, reference_dir = tmp_path / "feats", tmp_path / "reference"
    make_features(data_dir, reference_dir, config("nj=2"))
    make_features(data_dir, feat_dir, config("nj=2"))
    # What a kill during job 2 leaves: job 1 finished (its marker), job 2's ark half written, no feats.scp.
    (feat_dir / "ark" / ".done.job2").unlink()
    (feat_dir / ".done.features").unlink()
    (feat_dir / "feats.scp").unlink()
    ark2 = feat_dir / "ark" / "raw_mfcc.2.ark"
    ark2.write_bytes(ark2.read_bytes()[:100])

    with caplog.at_level(logging.INFO):
        make_features(data_dir, feat_dir, config("nj=2"))
    assert "1 of 2 jobs to run" in caplog.text
    resumed = kaldiio.load_scp(str(feat_dir / "feats.scp"))
    reference = kaldiio.load_scp(str(reference_dir / "feats.scp"))
    assert sorted(resumed.keys()) == sorted(reference.keys())
    for utt in reference:
        np.testing.assert_array_equal(resumed[utt], reference[utt])


def test_failing_job_keeps_finished_jobs_and_writes_no_feats_scp(data_dir, tmp_path, caplog):
    feat_dir = tmp_path / "feats"
    wav = Path(read_table(data_dir / "wav.scp")["spkb_4"])  # in job 2 of 2
    write_wav(wav, rate=16000)
    with pytest.raises(RecipeError, match="spkb_4.*16000 Hz"):
        make_features(data_dir, feat_dir, config("nj=2"))
    assert not (feat_dir / "feats.scp").exists()
    assert not (feat_dir / ".done.features").exists()
    assert (feat_dir / "ark" / ".done.job1").exists()

    write_wav(wav, rate=8000)
    with caplog.at_level(logging.INFO):
        make_features(data_dir, feat_dir, config("nj=2"))
    assert "1 of 2 jobs to run" in caplog.text
    assert len(kaldiio.load_scp(str(feat_dir / "feats.scp"))) == 10


def test_truncated_wav_is_named_before_any_work(data_dir, tmp_path):
    wav = read_table(data_dir / "wav.scp")["spkb_3"]
    data = open(wav, "rb").read()
    with open(wav, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataDirError, match=r"wav\.scp:9: 'spkb_3': .*truncated"):
        make_features(data_dir, tmp_path / "feats", config())
    assert not (tmp_path / "feats" / "feats.scp").exists()


def test_an_edited_transcript_is_copied_and_checked_again_without_extraction(data_dir, tmp_path, caplog):
    lang = tmp_path / "lang"
    lang.mkdir()
    (lang / "phones.txt").write_text("<blk> 0\nsil 1\na 2\nb 3\n")
    feat_dir = tmp_path / "feats"
    make_features(data_dir, feat_dir, config(), lang_dir=lang)
    ark = next((feat_dir / "ark").glob("raw_*.ark"))
    mtime = ark.stat().st_mtime_ns

    # A corrected reference in the data dir: stage 1 copies it (no job reruns), so later stages see it.
    text = data_dir / "text"
    text.write_text(text.read_text().replace("spka_2 a b", "spka_2 b a"))
    with caplog.at_level(logging.INFO):
        make_features(data_dir, feat_dir, config(), lang_dir=lang)
    assert "features already done" not in caplog.text
    assert "0 of 1 jobs to run" in caplog.text
    assert read_table(feat_dir / "text")["spka_2"] == "b a" and ark.stat().st_mtime_ns == mtime

    # The copy edited in the feature dir: found to differ from its source, and copied again.
    caplog.clear()
    (feat_dir / "text").write_text((feat_dir / "text").read_text().replace("spkb_1 a b", "spkb_1 a"))
    with caplog.at_level(logging.INFO):
        make_features(data_dir, feat_dir, config(), lang_dir=lang)
    assert f"{feat_dir / 'text'} differs from its source" in caplog.text
    assert read_table(feat_dir / "text")["spkb_1"] == "a b"

    # An unknown phone edited into the data dir: an error naming the file and line; the features stay.
    text.write_text(text.read_text().replace("spkb_3 a b", "spkb_3 a zz"))
    with pytest.raises(DataDirError, match=rf"{text}:9: 'spkb_3': phone 'zz' is not in"):
        make_features(data_dir, feat_dir, config(), lang_dir=lang)
    assert (feat_dir / "feats.scp").is_file() and ark.stat().st_mtime_ns == mtime


def test_nan_in_an_ark_is_refused_naming_the_ark_offset_and_utterance(data_dir, tmp_path):
    """A NaN in the stored features was trained on; the failure came later, blamed on an intact utterance."""
    feat_dir = tmp_path / "feats"
    make_features(data_dir, feat_dir, config("features.cmvn=utterance"))
    entry = read_table(feat_dir / "feats.scp")["spka_2"]
    ark, offset = entry.rsplit(":", 1)
    # A binary float matrix: '\0B', 'FM ', then rows and columns ('\4' and an int32 each), then the floats.
    with open(ark, "r+b") as f:
        f.seek(int(offset) + 2 + 3 + 10 + 3 * 13 * 4)  # frame 3
        f.write(np.float32(np.nan).tobytes())
    reader = FeatureReader(feat_dir, config("features.cmvn=utterance").features)
    assert np.isfinite(reader["spka_1"]).all()
    with pytest.raises(RecipeError, match=rf"{entry} \(utterance 'spka_2'\).*NaN or inf .*stored features.*frame 3"):
        reader["spka_2"]
    # Stage 1 again over the same jobs: it refuses the NaN where it sums CMVN statistics (they would spoil every
    # utterance of the speaker); a new feature dir, as the README advises, is whole.
    (feat_dir / ".done.features").unlink()
    with pytest.raises(RecipeError, match=r"utterance 'spka_2': its features hold NaN or inf values"):
        make_features(data_dir, feat_dir, config("features.cmvn=utterance"))
    shutil.rmtree(feat_dir)
    make_features(data_dir, feat_dir, config("features.cmvn=utterance"))
    assert np.isfinite(FeatureReader(feat_dir, config("features.cmvn=utterance").features)["spka_2"]).all()


def test_clipped_ark_is_refused_naming_the_ark_offset_and_utterance(data_dir, tmp_path):
    feat_dir = tmp_path / "feats"
    make_features(data_dir, feat_dir, config())
    entry = read_table(feat_dir / "feats.scp")["spkb_4"]  # the last matrix of the ark (nj=1)
    ark = Path(entry.rsplit(":", 1)[0])
    ark.write_bytes(ark.read_bytes()[:-10])
    reader = FeatureReader(feat_dir, config().features)
    with pytest.raises(RecipeError, match=rf"{entry} \(utterance 'spkb_4'\): cannot read"):
        reader["spkb_4"]


def test_an_utterance_over_max_utterance_seconds_is_warned_about_once(data_dir, tmp_path, caplog):
    cfg = config("nj=2", "corpus.max_utterance_seconds=0.42")  # utterances are 0.3-0.5 s
    with caplog.at_level(logging.WARNING):
        make_features(data_dir, tmp_path / "feats", cfg)
    warned = [r.getMessage() for r in caplog.records if "max_utterance_seconds" in r.getMessage()]
    assert sorted(m.split("'")[1] for m in warned) == ["spka_3", "spka_4", "spkb_3", "spkb_4"]
    assert any("utterance 'spka_4' is 0.5 s long, over corpus.max_utterance_seconds=0.42" in m for m in warned)
    assert all("segment long recordings first" in m for m in warned)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_features(data_dir, tmp_path / "feats", cfg)  # already done: no second warning
    assert "max_utterance_seconds" not in caplog.text
