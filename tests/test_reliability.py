"""What a hostile or unlucky user meets: crafted and corrupt checkpoints, bad audio, kills; each gives a clear
message that names the file, or a resumable run."""

import fcntl
import json
import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ONE_POINT_GRIDS, fsdd_subset, kill_run_sh_when, make_fsdd_copy, run_sh, tiny_run

from phonerec.base.config import load_config
from phonerec.base.errors import RecipeError
from phonerec.data.data_dir import read_table
from phonerec.pipeline.features_stage import make_features
from phonerec.pipeline.prepare_stage import prepare_stage
from phonerec.training.checkpoints import load_checkpoint, load_model


class _RunsACommand:
    """Unpickling this runs `touch <path>`: what a crafted checkpoint does with weights_only=False."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_a_checkpoint_that_carries_a_pickled_object_is_refused(tmp_path):
    ran = tmp_path / "it-ran"
    crafted = tmp_path / "best.pt"
    torch.save({"model": {}, "model_args": {}, "kind": "ctc", "epoch": 1, "task": _RunsACommand(ran)}, crafted)
    with pytest.raises(RecipeError, match=rf"{crafted}: refused: it holds a pickled Python object \(posix.system\)"):
        load_model(crafted)
    assert not ran.exists()


def test_a_truncated_checkpoint_is_named(tmp_path):
    whole = tmp_path / "epoch-3.pt"
    torch.save({"epoch": 3, "model": {"w": torch.ones(3)}}, whole)
    assert load_checkpoint(whole)["epoch"] == 3
    truncated = tmp_path / "epoch-4.pt"
    truncated.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(RecipeError, match=rf"{truncated}: not a readable checkpoint \(truncated or corrupt\?\)"):
        load_checkpoint(truncated)


@pytest.fixture
def prepared_fsdd(tmp_path):
    """A fake FSDD copy through stage 0: (config, data dir)."""
    root = tmp_path / "fsdd"
    manifest = make_fsdd_copy(root, speakers=("george", "nicolas", "theo"), digits=range(2), takes=range(2))
    cfg = load_config([f"corpus.root={root}", f"corpus.manifest={manifest}", f"paths.data={tmp_path}/data", "nj=1"])
    prepare_stage(cfg, tmp_path / "data", "fsdd")
    return cfg, tmp_path / "data"


def _write(samples, rate=8000, subtype="PCM_16"):
    return lambda path: sf.write(str(path), samples, rate, subtype=subtype)


def _nan_floats(path):
    samples = 0.3 * np.sin(np.arange(1600) / 5)
    samples[100:300] = np.nan
    sf.write(str(path), samples, 8000, subtype="FLOAT")


def _header_only(path):
    sf.write(str(path), np.zeros(0, dtype=np.int16), 8000)


TONE = (3000 * np.sin(np.arange(1600) / 5)).astype(np.int16)
# A bad recording in a prepared corpus -> what stage 1 (validation, then extraction) must say about it.
BAD_AUDIO = {
    "empty file": (lambda path: path.write_bytes(b""), "unreadable"),
    "header only": (_header_only, "no audio samples"),
    "not audio": (lambda path: path.write_text("a text file, not audio\n" * 10), "unreadable"),
    "stereo": (_write(np.stack([TONE, TONE], axis=1)), "2 channels, expected mono"),
    "wrong rate": (_write(TONE, rate=16000), "is at 16000 Hz, the corpus at 8000 Hz"),
    "NaN samples": (_nan_floats, "200 of 1600 samples are not finite"),
    "all zero": (_write(np.zeros(1600, dtype=np.int16)), "every sample is zero"),
    "shorter than a frame": (_write(TONE[:100]), "shorter than one frame"),
}


@pytest.mark.parametrize("case", BAD_AUDIO)
def test_a_bad_recording_is_an_error_that_names_its_utterance_and_file(prepared_fsdd, case):
    cfg, data = prepared_fsdd
    utt, path = sorted(read_table(data / "train" / "wav.scp").items())[2]
    damage, message = BAD_AUDIO[case]
    damage(Path(path))
    with pytest.raises(RecipeError) as err:
        make_features(data / "train", data / "mfcc" / "train", cfg)
    assert utt in str(err.value) and path in str(err.value) and message in str(err.value), str(err.value)
    assert not (data / "mfcc" / "train" / "feats.scp").exists()  # no half-made feature dir looks done


def test_non_finite_or_silent_audio_is_an_error_that_names_the_file(prepared_fsdd):
    cfg, data = prepared_fsdd
    utt, path = next(iter(read_table(data / "train" / "wav.scp").items()))
    samples = 0.3 * np.sin(np.arange(1600) / 5)
    samples[100:300] = np.nan  # a float wav: read as int16, these samples (and the file) became silence
    sf.write(path, samples, 8000, subtype="FLOAT")
    with pytest.raises(
        RecipeError, match=rf"utterance '{utt}': cannot read {path}: .*200 of 1600 samples are not finite"
    ):
        make_features(data / "train", data / "mfcc" / "train", cfg)
    sf.write(path, np.zeros(1600, dtype=np.int16), 8000)
    with pytest.raises(RecipeError, match=rf"utterance '{utt}': cannot read {path}: .*every sample is zero"):
        make_features(data / "train", data / "mfcc" / "train", cfg)


def _hold(lock_dir, mode):
    """Hold <lock_dir>/.run.lock as another run.sh would (flock(2), as flock(1) takes it): returns the open file."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    handle = open(lock_dir / ".run.lock", "a")
    fcntl.flock(handle, mode | fcntl.LOCK_NB)
    return handle


@pytest.mark.slow
def test_a_run_that_would_write_what_another_reads_or_writes_is_refused_before_it_writes(tmp_path):
    root = fsdd_subset(tmp_path / "fsdd", takes=range(2))
    exp = tmp_path / "exp"
    overrides = [f"corpus.root={root}", *tiny_run(tmp_path, exp), "train.viterbi.epochs=1", "models=[viterbi]"]
    overrides += ["train.viterbi.realign_epochs=[1]"]
    assert run_sh("--stop-stage", "1", *overrides).returncode == 0
    feats = tmp_path / "data" / "mfcc" / "train"
    before = {p.name: p.stat().st_mtime_ns for p in feats.iterdir()}

    # A first run trains on the features (it holds them shared). A second one with other feature settings would
    # rewrite them: refused before stage 1 starts, and the features are as they were.
    reader = _hold(feats, fcntl.LOCK_SH)
    result = run_sh("--stage", "1", "--stop-stage", "1", *overrides, "features.kaldi.low_freq=100")
    assert result.returncode == 1 and f"{feats} is in use by another run (this run writes it)" in result.stdout
    assert "Stage 1" not in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in feats.iterdir()} == before

    # A run that only reads them (another training run, its own exp dir) goes ahead beside the first.
    result = run_sh("--stage", "2", "--stop-stage", "2", *overrides, f"paths.exp={tmp_path}/exp2")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    reader.close()

    # While the first run writes its Viterbi model, a run that would train CTC from it (read it) is refused.
    writer = _hold(exp / "viterbi", fcntl.LOCK_EX)
    result = run_sh("--stage", "3", "--stop-stage", "3", *overrides, "models=[viterbi,ctc]")
    assert result.returncode == 1 and f"{exp}/viterbi is in use by another run (this run reads it)" in result.stdout
    writer.close()


def _results(tmp):
    """What a run produced that must not depend on its being killed: the features, the models' weights, every
    decode's hypotheses and PER, the bundles' decoder figures, the test alignments."""
    data, exp = tmp / "data", tmp / "exp"
    found = {}
    for split in ("train", "dev", "test"):
        for utt, feats in kaldiio.load_scp(str(data / "mfcc" / split / "feats.scp")).items():
            found[f"feats {split} {utt}"] = feats.tobytes()
    for model in ("viterbi", "ctc"):
        for name, tensor in torch.load(exp / model / "best.pt", weights_only=True)["model"].items():
            found[f"{model} {name}"] = tensor.numpy().tobytes()
        for decode in sorted((exp / model).glob("decode_*")):
            found[f"{decode.name} hyp"] = (decode / "hyp.txt").read_text()
            found[f"{decode.name} per"] = json.loads((decode / "per.json").read_text())["total"]
        found[f"{model} decoders"] = json.loads((exp / model / "bundle" / "decoders.json").read_text())
        found[f"{model} alignment"] = (exp / model / "align_test" / "phones.ctm").read_text()
    return found


@pytest.mark.slow
def test_a_run_killed_in_every_stage_resumes_to_what_an_uninterrupted_run_gives(tmp_path):
    """SIGKILL during feature extraction (one job of two done), after a Viterbi re-alignment round, during CTC
    training, between decodes, during scoring and between bundles; each time the same command resumes."""
    root = fsdd_subset(tmp_path / "fsdd", takes=range(2))

    def overrides(tmp):
        return [f"corpus.root={root}", *tiny_run(tmp, tmp / "exp"), *ONE_POINT_GRIDS, "nj=2", "train.ctc.epochs=2"]

    reference = tmp_path / "reference"
    result = run_sh(*overrides(reference), "train.compare_ctc_inits=[]", "decode.decoders=[greedy,lm]")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]

    killed = tmp_path / "killed"
    args = [*overrides(killed), "train.compare_ctc_inits=[]", "decode.decoders=[greedy,lm]"]
    exp = killed / "exp"
    for trigger in (
        killed / "data" / "mfcc" / "train" / "ark" / ".done.job1",
        exp / "viterbi" / "ali" / "iter1" / "stats.json",
        exp / "ctc" / "checkpoints" / "epoch-1.pt",
        exp / "viterbi" / "decode_dev_lm" / ".done.decode",
        exp / "viterbi" / "decode_dev_greedy" / "per.json",
        exp / "viterbi" / "bundle" / ".done.bundle",
    ):
        kill_run_sh_when(trigger, *args)
    result = run_sh(*args)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert _results(killed) == _results(reference)


def test_an_utterance_too_short_for_ctc_is_reported_and_left_out(caplog):
    from phonerec.data.dataset import Example
    from phonerec.model.recurrent import RecurrentAcousticModel
    from phonerec.training.ctc import CTCTask

    model = RecurrentAcousticModel(input_dim=4, num_outputs=4, num_layers=1, hidden_size=4, subsample=2)
    examples = [
        Example("long", "s", torch.zeros(10, 4), [1, 2, 2], None),  # 5 frames for 3 labels and a repeat: enough
        Example("short", "s", torch.zeros(7, 4), [1, 2, 2, 3], None),  # 4 frames, 5 needed
    ]
    with caplog.at_level("WARNING"):
        task = CTCTask(examples, [], None, model, {}, None)
    assert "1 training utterances are too short for their labels, skipped: short" in caplog.text
    assert [e.utt for e in task.train_examples(examples)] == ["long"]
