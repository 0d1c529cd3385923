"""A corpus of the user's own in Montreal Forced Aligner's form (corpus=mfa): a folder of recordings with their
transcripts, and a pronunciation dictionary. Made into the Kaldi form (data/<name>/local/{train,dev,test,dict}) and
prepared from there by phonerec.data.corpora.kaldi: the same checks, OOV handling (corpus.oov; `unk` by default, as
MFA aligns a word it lacks as `spn`), WAV copies and splits.

The folder (corpus.root), as MFA reads it:
  <speaker>/<X>.wav (or .flac) with <X>.lab or <X>.txt beside it: one utterance, its words; the speaker is the
      folder's name, or with corpus.speaker_characters=N the first N characters of the file's name
  <X>.wav with <X>.TextGrid beside it: a long recording; each tier is a speaker (its name), each interval with text
      an utterance (a segment of the recording)
Recordings without a transcript are left out (the log counts them). Utterance ids are `<speaker>-<X>` (and
`-<start in ms>` for TextGrid intervals), recording ids `<X>`'s path under the folder with `-` for `/`.

The dictionary (corpus.dictionary): `<word> <phone>...` a line (a tab or spaces after the word), optionally with a
pronunciation probability after the word (`<word> <prob> <phone>...`) or that and MFA's three silence columns
(`<word> <prob> <P(silence after)> <silence before correction> <non-silence before correction> <phone>...`). The
probabilities are kept (the dict dir's lexiconp.txt, and lexiconp_silprob.txt, as Kaldi names them) for pronunciation
variants; a word's first pronunciation is used. The recipe adds the silence phones itself, as MFA does: `sil` (the
optional silence) and `spn` (spoken noise, the pronunciation of `<unk>`).

Transcripts are normalised by one rule (README "Your own corpus"), each word in turn:
  1. a `.txt` or `.lab` that starts with two whole numbers (TIMIT's sample offsets) has them dropped;
  2. a word the dictionary holds as written is kept; one it holds in another case alone (one spelling) takes the
     dictionary's case (`Mrs.` -> `mrs.`);
  3. else the same for the word without the punctuation around it (PUNCTUATION; an apostrophe or hyphen inside
     stays: `year.` -> `year`, `don't` stays), and a word of punctuation alone is dropped;
  4. anything else is kept as written, without the punctuation around it: an OOV, for corpus.oov.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from phonerec.base.config import repo_path
from phonerec.base.errors import CorpusError
from phonerec.base.files import file_digest, write_text_atomic
from phonerec.base.ownership import make_dir, remove_tree
from phonerec.base.schema import SPLITS, KaldiConfig
from phonerec.data.corpora import kaldi, walk_files
from phonerec.data.data_dir import Problems, Utterance, write_data_dir, write_table
from phonerec.data.lang import Lexicon

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac")
TRANSCRIPT_EXTENSIONS = (".lab", ".txt")  # in this order: a .lab beside a .txt wins
PUNCTUATION = ".,!?;:\"'()[]{}<>«»“”‘’¿¡…—–-"
SILENCE_PHONES = ("sil", "spn")  # added by the recipe: the optional silence, and spoken noise
UNKNOWN_WORD, UNKNOWN_PHONE = "<unk>", "spn"
WHOLE_NUMBER = re.compile(r"^\d+$")


@dataclass
class Dictionary:
    lexicon: Lexicon
    probabilities: bool  # whether the file had pronunciation probabilities
    silence_columns: dict[tuple[str, tuple[str, ...]], list[float]]  # (word, pronunciation) -> MFA's 3 columns


def read_dictionary(path: Path) -> Dictionary:
    """An MFA dictionary, checked line by line (every problem named by file and line)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus.dictionary={path}: no such file")
    problems = Problems(f"dictionary {path}", CorpusError)
    lexicon, silence_columns, widths = Lexicon(path), {}, set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            parts = line.split()
            if not parts:
                continue
            word, rest = parts[0], parts[1:]
            numbers = []
            while rest and len(numbers) < 4 and _is_number(rest[0]):
                numbers.append(float(rest.pop(0)))
            if len(numbers) not in (0, 1, 4):
                problems.add(
                    where,
                    f"{len(numbers)} numbers after '{word}': expected none, a pronunciation probability, or that and "
                    "MFA's three silence columns",
                )
                continue
            if not rest:
                problems.add(where, f"'{word}' has no pronunciation")
                continue
            if numbers and not 0 < numbers[0] <= 1:
                problems.add(where, f"pronunciation probability {numbers[0]:g} of '{word}': expected one in (0, 1]")
                continue
            widths.add(len(numbers))
            pron = tuple(rest)
            if pron in map(tuple, lexicon.get(word, [])):
                log.warning("%s: '%s %s' repeats an earlier line; read once", where, word, " ".join(pron))
                continue
            lexicon.lines.setdefault(word, lineno)
            lexicon.setdefault(word, []).append(list(pron))
            if numbers:
                lexicon.probabilities.setdefault(word, []).append(numbers[0])
            if len(numbers) == 4:
                silence_columns[word, pron] = numbers[1:]
    if len(widths) > 1:
        problems.add(str(path), "some lines have probabilities and some do not: give them on every line or none")
    if not lexicon:
        problems.add(str(path), "no entries")
    problems.raise_if_any()
    return Dictionary(lexicon, widths == {1} or widths == {4}, silence_columns)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def write_dict_dir(dictionary: Dictionary, out: Path) -> None:
    """A Kaldi dict dir of the dictionary, with the recipe's silence phones and `<unk> spn`."""
    lexicon = dictionary.lexicon
    phones = sorted({p for prons in lexicon.values() for pron in prons for p in pron} - set(SILENCE_PHONES))
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "silence_phones.txt", "".join(f"{p}\n" for p in SILENCE_PHONES))
    write_text_atomic(out / "optional_silence.txt", f"{SILENCE_PHONES[0]}\n")
    write_text_atomic(out / "nonsilence_phones.txt", "".join(f"{p}\n" for p in phones))
    entries = [
        (w, pron, lexicon.probabilities[w][k] if dictionary.probabilities else 1.0)
        for w, prons in lexicon.items()
        for k, pron in enumerate(prons)
    ]
    if UNKNOWN_WORD not in lexicon:
        entries.append((UNKNOWN_WORD, [UNKNOWN_PHONE], 1.0))
    name, lines = (
        ("lexiconp.txt", [f"{w} {p:g} {' '.join(pron)}\n" for w, pron, p in entries])
        if (dictionary.probabilities)
        else ("lexicon.txt", [f"{w} {' '.join(pron)}\n" for w, pron, _ in entries])
    )
    for stale in ("lexicon.txt", "lexiconp.txt", "lexiconp_silprob.txt"):
        (out / stale).unlink(missing_ok=True)
    write_text_atomic(out / name, "".join(lines))
    if dictionary.silence_columns:
        write_text_atomic(
            out / "lexiconp_silprob.txt",
            "".join(
                f"{w} {p:g} {' '.join(f'{x:g}' for x in dictionary.silence_columns[w, tuple(pron)])} {' '.join(pron)}\n"
                for w, pron, p in entries
                if (w, tuple(pron)) in dictionary.silence_columns
            ),
        )


class Normaliser:
    """The one normalisation of transcripts (the module's doc): words as the dictionary spells them."""

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon
        spellings: dict[str, list[str]] = {}
        for word in lexicon:
            spellings.setdefault(word.lower(), []).append(word)
        self.by_case = {low: words[0] for low, words in spellings.items() if len(words) == 1}

    def __call__(self, text: str) -> list[str]:
        tokens = text.split()
        if len(tokens) >= 2 and WHOLE_NUMBER.match(tokens[0]) and WHOLE_NUMBER.match(tokens[1]):
            tokens = tokens[2:]
        words = []
        for token in tokens:
            word = self._word(token)
            if word:
                words.append(word)
        return words

    def _word(self, token: str) -> str:
        for candidate in (token, token.strip(PUNCTUATION)):
            if not candidate or candidate in self.lexicon:
                return candidate
            if candidate.lower() in self.by_case:
                return self.by_case[candidate.lower()]
        return token.strip(PUNCTUATION)


@dataclass
class MfaUtterance:
    utt_id: str
    speaker: str
    recording: str  # the recording id
    audio: Path
    words: list[str]
    start: float = 0.0
    end: float | None = None  # None: the whole recording
    segmented: bool = False  # an interval of a TextGrid


def _kaldi_id(text: str, where: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise CorpusError(f"{where}: '{text}' cannot name a speaker, recording or utterance (empty or with spaces)")
    return text


def scan_corpus(root: Path, speaker_characters: int | None, normalise: Normaliser) -> tuple[list, dict[str, str]]:
    """The utterances of an MFA folder, and recording id -> its path under the folder without the extension (where
    the alignment's TextGrid goes)."""
    if not root.is_dir():
        raise CorpusError(f"corpus.root={root}: no such directory")
    files = walk_files(root)
    by_stem: dict[Path, dict[str, Path]] = {}
    for path in files:
        by_stem.setdefault(path.with_suffix(""), {})[path.suffix.lower()] = path
    utterances, layout, untranscribed = [], {}, []
    for stem, found in sorted(by_stem.items()):
        audio = next((found[e] for e in AUDIO_EXTENSIONS if e in found), None)
        if audio is None:
            continue
        relative = stem.relative_to(root)
        recording = _kaldi_id("-".join(relative.parts), str(audio))
        if ".textgrid" in found:
            utterances += _textgrid_utterances(found[".textgrid"], audio, recording, normalise)
            layout[recording] = relative.as_posix()
            continue
        transcript = next((found[e] for e in TRANSCRIPT_EXTENSIONS if e in found), None)
        if transcript is None:
            untranscribed.append(audio)
            continue
        if speaker_characters:
            speaker = stem.name[:speaker_characters]
        elif len(relative.parts) < 2:
            raise CorpusError(
                f"{audio}: directly in corpus.root; put each speaker's files in a folder of its own, or set "
                "corpus.speaker_characters=N (the speaker is the first N characters of a file's name)"
            )
        else:
            speaker = relative.parts[-2]
        speaker = _kaldi_id(speaker, str(audio))
        try:
            words = normalise(transcript.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise CorpusError(f"{transcript}: not UTF-8 (byte {err.start}); save it as UTF-8") from None
        if not words:
            raise CorpusError(f"{transcript}: no words (an empty transcript); remove the recording or transcribe it")
        utterances.append(
            MfaUtterance(_kaldi_id(f"{speaker}-{stem.name}", str(audio)), speaker, recording, audio, words)
        )
        layout[recording] = relative.as_posix()
    if untranscribed:
        log.warning(
            "%d recordings have no transcript (.lab, .txt or .TextGrid) and are left out: %s",
            len(untranscribed),
            ", ".join(str(p) for p in untranscribed[:10]),
        )
    if not utterances:
        raise CorpusError(
            f"corpus.root={root}: no recording with a transcript (<X>.wav with <X>.lab, .txt or .TextGrid)"
        )
    seen: dict[str, MfaUtterance] = {}
    for u in utterances:
        if u.utt_id in seen:
            raise CorpusError(f"{u.audio} and {seen[u.utt_id].audio} make the same utterance id {u.utt_id}")
        seen[u.utt_id] = u
    return utterances, layout


def _textgrid_utterances(path: Path, audio: Path, recording: str, normalise: Normaliser) -> list[MfaUtterance]:
    from praatio import textgrid  # the TextGrid reader only where a corpus has TextGrids

    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    except Exception as err:  # praatio raises its own errors and ValueErrors for a malformed file
        raise CorpusError(f"{path}: not a TextGrid praatio reads ({err})") from None
    utterances = []
    for name in grid.tierNames:
        tier = grid.getTier(name)
        if not isinstance(tier, textgrid.IntervalTier):
            continue
        speaker = _kaldi_id(name.strip().replace(" ", "_"), f"{path}: tier '{name}'")
        for start, end, text in tier.entries:
            words = normalise(text)
            if words:
                utt = _kaldi_id(f"{speaker}-{recording}-{round(start * 1000):07d}", str(path))
                utterances.append(MfaUtterance(utt, speaker, recording, audio, words, start, end, segmented=True))
    if not utterances:
        raise CorpusError(f"{path}: no interval with text in any tier")
    return utterances


def _split_of(speakers: list[str], ccfg: DictConfig) -> dict[str, str]:
    """speaker -> split: test_speakers to test, dev_speakers (when given) to dev, the rest to train."""
    test, dev = set(ccfg.test_speakers), set(ccfg.dev_speakers or [])
    for key, listed in (("test_speakers", test), ("dev_speakers", dev)):
        missing = sorted(listed - set(speakers))
        if missing:
            raise CorpusError(f"corpus.{key}: {', '.join(missing)} are not speakers of corpus.root")
    if test & dev:
        raise CorpusError(f"corpus.dev_speakers and corpus.test_speakers share {', '.join(sorted(test & dev))}")
    return {s: "test" if s in test else "dev" if s in dev else "train" for s in speakers}


def local_dir(data_dir: Path) -> Path:
    """Where the Kaldi form of the corpus goes (Kaldi's data/local)."""
    return data_dir / "local"


def sources(cfg: DictConfig) -> list:
    """The folder, the dictionary's content, and every file's name, size and (transcripts) content."""
    ccfg = cfg.corpus
    root = repo_path(ccfg.root)
    files = walk_files(root) if root.is_dir() else []
    listing = {
        str(p.relative_to(root)): file_digest(p)
        if p.suffix.lower() in (*TRANSCRIPT_EXTENSIONS, ".textgrid")
        else p.stat().st_size
        for p in files
    }
    dictionary = repo_path(ccfg.dictionary)
    return [str(root), listing, file_digest(dictionary) if dictionary.is_file() else None]


def kaldi_config(cfg: DictConfig, data_dir: Path) -> DictConfig:
    """The config as phonerec.data.corpora.kaldi reads it: the corpus as the Kaldi form written in local_dir."""
    ccfg, local = cfg.corpus, local_dir(data_dir)
    plain = OmegaConf.to_container(cfg, resolve=True)
    corpus = {
        "name": ccfg.name,
        "train_dir": str(local / "train"),
        "dev_dir": str(local / "dev") if ccfg.dev_speakers is not None else None,
        "test_dir": str(local / "test") if ccfg.test_speakers else None,
        "dict_dir": str(local / "dict"),
        "oov": ccfg.oov,
        "oov_word": UNKNOWN_WORD,
        "allow_pipes": False,
        "resample": ccfg.resample,
        "sample_rate": ccfg.sample_rate,
        "max_utterance_seconds": ccfg.max_utterance_seconds,
        "dev_share": ccfg.dev_share,
        "dev_seed": ccfg.dev_seed,
    }
    kaldi_cfg = OmegaConf.create({key: value for key, value in plain.items() if key != "corpus"})
    kaldi_cfg.corpus = OmegaConf.merge(OmegaConf.structured(KaldiConfig), corpus)  # typed: schema.corpus_kind
    return kaldi_cfg


def write_kaldi_form(cfg: DictConfig, data_dir: Path) -> DictConfig:
    """The folder and the dictionary -> local_dir(data_dir)/{train,dev,test,dict} (the Kaldi form) and
    data_dir/layout.txt (recording -> its path under the folder, without the extension); returns the config that
    reads them as corpus=kaldi."""
    ccfg = cfg.corpus
    dictionary = read_dictionary(repo_path(ccfg.dictionary))
    utterances, layout = scan_corpus(repo_path(ccfg.root), ccfg.speaker_characters, Normaliser(dictionary.lexicon))
    speakers = sorted({u.speaker for u in utterances})
    split_of = _split_of(speakers, ccfg)
    intervals = len({u.recording for u in utterances if u.segmented})
    log.info(
        "%s: %d utterances of %d speakers, %d recordings (%d of them with TextGrid intervals)",
        *(repo_path(ccfg.root), len(utterances), len(speakers), len(layout), intervals),
    )
    local = local_dir(data_dir)
    remove_tree(local, made_in=data_dir)  # the Kaldi form of earlier settings
    make_dir(local)
    write_dict_dir(dictionary, local / "dict")
    segmented = any(u.segmented for u in utterances)
    for split in SPLITS:
        chosen = [u for u in utterances if split_of[u.speaker] == split]
        if chosen:  # a data dir of the user's form: `text` holds the words (write_data_dir writes `phones` there)
            span = (lambda u: (u.recording, u.start, u.end)) if segmented else (lambda u: ())
            write_data_dir(
                local / split, [Utterance(u.utt_id, u.speaker, str(u.audio), u.words, [], *span(u)) for u in chosen]
            )
    write_table(data_dir / "layout.txt", textgrid_paths(utterances, layout))
    return kaldi_config(cfg, data_dir)


def textgrid_paths(utterances: list[MfaUtterance], layout: dict[str, str]) -> dict[str, str]:
    """Where the alignment of each recording goes (its path under the folder, without the extension), keyed as the
    aligner names recordings: by recording id where the corpus has TextGrid intervals (its data dirs then have
    segments), else by utterance id (a recording of its own)."""
    segmented = any(u.segmented for u in utterances)
    return {u.recording if segmented else u.utt_id: layout[u.recording] for u in utterances}


def prepare(cfg: DictConfig, data_dir: Path) -> None:
    """write_kaldi_form, then data_dir/{train,dev,test} and data_dir/lang from it as corpus=kaldi prepares them."""
    kaldi.prepare(write_kaldi_form(cfg, data_dir), data_dir)
