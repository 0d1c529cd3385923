#!/usr/bin/env python3
"""Force-align recordings with their transcripts: a Viterbi model through its HMM graph (optional silence as in
training), a CTC model by torchaudio's forced_align. Writes <out-dir>/phones.ctm and words.ctm (Kaldi CTM:
`<utt> 1 <start> <duration> <label>`) and <out-dir>/textgrid/<utt>.TextGrid (Praat, tiers "words" and
"phones"). Either one recording and its transcript (words, through the lexicon's first pronunciation of each;
with --phones, phones), or a whole --data-dir (its text as phones; the word tier from its words.ctm where it has
hand-labelled words, as TIMIT's, else from text.words; where it has hand-labelled phones, phones.ctm, also
<out-dir>/reference/textgrid/ of those and alignment_accuracy.json: phonerec.pipeline.align_stage). An empty
transcript is refused; a recording longer than the bundle's corpus.max_utterance_seconds is warned about.

  steps/align.py exp/fsdd/viterbi my_recording.wav "seven" --out-dir ali_out
  steps/align.py exp/fsdd/viterbi --data-dir data/fsdd/test --out-dir exp/fsdd/viterbi/align_test
"""

import logging
from pathlib import Path

from phonerec.base.errors import RecipeError
from phonerec.inference import load_model, read_recordings, write_alignments
from phonerec.pipeline.align_stage import align_stage
from phonerec.pipeline.cli import model_tool_main, model_tool_parser

log = logging.getLogger("phonerec")


def main(args) -> None:
    if args.data_dir is not None:
        if args.wav is not None:
            raise RecipeError("give either a recording and its transcript or --data-dir, not both")
        align_stage(args.exp_dir, args.data_dir, args.out_dir, args.device)
        return
    if args.wav is None or args.transcript is None:
        raise RecipeError("give a recording and its transcript, or --data-dir")
    if not args.transcript.split():  # it would align to nothing and write empty files
        raise RecipeError(f"{args.wav}: the transcript is empty: give its words (or its phones with --phones)")
    model = load_model(args.exp_dir, args.device)
    recordings = read_recordings(model.sample_rate, [args.wav])
    aligned = model.align(recordings, [args.transcript.split()], words=not args.phones)
    write_alignments(args.out_dir, aligned)
    log.info("%s: phones.ctm, words.ctm and textgrid/ of %d recordings", args.out_dir, len(aligned))


def parser():
    p = model_tool_parser(__doc__, recordings=False)
    p.add_argument("wav", type=Path, nargs="?", help="an audio file")
    p.add_argument("transcript", nargs="?", help="its transcript: words (or phones with --phones)")
    p.add_argument("--phones", action="store_true", help="the transcript is phones, not words")
    p.add_argument("--data-dir", type=Path, help="align every utterance of a data dir (text, text.words)")
    p.add_argument("--out-dir", type=Path, required=True, help="where phones.ctm, words.ctm and textgrid/ go")
    return p


if __name__ == "__main__":
    model_tool_main(main, parser())
