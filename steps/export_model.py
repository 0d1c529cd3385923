#!/usr/bin/env python3
"""Export a trained model to TorchScript and ONNX: <exp-dir> is a model's experiment dir (exp/<recipe>/viterbi or
.../ctc, with the bundle stage 6 wrote), a bundle dir, or the recipe's exp dir (exp/<recipe>: the model chosen on
dev), as steps/transcribe.py takes it. Writes into <out-dir>: model.ts.pt (torch.jit.load), model.onnx
(onnxruntime; `pip install onnx onnxruntime`, in requirements-dev.txt; none for a gated-feedback cell: the log and
export.json say why), both with dynamic batch and length; export.json (the model's settings, its output units,
the state priors of a Viterbi model, and what to apply outside the graph); phones.txt (a CTC model's outputs are
blank, then these), states.txt (a Viterbi model's outputs) and features.yaml (features, CMVN, deltas as training
read them). Each export is checked against the eager model on utterances of --feats (a feature dir; random
features without it) at another batch size and length than its example; more than 1e-5 apart is an error.

  steps/export_model.py exp/fsdd/ctc exp/fsdd/ctc/export --feats data/fsdd/mfcc/test
"""

import logging
from pathlib import Path

from phonerec.pipeline.cli import model_tool_main, model_tool_parser
from phonerec.pipeline.export_stage import export_bundle

log = logging.getLogger("phonerec")


def main(args) -> None:
    written = export_bundle(args.exp_dir, args.out_dir, args.feats)
    log.info("%s: %s", args.out_dir, ", ".join(written))


def parser():
    p = model_tool_parser(__doc__, recordings=False, device=False)
    p.add_argument("out_dir", type=Path, help="where the exported files go")
    p.add_argument("--feats", type=Path, help="a feature dir whose utterances the check runs on")
    return p


if __name__ == "__main__":
    model_tool_main(main, parser())
