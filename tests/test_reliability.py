"""What a hostile or unlucky user meets: crafted and corrupt checkpoints, bad audio, kills; each gives a clear
message that names the file, or a resumable run."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_fsdd_copy

from phonerec.data.corpora.fsdd import prepare_fsdd
from phonerec.data.data_dir import read_table
from phonerec.features import make_features
from phonerec.pipeline.config import load_config
from phonerec.pipeline.errors import RecipeError
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
    prepare_fsdd(cfg, tmp_path / "data")
    return cfg, tmp_path / "data"


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
