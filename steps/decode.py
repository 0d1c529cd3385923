#!/usr/bin/env python3
"""Decode a feature dir with a trained model (<model-dir>/<decode.checkpoint>.pt) and one decoder of
decode.decoders (phonerec.decoding.decoders): greedy (CTC best path; the Viterbi model's frame argmax), lm (the
phone LM: CTC prefix beam search; hybrid Viterbi through a phone loop), words (through the lexicon, the digit
corpora). A tuned decoder without --tuned-dir tunes its weights over its grid on this set (dev: tuning.json); with
it, the values chosen there decode the set once (test). Writes hyp.txt, ref.txt, utt2spk, model (the checkpoint),
decoder.json (the decoder and its values), tuning.json when it tuned, and where the set has hand-labelled
segments (TIMIT) and the decoder's model gives alignments, ali.ctm and alignment_accuracy.json (a Viterbi model
aligns with <model-dir>/best_alignment.pt where training kept one: decode.align_checkpoint)."""

from pathlib import Path

from phonerec.base.ownership import exclusive
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.decode_stages import decode_stage


def main(args, cfg):
    with exclusive(args.decode_dir):
        decode_stage(
            cfg,
            args.decoder,
            args.feat_dir,
            args.lang_dir,
            args.model_dir,
            args.lm_dir,
            args.decode_dir,
            args.tuned_dir,
        )


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [
            ("feat_dir", "feature dir to decode"),
            ("lang_dir", "lang dir"),
            ("model_dir", "experiment dir of the model"),
            ("lm_dir", "LM dir (stage 4's make_lm)"),
            ("decode_dir", "output decode dir"),
        ],
        {
            "--decoder": {"required": True, "help": "a name in decode.decoders: greedy, lm, words"},
            "--tuned-dir": {"type": Path, "help": "decode dir of the set that tuned the weights"},
        },
    )
