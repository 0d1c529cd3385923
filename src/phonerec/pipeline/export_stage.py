"""Export of a trained model's bundle (steps/export_model.py): its acoustic model as TorchScript and ONNX
(phonerec.model.export), checked against the eager model on real features of a feature dir at another batch
size and length than the export example; export.json, and the files it names for what a user must apply outside
the graph: phones.txt (and a Viterbi model's states.txt), features.yaml."""

import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from phonerec.base.errors import RecipeError
from phonerec.base.files import copy_atomic, write_json_atomic, write_text_atomic
from phonerec.data.features import FeatureReader
from phonerec.inference import load_model
from phonerec.model import export

log = logging.getLogger(__name__)
TOLERANCE = 1e-5  # the largest difference to the eager model's log-posteriors accepted (export.max_difference)


def export_bundle(exp_dir: Path, out_dir: Path, feat_dir: Path | None = None) -> list[str]:
    """The model of a bundle (exp_dir as phonerec.inference.load_model takes it: a model's exp dir, a bundle dir,
    or a recipe's exp dir) -> out_dir: export_model's files, the bundle's lang/phones.txt (a CTC model's outputs
    are blank, then these phones) and, for a Viterbi model, lang/states.txt (its outputs, in order), and
    features.yaml: the bundle's feature settings (extraction as stage 1 made them, CMVN and deltas as training
    loaded them). Returns the names written, for the log."""
    trained = load_model(exp_dir)
    differences = export_model(trained.model, trained.checkpoint, out_dir, feat_dir, trained.dir / "model.pt")
    units = ["phones.txt"] + (["states.txt"] if trained.kind == "viterbi" else [])
    for name in units:
        copy_atomic(trained.lang_dir / name, out_dir / name)
    write_text_atomic(out_dir / "features.yaml", OmegaConf.to_yaml(trained.cfg.features))
    return [*(FILES[name] for name in differences), "export.json", *units, "features.yaml"]


FILES = {"torchscript": "model.ts.pt", "onnx": "model.onnx"}  # each export format's file


def export_model(model, checkpoint: dict, out_dir: Path, feat_dir: Path | None = None, source: Path | None = None):
    """A loaded model and its checkpoint (phonerec.training.checkpoints.load_model; `source`: the file it came
    from, for export.json) -> out_dir/{model.ts.pt, model.onnx, export.json} (no model.onnx for a gated-feedback
    cell: export.onnx_unsupported, said in the log and in export.json's not_exported). The check runs on up to
    five utterances of feat_dir (features as training loaded them), else on random features; returns the largest
    difference per format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    example = export.example_inputs(model)
    feats, lengths = _check_inputs(model, feat_dir, checkpoint)
    if feats.shape[0] == example[0].shape[0] and feats.shape[1] == example[0].shape[1]:
        raise RecipeError("the check batch has the export example's shape: it would not test the dynamic axes")
    formats = {
        "torchscript": (FILES["torchscript"], export.export_torchscript, export.run_torchscript),
        "onnx": (FILES["onnx"], export.export_onnx, export.run_onnx),
    }
    not_exported = {}
    if (reason := export.onnx_unsupported(model)) is not None:
        not_exported["onnx"] = reason
        log.warning("%s: no ONNX export: %s", out_dir, reason)
        del formats["onnx"]
    differences = {}
    for name, (file_name, write, run) in formats.items():
        path = out_dir / file_name
        write(model, path, example)
        differences[name] = export.max_difference(model, run, path, feats, lengths)
        log.info(
            "%s: %s, max difference to the eager model %.2e (relative beyond +-1; %s)",
            *(path, name, differences[name], _shape(feats)),
        )
        if not differences[name] <= TOLERANCE:
            raise RecipeError(f"{path}: differs from the eager model by {differences[name]:.2e} > {TOLERANCE}")
    priors = checkpoint.get("task", {}).get("log_priors")
    units = "blank, then the phones of phones.txt" if checkpoint["kind"] == "ctc" else "the states of states.txt"
    outside = [
        "features: Kaldi MFCC or fbank as features.yaml says (the training feature dir's config.yaml)",
        "CMVN (features.cmvn, features.norm_vars) and deltas (features.delta_order, features.delta_window)",
    ]
    if priors is not None:
        outside.append("hybrid decoding: subtract decode.prior_scale x log_priors (scaled likelihoods)")
    write_json_atomic(
        out_dir / "export.json",
        {
            "checkpoint": None if source is None else str(source.resolve()),
            "epoch": checkpoint["epoch"],
            "kind": checkpoint["kind"],
            "model_args": checkpoint["model_args"],
            "inputs": "feats (batch, frames, input_dim) float32, lengths (batch,) int64",
            "outputs": "log_probs (batch, out_frames, num_outputs) float32 log-softmax, out_lengths (batch,) int64",
            "output_units": units,
            "apply_outside": outside,
            "features_at_load": checkpoint["config"]["features"],  # CMVN and deltas as training applied them
            "log_priors": None if priors is None else [float(p) for p in priors],
            "max_difference": differences,
            "not_exported": not_exported,
            "onnx_opset": export.ONNX_OPSET,
        },
    )
    return differences


def _check_inputs(model, feat_dir: Path | None, checkpoint: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to five utterances of feat_dir of different lengths, padded; 3 random ones of 97 frames and fewer
    without a feature dir."""
    if feat_dir is None:
        generator = torch.Generator().manual_seed(1)
        return torch.randn(3, 97, model.input_dim, generator=generator), torch.tensor([97, 60, 31])
    reader = FeatureReader(feat_dir, OmegaConf.create(checkpoint["config"]["features"]))
    utts = sorted(reader.keys())
    by_length = {}
    for utt in utts:
        by_length.setdefault(reader[utt].shape[0], utt)
    chosen = [by_length[n] for n in sorted(by_length, reverse=True)[:5]]
    examples = [torch.from_numpy(reader[u]) for u in chosen]
    if examples[0].shape[1] != model.input_dim:
        raise RecipeError(f"{feat_dir}: features of {examples[0].shape[1]} dims, the model takes {model.input_dim}")
    return torch.nn.utils.rnn.pad_sequence(examples, batch_first=True), torch.tensor([len(e) for e in examples])


def _shape(feats: torch.Tensor) -> str:
    return f"checked on a batch of {feats.shape[0]} x {feats.shape[1]} frames"
