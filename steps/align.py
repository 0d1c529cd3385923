#!/usr/bin/env python3
"""Force-align recordings with their transcripts: a Viterbi model through its HMM graph (optional silence as in
training), a CTC model by torchaudio's forced_align. Writes <out-dir>/phones.ctm and words.ctm (Kaldi CTM:
`<utt> 1 <start> <duration> <label>`) and <out-dir>/textgrid/<utt>.TextGrid (Praat, tiers "words" and
"phones"). Either one recording and its transcript, or a whole --data-dir (its text as phones; the word tier
from its words.ctm where it has hand-labelled words, as TIMIT's, else from text.words; where it has hand-labelled
phones, phones.ctm, also <out-dir>/reference/textgrid/ of those and alignment_accuracy.json:
phonerec.pipeline.align_stage). An empty transcript is refused; a recording longer than the bundle's
corpus.max_utterance_seconds is warned about.

What a model takes is what it was trained on: words of its lexicon for the digit recipes (FSDD, TIDIGITS); phones
for TIMIT (its lexicon is its 48 phones: --phones), either the model's own or TIMIT's 61 labels, which are folded
as training folded them (the bundle's phone_map.tsv), and a TIMIT .phn file as the transcript reads its labels.
Where the model was trained without optional silence (hmm.optional_silence=false, as TIMIT's recipes), `sil` is
added at an edge of a phone transcript that lacks it, as TIMIT's h# gave every training transcript. Each
alignment's score goes to the log and alignment_scores.tsv; one that fits far worse than the model's dev
transcripts did is warned about (is the transcript right?).

  steps/align.py exp/fsdd/viterbi my_recording.wav "seven" --out-dir ali_out
  steps/align.py exp/timit_sample/viterbi --phones si1392.wav "h# ax s uw m f ao r ix dcl z ae m" --out-dir ali
  steps/align.py exp/timit_sample/viterbi --phones si1392.wav si1392.phn --out-dir ali
  steps/align.py exp/fsdd/viterbi --data-dir data/fsdd/test --out-dir exp/fsdd/viterbi/align_test

Or a whole corpus in Montreal Forced Aligner's form, without training (MFA's `align` with a pretrained model):
--corpus <folder> --dictionary <file>, written as stage 8 writes the recipe's corpus (a TextGrid per recording laid
out as the folder is, phones.ctm and words.ctm, unaligned.txt, alignment_scores.tsv; phonerec.pipeline.align_stage):

  steps/align.py exp/timit_sample/viterbi --corpus examples/timit_mfa --dictionary examples/timit_mfa.dict \
      --out-dir aligned_timit
"""

import logging
from pathlib import Path

from phonerec.base.errors import RecipeError
from phonerec.base.ownership import claim_dir
from phonerec.inference import load_model, read_recordings, write_alignments
from phonerec.pipeline.align_stage import align_mfa_folder, align_stage, transcript_phones
from phonerec.pipeline.cli import model_tool_main, model_tool_parser

log = logging.getLogger("phonerec")


def main(args) -> None:
    if (args.corpus is None) != (args.dictionary is None):
        raise RecipeError("--corpus and --dictionary go together: an MFA corpus folder and its dictionary")
    if sum(x is not None for x in (args.wav, args.data_dir, args.corpus)) > 1:
        raise RecipeError("give one of: a recording and its transcript, --data-dir, or --corpus with --dictionary")
    if args.corpus is not None:
        out_dir = claim_dir(args.out_dir, "--out-dir")
        align_mfa_folder(args.exp_dir, args.corpus, args.dictionary, out_dir, args.speaker_characters, args.device)
        return
    if args.data_dir is not None:
        align_stage(args.exp_dir, args.data_dir, args.out_dir, args.device)
        return
    if args.wav is None or args.transcript is None:
        raise RecipeError("give a recording and its transcript, or --data-dir")
    transcript = transcript_phones(args.transcript) if args.phones else args.transcript
    if not transcript.split():  # it would align to nothing and write empty files
        raise RecipeError(f"{args.wav}: the transcript is empty: give its words (or its phones with --phones)")
    model = load_model(args.exp_dir, args.device)
    recordings = read_recordings(model.sample_rate, [args.wav])
    aligned = model.align(recordings, [transcript.split()], words=not args.phones)
    floor = f" (the model's floor: {model.score_floor['value']:.3f})" if model.score_floor else ""
    for utt, found in aligned.items():
        score = "-" if found.score is None else f"{found.score:.3f}"
        log.info("%s: alignment score %s per frame%s", utt, score, floor)
    written = write_alignments(args.out_dir, aligned)
    log.info("%s: %s of %d recordings", args.out_dir, ", ".join(written), len(aligned))


def parser():
    p = model_tool_parser(__doc__, recordings=False)
    p.add_argument("wav", type=Path, nargs="?", help="an audio file")
    p.add_argument(
        "transcript",
        nargs="?",
        help='its transcript: words of the model\'s lexicon (FSDD: "seven"), or with --phones phones (TIMIT: the '
        "model's 48 or TIMIT's 61, or a .phn file)",
    )
    p.add_argument("--phones", action="store_true", help="the transcript is phones, not words (TIMIT's models)")
    p.add_argument("--data-dir", type=Path, help="align every utterance of a data dir (text, text.words)")
    p.add_argument("--corpus", type=Path, help="align a corpus in MFA's form: a folder of recordings and transcripts")
    p.add_argument("--dictionary", type=Path, help="the --corpus's pronunciation dictionary (MFA's format)")
    p.add_argument(
        "--speaker-characters", type=int, help="--corpus: the speaker is the first N characters of a file's name"
    )
    p.add_argument("--out-dir", type=Path, required=True, help="where phones.ctm, words.ctm and textgrid/ go")
    return p


if __name__ == "__main__":
    model_tool_main(main, parser())
