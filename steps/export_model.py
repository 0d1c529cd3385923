#!/usr/bin/env python3
"""Export a trained model (decode.checkpoint of <model-dir>: best or last) to TorchScript and ONNX in <out-dir>:
model.ts.pt (torch.jit.load), model.onnx (onnxruntime; `pip install onnx onnxruntime`, in requirements-dev.txt;
none for a gated-feedback cell: the log and export.json say why), both with dynamic batch and length, and
export.json (the model's settings, its output units, the state priors of a Viterbi model, and what to apply outside
the graph: features, CMVN, deltas, priors). Each export is checked against the eager model on utterances of --feats
(a feature dir; random features without it) at another batch size and length than its example; more than 1e-5
apart is an error."""

from pathlib import Path

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.export_stage import export_model


def main(args, cfg):
    with exclusive(args.out_dir):
        export_model(cfg, args.model_dir, args.out_dir, args.feats)


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [("model_dir", "experiment dir of a trained model (best.pt, last.pt)"), ("out_dir", "output dir")],
        {"--feats": {"type": Path, "help": "feature dir whose utterances the check runs on"}},
    )
