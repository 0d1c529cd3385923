"""Every recurrent cell through the recipe (model.cell): a tiny FSDD run through stage 6 trains both models with
the cell, decodes and scores them, and the checkpoints and bundles hold the cell; a gated-feedback model's bundle
transcribes and aligns a recording (steps/transcribe.py, steps/align.py). The LSTM, the default, runs in every
other pipeline test."""

import json
import subprocess

import pytest
import torch
from conftest import REPO, SHARED_FSDD, fsdd_subset, project_env, run_sh

from phonerec.base.schema import CELLS, GF_CELLS

pytestmark = [pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs ../shared/corpora"), pytest.mark.slow]


@pytest.mark.parametrize("cell", [c for c in CELLS if c != "lstm"])
def test_a_tiny_run_with_the_cell(cell, tmp_path):
    root = fsdd_subset(tmp_path / "fsdd", takes=range(1))  # 10 utterances per split
    exp = tmp_path / "exp"
    overrides = [
        f"corpus.root={root}",
        f"paths.data={tmp_path}/data",
        f"paths.exp={exp}",
        f"paths.results={tmp_path}/RESULTS.md",
        "nj=1",
        f"model.cell={cell}",
        "model.num_layers=2",  # a gated-feedback stack's feedback runs between layers
        "model.hidden_size=16",
        "train.num_threads=1",
        "decode.num_threads=1",
        "train.viterbi.epochs=2",
        "train.viterbi.realign_epochs=[1]",
        "train.speed_perturb=[]",
        "train.ctc.epochs=1",
        "train.compare_ctc_inits=[]",
        "decode.decoders=[greedy]",
    ]
    result = run_sh("--stop-stage", "6", *overrides)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    for model in ("viterbi", "ctc"):
        checkpoint = torch.load(exp / model / "best.pt", map_location="cpu", weights_only=False)
        assert checkpoint["model_args"]["cell"] == cell
        for split in ("dev", "test"):
            total = json.loads((exp / model / f"decode_{split}_greedy" / "per.json").read_text())["total"]
            assert total["utts"] == 10 and total["per"] >= 0  # (two epochs: insertions may take it over 100)
        assert (exp / model / "bundle" / "model.pt").is_file()
    if cell not in GF_CELLS:
        return
    recording = SHARED_FSDD / "recordings" / "7_jackson_10.wav"  # a speaker in no data dir
    for script, args in (("transcribe.py", [recording]), ("align.py", [recording, "seven"])):
        step = subprocess.run(
            ["python", f"steps/{script}", str(exp / "ctc"), *map(str, args), "--out-dir", str(tmp_path / script)],
            cwd=REPO,
            env=project_env(),
            capture_output=True,
            text=True,
        )
        assert step.returncode == 0, step.stderr
        assert (tmp_path / script / "phones.ctm").read_text().strip()
