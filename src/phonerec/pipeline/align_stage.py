"""Stage 7: a data dir force-aligned by a trained model's bundle (phonerec.inference) into <out-dir>/phones.ctm,
words.ctm and textgrid/<utt>.TextGrid; where the data dir has hand-labelled segments (TIMIT's phones.ctm and
words.ctm), also reference/textgrid/<utt>.TextGrid of those, to open beside the model's in Praat, and
alignment_accuracy.json, the model's boundaries against the hand-labelled ones.

Phones come from the data dir's text; the word tier from its words.ctm where it has one (TIMIT: the .WRD files'
words and times, since TIMIT's lexicon holds phones alone), else from text.words, each word spanning its phones.

Stage 8: every utterance of every split aligned by the Viterbi model's bundle (its alignment checkpoint,
decode.align_checkpoint), written as MFA writes an aligned corpus (phonerec.inference.write_corpus_alignments): a
TextGrid per recording laid out as the corpus is (<data>/layout.txt, of corpus=mfa), CTMs in the recordings'
timeline, the utterances that could not be aligned and why, and each alignment's log-likelihood per frame.
"""

import logging
from pathlib import Path

from omegaconf import OmegaConf

from phonerec.base.config import settings_hash
from phonerec.base.errors import RecipeError
from phonerec.base.files import contents_sha256
from phonerec.base.schema import SPLITS
from phonerec.data.corpora import mfa
from phonerec.data.corpora.timit import read_phn
from phonerec.data.data_dir import UtteranceAudio, read_table
from phonerec.data.lang import BLANK
from phonerec.data.oovs import find_oovs
from phonerec.hmm.align_eval import read_ctm
from phonerec.inference import (
    Aligned,
    load_model,
    read_recording,
    read_recordings,
    write_alignments,
    write_corpus_alignments,
)
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
        hand_phones = read_ctm(data_dir / "phones.ctm") if (data_dir / "phones.ctm").is_file() else None
        hand_words = read_ctm(data_dir / "words.ctm") if (data_dir / "words.ctm").is_file() else None
        aligned = model.align_spelled(recordings, _spelled(model, data_dir, recordings, hand_words is None))
        if hand_words is not None:
            for utt, found in aligned.items():
                found.words = hand_words.get(utt, [])
        model.check_scores(aligned)
        written = write_alignments(out_dir, aligned, recordings)
        log.info("%s: %s of %d utterances (%s)", out_dir, ", ".join(written), len(aligned), model.dir)
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


def _spelled(model, data_dir: Path, recordings: list, with_words: bool) -> list:
    """Each recording's transcript as the model spells it: its phones (text) and, with_words, its words
    (text.words)."""
    text = read_table(data_dir / "text")
    words = read_table(data_dir / "text.words") if with_words and (data_dir / "text.words").is_file() else {}
    spelled = []
    for rec in recordings:
        if rec.utt not in text:
            raise RecipeError(f"{data_dir}/text: no transcript of '{rec.utt}'")
        sentence = words[rec.utt].split() if rec.utt in words else None
        spelled.append(model.spell_words(text[rec.utt].split(), sentence, f"{data_dir}: '{rec.utt}'"))
    return spelled


def align_corpus_stage(model_dir: Path, data_dir: Path, out_dir: Path, device: str = "cpu") -> None:
    """Stage 8: every split of data_dir (data/<recipe>: train, dev, test) aligned by the bundle of model_dir (the
    Viterbi model) into out_dir; skipped when done with the same model and data."""
    model = load_model(model_dir, device)
    splits = [split for split in SPLITS if (data_dir / split / "text").is_file()]
    inputs = {split: contents_sha256(data_dir / split, DATA_INPUTS) for split in splits}
    digest = settings_hash(contents_sha256(model.dir, BUNDLE_INPUTS), inputs, contents_sha256(data_dir, ["layout.txt"]))
    stage = StageRun(out_dir, "align_corpus", digest)
    if stage.done:
        log.info("%s: the corpus is aligned already with this model and data", out_dir)
        return
    with stage:
        layout = read_table(data_dir / "layout.txt") if (data_dir / "layout.txt").is_file() else {}
        aligned, unaligned, recordings = {}, {}, []
        for split in splits:
            found = read_recordings(model.sample_rate, data_dir=data_dir / split)
            # As stage 7: hand-labelled words (TIMIT's words.ctm) where the split has them, the lexicon's else.
            hand_words = (
                read_ctm(data_dir / split / "words.ctm") if (data_dir / split / "words.ctm").is_file() else None
            )
            spelled = _spelled(model, data_dir / split, found, with_words=hand_words is None)
            done = model.align_spelled(found, spelled, unaligned=unaligned)
            for utt, one in done.items():
                if hand_words is not None:
                    one.words = hand_words.get(utt, [])
            aligned.update(done)
            recordings += found
            log.info("%s: %d utterances aligned", data_dir / split, len(found))
        model.check_scores(aligned)
        write_corpus_alignments(out_dir, aligned, recordings, layout, unaligned)
        log.info(
            "%s: %d utterances aligned, %d could not be (unaligned.txt); TextGrids of %d recordings in textgrids/",
            *(
                out_dir,
                len(aligned),
                len(unaligned),
                len({r.recording or r.utt for r in recordings if r.utt in aligned}),
            ),
        )


def align_mfa_folder(
    model_dir: Path,
    folder: Path,
    dictionary: Path,
    out_dir: Path,
    speaker_characters: int | None = None,
    device: str = "cpu",
) -> None:
    """A corpus in MFA's form (a folder and a dictionary) aligned by a trained bundle, without training (MFA's
    `align` with a pretrained model), into out_dir as stage 8 writes a corpus, with an optional silence between words
    and at the edges whatever the model was trained with. Before any audio is read: phones of
    the transcripts' words that the model lacks are an error naming them; words the dictionary lacks are reported
    (out_dir/oovs_found.txt, utterance_oovs.txt) and aligned as the model's <unk> where it has one (spn), else
    their utterances go to unaligned.txt."""
    model = load_model(model_dir, device)
    if not model.cfg.hmm.optional_silence:  # a model trained on transcripts that hold their silences (TIMIT's)
        log.info("word transcripts hold no silence: aligned with an optional silence between words, as MFA aligns")
        OmegaConf.update(model.cfg, "hmm.optional_silence", True)
    found = mfa.read_dictionary(dictionary)
    lexicon = found.lexicon
    utterances, layout = mfa.scan_corpus(folder, speaker_characters, mfa.Normaliser(lexicon))
    used = {p for u in utterances for w in u.words if w in lexicon for p in lexicon[w][0]}
    missing = sorted(used - set(model.phone2id) | ({BLANK} & used))
    if missing:
        raise RecipeError(
            f"{dictionary}: the transcripts' words hold phones the model {model.dir} does not have: "
            f"{', '.join(missing)} (align with a model trained on this phone set)"
        )
    oovs = find_oovs({u.utt_id: u.words for u in utterances}, lexicon)
    oovs.write_reports(out_dir)
    unaligned = {}
    if oovs.counts:
        unknown = model.lexicon.get(mfa.UNKNOWN_WORD)
        log.warning(
            "%d words of %d utterances are not in %s (%s): %s",
            *(sum(oovs.counts.values()), len(oovs.utterances), dictionary, out_dir / "oovs_found.txt"),
            f"aligned as {mfa.UNKNOWN_WORD} ({' '.join(unknown[0])})"
            if unknown
            else "those utterances are not aligned",
        )
        if unknown:
            lexicon[mfa.UNKNOWN_WORD] = unknown
            for u in utterances:
                u.words = [w if w in found.lexicon else mfa.UNKNOWN_WORD for w in u.words]
        else:
            unaligned = {utt: f"words not in {dictionary}: {' '.join(w)}" for utt, w in oovs.utterances.items()}
    recordings = [
        read_recording(
            u.audio,
            model.sample_rate,
            u.utt_id,
            u.speaker,
            UtteranceAudio(str(u.audio), u.recording, u.start, u.end) if u.segmented else None,
        )
        for u in utterances
        if u.utt_id not in unaligned
    ]
    transcripts = [u.words for u in utterances if u.utt_id not in unaligned]
    aligned = model.align(recordings, transcripts, lexicon=lexicon, unaligned=unaligned)
    write_corpus_alignments(out_dir, aligned, recordings, mfa.textgrid_paths(utterances, layout), unaligned)
    log.info("%s: %d utterances aligned, %d not (unaligned.txt)", out_dir, len(aligned), len(unaligned))


def transcript_phones(transcript: str) -> str:
    """A phone transcript as steps/align.py takes it: the phones themselves, or a TIMIT .phn file's labels."""
    if transcript.lower().endswith(".phn") and Path(transcript).is_file():
        return " ".join(label for _, _, label in read_phn(Path(transcript)))
    return transcript
