"""TIDIGITS (LDC93S10): an LDC copy into Kaldi data dirs, with the digit lexicon shared with FSDD.

Layout, names matched whatever their case (TIDIGITS/TRAIN/MAN/AE/1A.WAV as well):
  <root>/tidigits/{train,test}/{man,woman,boy,girl}/<speaker>/<digits><a|b>.wav
audio NIST SPHERE at 20 kHz, read with soundfile whatever the extension says. In a file name the digits are
1-9, `o` (oh) and `z` (zero); the final a|b is the take: o7z2b.wav is "oh seven zero two", take b.

Speakers are `<group>_<speaker>` (man_ae) and utterances `<group>_<speaker>_<digits><take>` (man_ae_o7z2b):
unique across groups, and sorted the same way by utterance and by speaker. Only the groups in corpus.groups
are used (the adults by default, as Kaldi's egs/tidigits). Splits: test = the corpus's test part; dev = the
training speakers in corpus.dev_speakers, or when that is null every corpus.dev_every-th training speaker of
each group in sorted order, starting with the first; train = the other training speakers.
"""

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from omegaconf import DictConfig, OmegaConf

from phonerec.base.config import repo_path
from phonerec.base.errors import CorpusError
from phonerec.base.files import file_digest
from phonerec.base.schema import SPLITS
from phonerec.data.data_dir import Utterance, validate_data_dir, write_data_dir
from phonerec.data.lang import prepare_lang

log = logging.getLogger(__name__)

PARTS = ("train", "test")
GROUPS = ("man", "woman", "boy", "girl")
DIGIT_WORDS = {
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "o": "oh",
    "z": "zero",
}
FILE_NAME = re.compile(r"^([1-9oz]+)([ab])\.wav$")
SPEAKER_NAME = re.compile(r"^[a-z0-9]+$")
LAYOUT = "<root>/tidigits/{train,test}/{man,woman,boy,girl}/<speaker>/<digits><a|b>.wav"


@dataclass(frozen=True)
class Recording:
    part: str  # train or test
    group: str  # man, woman, boy, girl
    speaker: str  # <group>_<speaker>: man_ae
    digits: str  # o7z2
    take: str  # a or b
    path: Path

    @property
    def utt_id(self) -> str:
        return f"{self.speaker}_{self.digits}{self.take}"

    @property
    def words(self) -> list[str]:
        return [DIGIT_WORDS[d] for d in self.digits]


def _children(folder: Path, name: str) -> list[Path]:
    """The entries of `folder` named `name` whatever their case."""
    return sorted(p for p in folder.iterdir() if p.name.lower() == name)


def _only_child_dir(folder: Path, name: str) -> Path | None:
    found = [p for p in _children(folder, name) if p.is_dir()]
    if len(found) > 1:
        raise CorpusError(f"{folder}: {' and '.join(p.name for p in found)} differ only in case; keep one")
    return found[0] if found else None


def corpus_folder(root: Path) -> Path:
    """<root>/tidigits (any case), with a clear error for a missing or wrong root."""
    if not root.is_dir():
        raise CorpusError(f"corpus.root={root}: no such directory")
    folder = _only_child_dir(root, "tidigits")
    if folder is None:
        hint = ""
        if any(_children(root, part) for part in PARTS):
            hint = f"; {root} looks like the tidigits folder itself: give its parent as corpus.root"
        raise CorpusError(f"corpus.root={root}: no tidigits/ folder in it; expected {LAYOUT}{hint}")
    return folder


def find_recordings(folder: Path, groups: list[str]) -> list[Recording]:
    """Every recording of the given groups in both parts; a file name that is not <digits><a|b>.wav is an error."""
    recordings: list[Recording] = []
    seen: dict[tuple[str, str], Path] = {}
    for part in PARTS:
        part_dir = _only_child_dir(folder, part)
        if part_dir is None:
            raise CorpusError(f"{folder}: no {part}/ folder; expected {LAYOUT}")
        present = {}
        for entry in sorted(part_dir.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            if entry.name.lower() not in GROUPS:
                log.warning("%s: not a speaker group (%s), left out", entry, " ".join(GROUPS))
            elif entry.name.lower() in present:
                raise CorpusError(
                    f"{part_dir}: {present[entry.name.lower()].name} and {entry.name} differ only in case"
                )
            else:
                present[entry.name.lower()] = entry
        missing = [g for g in groups if g not in present]
        if missing:
            log.warning("%s: no folder for the groups %s", part_dir, " ".join(missing))
        for group in groups:
            if group in present:
                recordings += _group_recordings(present[group], part, group, seen)
    return recordings


def _group_recordings(group_dir: Path, part: str, group: str, seen: dict) -> list[Recording]:
    recordings = []
    for speaker_dir in sorted(group_dir.iterdir()):
        if speaker_dir.name.startswith("."):
            continue
        if not speaker_dir.is_dir():
            log.warning("%s: not a speaker folder, left out", speaker_dir)
            continue
        name = speaker_dir.name.lower()
        if not SPEAKER_NAME.match(name):
            raise CorpusError(f"{speaker_dir}: a speaker folder name must be letters and digits")
        speaker = f"{group}_{name}"
        for path in sorted(speaker_dir.iterdir()):
            if path.name.startswith("."):
                continue
            match = FILE_NAME.match(path.name.lower())
            if not match or not path.is_file():
                raise CorpusError(
                    f"{path}: not a TIDIGITS recording name; expected <digits><a|b>.wav with digits 1-9, o (oh) "
                    "and z (zero), e.g. o7z2b.wav"
                )
            rec = Recording(part, group, speaker, match.group(1), match.group(2), path)
            key = (part, rec.utt_id)
            if key in seen:
                raise CorpusError(f"{path} and {seen[key]} are the same utterance {rec.utt_id}")
            seen[key] = path
            recordings.append(rec)
    return recordings


def split_recordings(recordings: list[Recording], ccfg: DictConfig) -> dict[str, list[Recording]]:
    train_speakers = sorted({r.speaker for r in recordings if r.part == "train"})
    test_speakers = sorted({r.speaker for r in recordings if r.part == "test"})
    both = sorted(set(train_speakers) & set(test_speakers))
    if both:
        log.warning("speakers in both the train and the test part of the corpus: %s", " ".join(both))
    if ccfg.dev_speakers is None:
        by_group = defaultdict(list)
        for speaker in train_speakers:
            by_group[speaker.split("_", 1)[0]].append(speaker)
        dev = {s for speakers in by_group.values() for s in speakers[:: ccfg.dev_every]}
    else:
        dev = set()
        for speaker in ccfg.dev_speakers:
            speaker = str(speaker).lower()
            if speaker in train_speakers:
                dev.add(speaker)
            elif speaker in test_speakers:
                raise CorpusError(f"corpus.dev_speakers: {speaker} is a speaker of the test part")
            else:
                log.warning(
                    "corpus.dev_speakers: %s is not a training speaker of this copy in groups %s "
                    "(speakers are <group>_<speaker>, e.g. man_ae)",
                    speaker,
                    " ".join(ccfg.groups),
                )
    splits = {name: [] for name in SPLITS}
    for r in recordings:
        splits["test" if r.part == "test" else "dev" if r.speaker in dev else "train"].append(r)
    for name, recs in splits.items():
        if not recs:
            raise CorpusError(
                f"the {name} split is empty (groups: {' '.join(ccfg.groups)}); check corpus.groups, "
                f"corpus.dev_speakers and the copy at corpus.root"
            )
        speakers = sorted({r.speaker for r in recs})
        log.info("%s: %d utterances of %d speakers: %s", name, len(recs), len(speakers), " ".join(speakers))
    return splits


def check_sample_rates(recordings: list[Recording], sample_rate: int) -> None:
    """Every readable file at corpus.sample_rate; unreadable ones are named by validate_data_dir."""
    wrong = []
    for r in recordings:
        try:
            rate = sf.info(str(r.path)).samplerate
        except (OSError, RuntimeError, sf.LibsndfileError):
            continue
        if rate != sample_rate:
            wrong.append(f"{r.path} ({rate} Hz)")
    if wrong:
        raise CorpusError(
            f"{len(wrong)} recordings are not at corpus.sample_rate={sample_rate} Hz: {', '.join(wrong[:10])}"
        )


def _root(ccfg: DictConfig) -> Path:
    if OmegaConf.is_missing(ccfg, "root") or ccfg.root is None:
        raise CorpusError(
            "corpus.root is not set: TIDIGITS (LDC93S10) is LDC-licensed and cannot be downloaded; give a copy with "
            "corpus.root=<dir holding tidigits/> (on the command line or in conf/local/default.yaml)"
        )
    return Path(ccfg.root).resolve()


def sources(cfg: DictConfig) -> list:
    """What the data dirs are made from besides the settings (stage 0's digest): the copy's folder and the
    lexicon's content."""
    return [str(_root(cfg.corpus)), file_digest(repo_path(cfg.corpus.lexicon))]


def prepare(cfg: DictConfig, data_dir: Path) -> None:
    """The copy at corpus.root -> data_dir/{train,dev,test} and data_dir/lang."""
    ccfg = cfg.corpus
    root, lexicon_path = _root(ccfg), repo_path(ccfg.lexicon)
    groups = [str(g).lower() for g in ccfg.groups]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise CorpusError(f"corpus.groups={list(ccfg.groups)}: expected some of {', '.join(GROUPS)}")

    try:
        recordings = find_recordings(corpus_folder(root), groups)
    except OSError as err:
        raise CorpusError(f"corpus.root={root}: cannot be read ({err})") from err
    log.info(
        "%s: %d recordings of %d speakers in groups %s",
        root,
        len(recordings),
        len({r.speaker for r in recordings}),
        " ".join(groups),
    )
    splits = split_recordings(recordings, ccfg)
    check_sample_rates(recordings, ccfg.sample_rate)

    lang_dir = data_dir / "lang"
    lexicon = prepare_lang(lexicon_path, lang_dir, cfg.hmm.states_per_phone)
    missing = sorted(set(DIGIT_WORDS.values()) - lexicon.keys())
    if missing:
        raise CorpusError(f"{lexicon_path}: no pronunciation for {' '.join(missing)}")
    for split, recs in splits.items():
        utterances = [
            Utterance(
                utt_id=r.utt_id,
                speaker=r.speaker,
                wav=str(r.path),
                phones=[p for w in r.words for p in lexicon[w][0]],  # the first pronunciation of each word
                words=r.words,
            )
            for r in recs
        ]
        write_data_dir(data_dir / split, utterances)
        count = validate_data_dir(data_dir / split, lang_dir)
        log.info("%s: %d utterances", data_dir / split, count)
