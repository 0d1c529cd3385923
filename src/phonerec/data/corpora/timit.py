"""TIMIT: an LDC copy (LDC93S1) or the public TIMIT sample, into Kaldi data dirs with hand-labelled segments.

Layouts, found by walking the corpus root, names matched whatever their case:
  LDC      <root>/TRAIN/DR1/FCJF0/SA1.WAV (+ .PHN .WRD .TXT), TEST/...; audio NIST SPHERE
  sample   <root>/timit/dr1-fvmh0/sa1.wav (+ .phn ...); some .wav files RIFF, some NIST
soundfile reads both kinds whatever the extension says.

Kaldi's conventions (egs/timit/s5): SA sentences left out (corpus.include_sa); dev = the 50-speaker dev list
and test = the 24-speaker core test, both from the LDC test part (local/timit/speakers.yaml); the 61 labels
are folded to the training set (corpus.train_phones: train48 or score39, local/timit/phones.tsv) and scored
after folding to 39. The sample has no train/test parts: a speaker split from config instead.

Labels: `q` has no mapping; its time goes to the segment before it (the one after, at an utterance start).
After folding, neighbouring equal labels merge into one segment (closure `vcl` then `vcl`, `sil` then `sil`).
`text` is the folded label sequence, silence included as Kaldi's TIMIT text has it; `phones.ctm` next to it
holds the same labels with their hand-labelled times, for alignment accuracy, and `words.ctm` the words of the
.WRD files with theirs, for the word tier of alignments (steps/align.py).
"""

import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from phonerec.base.config import repo_path
from phonerec.base.errors import CorpusError
from phonerec.base.files import file_digest
from phonerec.base.ownership import make_dir, remove_tree
from phonerec.base.schema import SPLITS
from phonerec.data.corpora import corpus_paths, walk_files
from phonerec.data.data_dir import Utterance, validate_data_dir, write_data_dir
from phonerec.data.download import download
from phonerec.data.lang import prepare_lang
from phonerec.hmm.align_eval import Segment, write_ctm
from phonerec.scoring.error_rate import read_phone_map

log = logging.getLogger(__name__)

SAMPLE_SPEAKER_DIR = re.compile(r"^dr\d-([a-z]{4}\d)$")
LDC_SPEAKER_DIR = re.compile(r"^[fm][a-z]{3}\d$")


@dataclass(frozen=True)
class Recording:
    speaker: str  # TIMIT's speaker code, lower case: fcjf0
    sentence: str  # sa1, si836, sx26
    part: str | None  # train or test (LDC), None (sample)
    wav: Path
    phn: Path
    wrd: Path | None


def _sibling(path: Path, suffix: str) -> Path | None:
    for candidate in (path.with_suffix(suffix), path.with_suffix(suffix.upper())):
        if candidate.is_file():
            return candidate
    return None


def _speaker_folder(path: Path) -> tuple[str, str, str | None] | None:
    """(layout, speaker, part) of the speaker folder holding `path`; None if it is not in one."""
    folder = path.parent.name.lower()
    sample = SAMPLE_SPEAKER_DIR.match(folder)
    if sample:
        return "sample", sample.group(1), None
    if LDC_SPEAKER_DIR.match(folder):
        part = path.parent.parent.parent.name.lower()
        if part not in ("train", "test"):
            raise CorpusError(f"{path}: expected <root>/{{TRAIN,TEST}}/DR<n>/<speaker>/, found part '{part}'")
        return "ldc", folder, part
    return None  # not a speaker folder (the sample's top-level lists, say)


def _utterance_name(path: Path) -> str:
    """sa1 for sa1.phn, SA1.WAV and SA1.WAV.wav (some copies add a RIFF conversion beside the SPHERE file)."""
    return path.name.split(".")[0].lower()


def find_recordings(root: Path) -> tuple[str, list[Recording]]:
    """Every utterance with a .phn transcription under root; the layout is told by the speaker folders. Audio
    without a .phn beside it is an error: it would be left out without a word."""
    recordings, layouts, audio = [], set(), {}
    for path in walk_files(root):
        if path.suffix.lower() not in (".phn", ".wav") or not path.is_file():
            continue
        speaker_folder = _speaker_folder(path)
        if speaker_folder is None:
            continue
        if path.suffix.lower() == ".wav":
            audio.setdefault((path.parent, _utterance_name(path)), path)
            continue
        wav = _sibling(path, ".wav")
        if wav is None:
            raise CorpusError(f"{path}: no audio file beside it (.wav or .WAV)")
        layout, speaker, part = speaker_folder
        layouts.add(layout)
        recordings.append(Recording(speaker, path.stem.lower(), part, wav, path, _sibling(path, ".wrd")))
    untranscribed = sorted(audio.keys() - {(r.phn.parent, _utterance_name(r.phn)) for r in recordings})
    if untranscribed:
        names = " ".join(str(audio[key]) for key in untranscribed[:5])
        raise CorpusError(
            f"{len(untranscribed)} recordings have no .phn transcription beside them (a partial copy?): {names}"
        )
    if not recordings:
        raise CorpusError(
            f"{root}: no TIMIT transcriptions found; expected TRAIN/DR1/FCJF0/SA1.PHN (LDC) or timit/dr1-fvmh0/sa1.phn"
            " (the public sample) below it"
        )
    if len(layouts) > 1:
        raise CorpusError(f"{root}: holds both the LDC and the sample layout; point corpus.root at one of them")
    return layouts.pop(), recordings


def read_phn(path: Path, overlaps: bool = False) -> list[tuple[int, int, str]]:
    """(start sample, end sample, label) rows of a .PHN (or .WRD) file, in time order. Segments out of order
    would be read as a reordered transcript, so they are an error; so are overlapping ones unless `overlaps`
    (words overlap where they share a phone; phones never do). Touching segments are fine."""
    rows, previous = [], None
    with open(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or int(parts[1]) < int(parts[0]):
                raise CorpusError(f"{path}:{lineno}: expected '<start> <end> <label>' in samples, got {line.strip()!r}")
            start, end = int(parts[0]), int(parts[1])
            if previous is not None:
                before_line, before_start, before_end = previous
                if start < before_start:
                    raise CorpusError(
                        f"{path}:{lineno}: segment starts at {start}, before the one of line {before_line}"
                        f" ({before_start}): segments out of time order"
                    )
                if start < before_end and not overlaps:
                    raise CorpusError(
                        f"{path}:{lineno}: segment starts at {start}, inside the one of line {before_line}"
                        f" ({before_start}-{before_end}): overlapping segments"
                    )
            previous = (lineno, start, end)
            rows.append((start, end, parts[2]))
    if not rows:
        raise CorpusError(f"{path}: no segments")
    return rows


def read_wrd(path: Path, sample_rate: int) -> list[Segment]:
    """The word segments of a .WRD file (its lines as .PHN's), lower-cased, in seconds. TIMIT's words overlap
    where they share a phone ("had your": the jh); an interval tier cannot, so the boundary of two overlapping
    words goes to the middle of their overlap."""
    segments = [
        Segment(start / sample_rate, end / sample_rate, word.lower())
        for start, end, word in read_phn(path, overlaps=True)
    ]
    for k in range(1, len(segments)):
        before, seg = segments[k - 1], segments[k]
        if seg.start < before.end:
            middle = (seg.start + before.end) / 2
            segments[k - 1] = Segment(before.start, middle, before.label)
            segments[k] = Segment(middle, seg.end, seg.label)
    return segments


def fold_segments(rows, mapping: dict[str, str | None], sample_rate: int, where: Path) -> list[Segment]:
    """Fold TIMIT labels to the training set; deleted labels give their time to a neighbour; equal
    neighbours merge."""
    segments: list[list] = []  # [start, end, label]
    pending_start = None  # a deleted label at the utterance start: its time goes to the next segment
    for start, end, label in rows:
        if label not in mapping:
            raise CorpusError(f"{where}: label '{label}' is not a TIMIT phone (local/timit/phones.tsv)")
        target = mapping[label]
        if target is None:
            if segments:
                segments[-1][1] = end
            elif pending_start is None:
                pending_start = start
            continue
        if pending_start is not None:
            start, pending_start = pending_start, None
        if segments and segments[-1][2] == target:
            segments[-1][1] = end
        else:
            segments.append([start, end, target])
    if not segments:
        raise CorpusError(f"{where}: no phones left after folding")
    return [Segment(s / sample_rate, e / sample_rate, label) for s, e, label in segments]


def _speaker_code(name: str) -> str:
    """dr7-fblv0 (the sample's folder names) and fblv0 both name speaker fblv0."""
    match = SAMPLE_SPEAKER_DIR.match(name.lower())
    return match.group(1) if match else name.lower()


def split_recordings(layout: str, recordings: list[Recording], ccfg: DictConfig) -> dict[str, list[Recording]]:
    if layout == "ldc":
        lists = OmegaConf.load(repo_path(ccfg.speaker_lists))
        dev, test = set(lists["dev"]), set(lists["core_test"])
        if len(dev) != 50 or len(test) != 24:
            raise CorpusError(f"{ccfg.speaker_lists}: expected 50 dev and 24 core-test speakers")

        def split_of(r):
            return (
                "train" if r.part == "train" else "dev" if r.speaker in dev else "test" if r.speaker in test else None
            )

    else:
        dev = {_speaker_code(s) for s in ccfg.sample_dev_speakers}
        test = {_speaker_code(s) for s in ccfg.sample_test_speakers}
        if dev & test:
            raise CorpusError(f"speakers {sorted(dev & test)} are in both the dev and the test list")

        def split_of(r):
            return "dev" if r.speaker in dev else "test" if r.speaker in test else "train"

    present = {r.speaker for r in recordings}
    for name, listed in (("dev", dev), ("test", test)):
        missing = sorted(listed - present)
        if missing:
            log.warning("%d listed %s speakers are not in this copy: %s", len(missing), name, " ".join(missing[:10]))
    splits = {name: [] for name in SPLITS}
    for r in recordings:
        name = split_of(r)
        if name is not None:
            splits[name].append(r)
    for name, recs in splits.items():
        if not recs:
            raise CorpusError(f"the {name} split is empty ({layout} layout); check the speaker lists")
        log.info("%s: %d utterances of %d speakers", name, len(recs), len({r.speaker for r in recs}))
    return splits


def obtain_sample(ccfg: DictConfig, downloads: Path) -> Path:
    """The public TIMIT sample, downloaded (size and MD5 as NLTK's data index gives them) and unpacked."""
    root = downloads / "timit_sample"
    if (root / "timit").is_dir():
        return root
    archive = downloads / Path(ccfg.sample_url).name
    try:
        download(ccfg.sample_url, archive, size=ccfg.sample_size, md5=ccfg.sample_md5)
    except CorpusError as err:
        raise CorpusError(
            f"{err}\nEither let this machine reach {ccfg.sample_url}, or give an existing copy: "
            "corpus.root=<dir> (an LDC TIMIT copy, or the sample: the folder holding timit/)"
        ) from err
    scratch = downloads / ".unpack-timit_sample"
    remove_tree(scratch)  # a killed unpack's
    make_dir(scratch)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(scratch)
    if not (scratch / "timit").is_dir():
        raise CorpusError(f"{archive}: unpacked no timit/ folder")
    scratch.replace(root)
    return root


WRITES = "data dirs with phones.ctm and words.ctm"  # in the digest: a data dir of an older stage 0 lacks words.ctm


def sources(cfg: DictConfig) -> list:
    """What the data dirs are made from besides the settings (stage 0's digest): the copy's folder, the phone
    table's and the speaker lists' content, and what this version writes."""
    _, root = corpus_paths(cfg, "timit_sample")
    lists = file_digest(repo_path(cfg.corpus.speaker_lists))
    return [str(root), file_digest(repo_path(cfg.corpus.phone_table)), lists, WRITES]


def prepare(cfg: DictConfig, data_dir: Path) -> None:
    """The corpus (the sample downloaded, or the copy at corpus.root) -> data_dir/{train,dev,test} (with phones.ctm
    and words.ctm) and data_dir/lang."""
    ccfg = cfg.corpus
    downloads, root = corpus_paths(cfg, "timit_sample")
    phone_table = repo_path(ccfg.phone_table)
    if ccfg.root is None:
        root = obtain_sample(ccfg, downloads)
    elif not root.is_dir():
        raise CorpusError(f"corpus.root={ccfg.root}: no such directory")

    layout, recordings = find_recordings(root)
    log.info(
        "%s: %s layout, %d utterances of %d speakers",
        root,
        layout,
        len(recordings),
        len({r.speaker for r in recordings}),
    )
    if not ccfg.include_sa:
        recordings = [r for r in recordings if not r.sentence.startswith("sa")]
    mapping = read_phone_map(phone_table, source="timit61", target=ccfg.train_phones)

    # The lang dir: each phone is its own word, as in Kaldi's TIMIT recipe.
    phones = sorted({p for p in mapping.values() if p is not None})
    lexicon = data_dir / "local" / "lexicon.txt"
    lexicon.parent.mkdir(parents=True, exist_ok=True)
    lexicon.write_text("".join(f"{p} {p}\n" for p in phones))
    prepare_lang(lexicon, data_dir / "lang", cfg.hmm.states_per_phone)

    for split, recs in split_recordings(layout, recordings, ccfg).items():
        utterances, ctm, words_ctm = [], {}, {}
        for r in recs:
            utt = f"{r.speaker}_{r.sentence}"
            segments = fold_segments(read_phn(r.phn), mapping, ccfg.sample_rate, r.phn)
            words = read_wrd(r.wrd, ccfg.sample_rate) if r.wrd else []
            phones = [s.label for s in segments]
            utterances.append(Utterance(utt, r.speaker, str(r.wav), phones, [w.label for w in words]))
            ctm[utt] = segments
            if words:
                words_ctm[utt] = words
        write_data_dir(data_dir / split, utterances)
        write_ctm(data_dir / split / "phones.ctm", ctm)
        write_ctm(data_dir / split / "words.ctm", words_ctm)
        count = validate_data_dir(data_dir / split, data_dir / "lang")
        log.info("%s: %d utterances", data_dir / split, count)
