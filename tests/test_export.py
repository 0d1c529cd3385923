"""Export of the acoustic model (phonerec.model.export, phonerec.pipeline.export_stage): TorchScript and ONNX with
dynamic batch and length, equal to the eager model on real FSDD features at another batch size and length than
the export example. steps/export_model.py on a bundle: tests/test_inference.py."""

import json

import pytest
import torch
from conftest import SHARED_FSDD, fsdd_subset

from phonerec.base.config import load_config
from phonerec.base.schema import CELLS, GF_CELLS
from phonerec.model import export
from phonerec.model.recurrent import RecurrentAcousticModel
from phonerec.pipeline.export_stage import export_model
from phonerec.pipeline.features_stage import make_features
from phonerec.pipeline.prepare_stage import prepare_stage
from phonerec.training.checkpoints import load_model

pytestmark = pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs ../shared/corpora")
# A Viterbi model that splices and subsamples, and a CTC model made from one (pooled states, blank first).
MODELS = {
    "viterbi": {"num_outputs": 30, "num_layers": 2, "hidden_size": 24, "splice": 1, "subsample": 3},
    "ctc": {"num_outputs": 31, "num_layers": 2, "hidden_size": 24, "pool_states": 3},
}


@pytest.fixture(scope="module")
def feat_dir(tmp_path_factory):
    """MFCC features of one FSDD speaker's real recordings (2 takes of 0-9), as the recipe makes them."""
    tmp = tmp_path_factory.mktemp("export")
    cfg = load_config([f"corpus.root={fsdd_subset(tmp / 'fsdd', takes=range(2))}", f"paths.data={tmp}/data", "nj=1"])
    prepare_stage(cfg, tmp / "data", "fsdd")
    make_features(tmp / "data" / "train", tmp / "data" / "mfcc" / "train", cfg, lang_dir=tmp / "data" / "lang")
    return tmp / "data" / "mfcc" / "train"


def trained_like(tmp_path, kind: str, cell: str = "lstm"):
    """An experiment dir with a best.pt of a model of `kind` (random weights), as training writes it."""
    torch.manual_seed(0)
    model_args = {"input_dim": 39, "dropout": 0.2, **MODELS[kind], "cell": cell}
    model = RecurrentAcousticModel(**model_args)
    features = {"cmvn": "speaker", "norm_vars": False, "delta_order": 2, "delta_window": 2}
    priors = torch.randn(30).log_softmax(0) if kind == "viterbi" else None
    model_dir = tmp_path / kind / cell
    model_dir.mkdir(parents=True)
    checkpoint = {"model": model.state_dict(), "model_args": model_args, "kind": kind, "epoch": 7}
    torch.save(checkpoint | {"task": {"log_priors": priors}, "config": {"features": features}}, model_dir / "best.pt")
    return model_dir, model.eval()


def export_trained(model_dir, out, feat_dir) -> dict:
    return export_model(*load_model(model_dir / "best.pt"), out, feat_dir, model_dir / "best.pt")


@pytest.mark.parametrize("kind", ["viterbi", "ctc"])
def test_exports_match_the_eager_model_at_other_batch_sizes_and_lengths(kind, feat_dir, tmp_path):
    model_dir, model = trained_like(tmp_path, kind)
    out = tmp_path / "export"
    differences = export_trained(model_dir, out, feat_dir)
    assert differences.keys() == {"torchscript", "onnx"} and max(differences.values()) <= 1e-5
    info = json.loads((out / "export.json").read_text())
    assert info["kind"] == kind and info["epoch"] == 7 and info["model_args"]["input_dim"] == 39
    assert info["checkpoint"] == str((model_dir / "best.pt").resolve())
    assert (info["log_priors"] is not None) == (kind == "viterbi") and info["features_at_load"]["cmvn"] == "speaker"

    # Loaded back on their own: one utterance, of a length that is neither the example's nor the check's.
    feats = torch.randn(1, 41, 39)
    lengths = torch.tensor([41])
    for path, run in ((out / "model.ts.pt", export.run_torchscript), (out / "model.onnx", export.run_onnx)):
        assert export.max_difference(model, run, path, feats, lengths) <= 1e-5
    # The check can fail: other weights give other posteriors.
    with torch.no_grad():
        model.output.bias += 0.1 * torch.arange(model.output.out_features)
    assert export.max_difference(model, export.run_onnx, out / "model.onnx", feats, lengths) > 1e-2


@pytest.mark.parametrize("cell", [c for c in CELLS if c != "lstm"])
def test_every_cell_exports_to_torchscript_and_the_standard_ones_to_onnx(cell, feat_dir, tmp_path):
    """A gated-feedback stack is scripted inside the traced model: its frame loop takes any length (the check runs
    at another length than the example). ONNX: torch's cells; a gated-feedback cell is named with the reason."""
    model_dir, model = trained_like(tmp_path, "ctc", cell)
    out = tmp_path / "export"
    differences = export_trained(model_dir, out, feat_dir)
    info = json.loads((out / "export.json").read_text())
    assert differences["torchscript"] <= 1e-5 and info["model_args"]["cell"] == cell
    if cell in GF_CELLS:
        assert "onnx" not in differences and not (out / "model.onnx").exists()
        assert info["not_exported"]["onnx"].startswith(f"model.cell={cell}: its frame loop is a TorchScript function")
        with pytest.raises(ValueError, match=f"no ONNX export: model.cell={cell}"):
            export.export_onnx(model, out / "model.onnx", export.example_inputs(model))
    else:
        assert differences["onnx"] <= 1e-5 and info["not_exported"] == {}
