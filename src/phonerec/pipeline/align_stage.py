"""Stage 7: a data dir force-aligned by a trained model's bundle (phonerec.inference) into <out-dir>/phones.ctm,
words.ctm and textgrid/<utt>.TextGrid; where the data dir has hand-labelled segments (TIMIT's phones.ctm and
words.ctm), also reference/textgrid/<utt>.TextGrid of those, to open beside the model's in Praat, and
alignment_accuracy.json, the model's boundaries against the hand-labelled ones.

Phones come from the data dir's text; the word tier from its words.ctm where it has one (TIMIT: the .WRD files'
words and times, since TIMIT's lexicon holds phones alone), else from text.words, each word spanning its phones.
"""

import logging
from pathlib import Path

from phonerec.base.config import settings_hash
from phonerec.base.errors import RecipeError
from phonerec.base.files import contents_sha256
from phonerec.data.data_dir import read_table
from phonerec.hmm.align_eval import read_ctm
from phonerec.inference import Aligned, load_model, read_recordings, write_alignments
from phonerec.pipeline.decode_stages import write_alignment_accuracy
from phonerec.pipeline.markers import StageRun

log = logging.getLogger(__name__)
DATA_INPUTS = ("wav.scp", "segments", "utt2spk", "text", "text.words", "phones.ctm", "words.ctm")
BUNDLE_INPUTS = ("model.pt", "align_model.pt", "config.yaml", "decoders.json")


def align_stage(model_dir: Path, data_dir: Path, out_dir: Path, device: str = "cpu") -> None:
    model = load_model(model_dir, device)
    digest = settings_hash(contents_sha256(model.dir, BUNDLE_INPUTS), contents_sha256(data_dir, DATA_INPUTS))
    stage = StageRun(out_dir, "align", digest)
    if stage.done:
        log.info("%s: aligned already with this model and data", out_dir)
        return
    with stage:
        recordings = read_recordings(model.sample_rate, data_dir=data_dir)
        text = read_table(data_dir / "text")
        hand_phones = read_ctm(data_dir / "phones.ctm") if (data_dir / "phones.ctm").is_file() else None
        hand_words = read_ctm(data_dir / "words.ctm") if (data_dir / "words.ctm").is_file() else None
        words = read_table(data_dir / "text.words") if (data_dir / "text.words").is_file() else {}
        spelled = []
        for rec in recordings:
            if rec.utt not in text:
                raise RecipeError(f"{data_dir}/text: no transcript of '{rec.utt}'")
            sentence = None if hand_words is not None or rec.utt not in words else words[rec.utt].split()
            spelled.append(model.spell_words(text[rec.utt].split(), sentence, f"{data_dir}: '{rec.utt}'"))
        aligned = model.align_spelled(recordings, spelled)
        if hand_words is not None:
            for utt, found in aligned.items():
                found.words = hand_words.get(utt, [])
        write_alignments(out_dir, aligned, recordings)
        log.info("%s: phones.ctm, words.ctm and textgrid/ of %d utterances (%s)", out_dir, len(aligned), model.dir)
        if hand_phones is None:
            return
        reference = {
            utt: Aligned(hand_phones[utt], hand_words.get(utt, []) if hand_words else None, found.duration)
            for utt, found in aligned.items()
            if utt in hand_phones
        }
        write_alignments(out_dir / "reference", reference)
        write_alignment_accuracy(
            out_dir,
            hand_phones,
            {u: a.phones for u, a in aligned.items()},
            model.info["frame_shift_seconds"],
            model.info["align_checkpoint"],
            model.info["align_epoch"],
        )
