"""End to end: run.sh stages 0-1 on a subset of the real FSDD recordings in ../shared/corpora/fsdd."""

import subprocess

import pytest
from conftest import REPO, SHARED_FSDD, project_env

from phonerec.config import load_config
from phonerec.data_dir import read_table, validate_data_dir
from phonerec.features import FeatureReader

pytestmark = pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs ../shared/corpora/fsdd")


def run_sh(*args):
    return subprocess.run(["./run.sh", *args], cwd=REPO, env=project_env(), capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_stages_0_1_on_fsdd_subset(tmp_path):
    # A copy holding takes 0-4 of three speakers, as links to the shared recordings.
    root = tmp_path / "fsdd"
    (root / "recordings").mkdir(parents=True)
    for speaker in ("george", "nicolas", "theo"):
        for digit in range(10):
            for take in range(5):
                name = f"{digit}_{speaker}_{take}.wav"
                (root / "recordings" / name).symlink_to(SHARED_FSDD / "recordings" / name)
    data = tmp_path / "data"
    overrides = [f"corpus.root={root}", f"paths.data={data}", f"paths.exp={tmp_path}/exp", "nj=2"]

    result = run_sh("--stop-stage", "1", *overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "missing: jackson lucas yweweler" in result.stderr
    for split, speaker in (("train", "george"), ("dev", "theo"), ("test", "nicolas")):
        assert set(read_table(data / split / "utt2spk").values()) == {speaker}
        assert validate_data_dir(data / "mfcc" / split, data / "lang") == 50
    reader = FeatureReader(data / "mfcc" / "train", load_config([]).features)
    assert reader["george_3_04"].shape[1] == 39
    assert (data / "mfcc" / "train" / "config.yaml").is_file()
    assert "Done in" in result.stdout

    # Stage 1 again: a logged no-op for every split.
    result = run_sh("--stage", "1", *overrides)
    assert result.returncode == 0
    assert result.stderr.count("features already done with these settings") == 3

    # A wav.scp entry pointing at a truncated wav: a clear error naming it, and the old features kept.
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes((SHARED_FSDD / "recordings" / "3_george_4.wav").read_bytes()[:3000])
    wav_scp = data / "train" / "wav.scp"
    lines = wav_scp.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("george_3_04 "))
    lines[index] = f"george_3_04 {truncated}"
    wav_scp.write_text("\n".join(lines) + "\n")
    result = run_sh("--stage", "1", *overrides)
    assert result.returncode == 1
    assert f"wav.scp:{index + 1}: 'george_3_04': {truncated}: truncated" in result.stderr
    assert (data / "mfcc" / "train" / "feats.scp").is_file()
