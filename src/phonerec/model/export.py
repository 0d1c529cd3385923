"""The acoustic model outside Python: TorchScript (`torch.jit.trace`) and ONNX (torch.onnx's TorchScript-based
exporter, `dynamo=False`, with dynamic batch and length axes), each checked against the eager model at another
batch size and length than the example it was made from.

Why these two: the model does not pass `torch.jit.script` (its forward checks shapes with Python), and
`torch.export` / `torch.onnx.export(dynamo=True)` fix the time axis of `nn.LSTM`, so onnxruntime then refuses
other lengths (torch 2.11 marks torch.jit deprecated; it is still the exporter that keeps the LSTM's length
dynamic). Tracing records the LSTM and the masking and reversal by lengths as graph ops, which take any batch
and length. The model's own checks (feature dim, lengths within the frames) run at trace time only.

What the exported graph computes: (feats (B, T, input_dim) float32, lengths (B,) int64) -> (log_probs (B, T', outputs)
float32, out_lengths (B,) int64), frames past out_lengths don't-care, as `RecurrentAcousticModel.forward`. What the
user applies outside it: the features (Kaldi MFCC or fbank as the recipe's features config says), CMVN and
deltas as training loaded them, and for a Viterbi (hybrid) model the division by the state priors (export.json
beside the files holds all of these settings and the priors; phonerec.pipeline.export_stage writes it).
Cells: torch's (nn.LSTM, nn.GRU, nn.RNN per direction) trace to both formats. A gated-feedback stack is a loop over
frames, which tracing would unroll to the example's length: it is scripted (`torch.jit.script`) before the rest
is traced, so the TorchScript file keeps the loop and takes any length. ONNX does not take it: torch.onnx's
TorchScript-based exporter fails on the scripted loop (its lists of tensors per frame; "Invalid tensor data type"),
and torch.export / the dynamo exporter would fix the number of frames, so `onnx_unsupported` names the cell and the
reason and the export stage writes the TorchScript file alone."""

import copy
import warnings
from pathlib import Path

import torch

from phonerec.base.schema import GF_CELLS
from phonerec.model.recurrent import RecurrentAcousticModel

INPUTS, OUTPUTS = ["feats", "lengths"], ["log_probs", "out_lengths"]
DYNAMIC_AXES = {
    "feats": {0: "batch", 1: "frames"},
    "lengths": {0: "batch"},
    "log_probs": {0: "batch", 1: "out_frames"},
    "out_lengths": {0: "batch"},
}
ONNX_OPSET = 17


def example_inputs(
    model: RecurrentAcousticModel, batch: int = 2, frames: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features to trace with: `batch` utterances of `frames` and fewer frames (the masking path)."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.linspace(frames, max(1, frames // 2), batch).long()
    return torch.randn(batch, frames, model.input_dim, generator=generator), lengths


def onnx_unsupported(model: RecurrentAcousticModel) -> str | None:
    """Why the model has no ONNX export, or None where it has one."""
    if model.cell in GF_CELLS:
        return (
            f"model.cell={model.cell}: its frame loop is a TorchScript function, which torch.onnx's TorchScript-based "
            "exporter cannot convert (lists of tensors per frame), and the dynamo exporter would fix the number of "
            "frames; use the TorchScript export"
        )
    return None


def export_torchscript(model: RecurrentAcousticModel, path: Path, example) -> None:
    with warnings.catch_warnings():  # the tracer warns of the shape checks it evaluates once, and of its deprecation
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        model = copy.deepcopy(model).eval()
        if model.gated_feedback is not None:  # its frame loop kept as a loop (traced, it would be unrolled)
            model.gated_feedback = torch.jit.script(model.gated_feedback)
        traced = torch.jit.trace(model, example)
    traced.save(str(path))


def export_onnx(model: RecurrentAcousticModel, path: Path, example) -> None:
    if (reason := onnx_unsupported(model)) is not None:
        raise ValueError(f"no ONNX export: {reason}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            example,
            str(path),
            dynamo=False,
            input_names=INPUTS,
            output_names=OUTPUTS,
            dynamic_axes=DYNAMIC_AXES,
            opset_version=ONNX_OPSET,
        )


def run_torchscript(path: Path, feats: torch.Tensor, lengths: torch.Tensor):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))(feats, lengths)


def run_onnx(path: Path, feats: torch.Tensor, lengths: torch.Tensor):
    """The ONNX model in onnxruntime (an optional dependency: `pip install onnxruntime`)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    log_probs, out_lengths = session.run(None, {"feats": feats.numpy(), "lengths": lengths.numpy()})
    return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)


def max_difference(model: RecurrentAcousticModel, run, path: Path, feats: torch.Tensor, lengths: torch.Tensor) -> float:
    """The largest difference between the exported model's log-posteriors and the eager model's over each
    utterance's frames, relative to the eager value where that is beyond +-1 (a trained model's unlikely outputs
    reach -30 and below, where float32 keeps 6e-6 apart); raises if the output lengths differ."""
    with torch.no_grad():
        reference, reference_lengths = model.eval()(feats, lengths)
    log_probs, out_lengths = run(path, feats, lengths)
    if not torch.equal(out_lengths.long(), reference_lengths.long()):
        raise RuntimeError(f"{path}: output lengths {out_lengths.tolist()}, eager {reference_lengths.tolist()}")
    return max(
        float(((log_probs[k, :n] - reference[k, :n]).abs() / reference[k, :n].abs().clamp(min=1.0)).max())
        for k, n in enumerate(reference_lengths)
    )
