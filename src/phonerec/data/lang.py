"""The lang dir: lexicon and symbol tables with stable ids.

phones.txt  `<phone> <id>`: id 0 is `<blk>`, the CTC blank (output 0 of a CTC model, never in an
            alignment); id 1 is the optional silence; the other phones (the lexicon's, and a dict dir's listed
            ones) follow in C-locale order from id 2. The ids depend on the lexicon and phone lists alone,
            never on the data.
words.txt   `<word> <id>`: id 0 is `<eps>`, then the lexicon's words in C-locale order from 1.
lexicon.txt `<word> <phone>...`, one pronunciation a line (a word may have several), each line once.
lexiconp.txt `<word> <probability> <phone>...`: the same lines with their pronunciation probabilities,
            max-normalised per word (Kaldi's); only where the dict dir or dictionary gave probabilities
            (without it every pronunciation weighs 1).
lexiconp_silprob.txt  `<word> <probability> <P(silence after)> <correction after silence> <after none> <phone>...`
            of the pronunciations the dict dir gave silence probabilities (hmm.align.Pronunciation); only then.
silence_phones.txt  the silence phones, one a line: first the optional silence (at utterance edges and between
            words in alignment graphs; `sil` for the built-in corpora), then a dict dir's other silence and
            garbage phones (spn, nsn, ...), which are trained as ordinary phones. With score.ignore_phones=null,
            scoring leaves all of them out.
states.txt  `<phone>_<k> <id>`: the HMM states of the Viterbi model, states_per_phone per phone, in phone id
            order without the blank: state id = (phone id - 1) * states_per_phone + k
            (see phonerec.hmm.align.Topology).
"""

import difflib
import logging
from pathlib import Path

from omegaconf import DictConfig

from phonerec.base.errors import RecipeError
from phonerec.base.files import write_text_atomic
from phonerec.data.data_dir import read_symbol_table, read_table
from phonerec.hmm.align import Topology

log = logging.getLogger(__name__)

BLANK = "<blk>"
LANG_FILES = ("phones.txt", "words.txt", "lexicon.txt", "silence_phones.txt", "states.txt")
PROBABILITIES_FILE = "lexiconp.txt"  # in a lang dir only where the dictionary gave probabilities
SILENCE_PROBABILITIES_FILE = "lexiconp_silprob.txt"  # only where it gave silence probabilities
OPTIONAL_LANG_FILES = (PROBABILITIES_FILE, SILENCE_PROBABILITIES_FILE)
EPSILON = "<eps>"
FEW_WORDS = 30  # a lexicon this small is listed whole when a word is not in it (a digit recipe's)


class Lexicon(dict[str, list[list[str]]]):
    """word -> pronunciations, in file order, as read_lexicon reads a lexicon.txt; `lines` holds the line of each
    word's first pronunciation, `probabilities` (of a lexiconp.txt) each pronunciation's probability."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self.lines: dict[str, int] = {}
        self.probabilities: dict[str, list[float]] = {}

    def pronunciations(self, word: str, where: str) -> list[list[str]]:
        """The word's pronunciations. A word the lexicon lacks is a RecipeError naming `where` (the transcript
        line or file the word came from) and, where the lexicon has it in another case, its spelling there:
        words are not case-folded, as Kaldi's are not."""
        if word in self:
            return self[word]
        others = [w for w in self if w.lower() == word.lower()]
        if others:
            hint = f"; it has '{others[0]}' ({self.path}:{self.lines[others[0]]}), in another case"
        elif len(self) <= FEW_WORDS:
            hint = f"; its words: {' '.join(self)}"
        else:
            close = difflib.get_close_matches(word, self, n=5)
            hint = f"; the closest of its {len(self)} words: {' '.join(close)}" if close else ""
        raise RecipeError(f"{where}: the word '{word}' is not in the lexicon {self.path}{hint}")

    def text(self) -> str:
        """lexicon.txt's lines: `<word> <phone>...`, each pronunciation once."""
        return "".join(f"{word} {' '.join(pron)}\n" for word, prons in self.items() for pron in prons)


def max_normalised(probabilities: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each word's pronunciation probabilities divided by its largest (Kaldi's max-normalised lexiconp.txt)."""
    return {word: [p / max(probs) for p in probs] for word, probs in probabilities.items()}


def read_lexicon(path: Path, probabilities: bool = False) -> Lexicon:
    """The one reader of lexicon files (the decoders, datasets and corpus preparation all read through it): with
    `probabilities`, a Kaldi lexiconp.txt, `<word> <probability> <phone>...`. A line repeated exactly is read
    once, with a warning naming both lines (a duplicate changed the CTC lexicon search's hypotheses); different
    pronunciations of one word are variants and are all kept."""
    lexicon = Lexicon(path)
    first_line: dict[tuple[str, ...], int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            word, pron = parts[0], parts[2:] if probabilities else parts[1:]
            if not pron:
                raise RecipeError(f"{path}:{lineno}: word '{word}' has no pronunciation")
            if tuple(parts) in first_line:
                log.warning(
                    "%s:%d: '%s' repeats line %d; read once", path, lineno, " ".join(parts), first_line[tuple(parts)]
                )
                continue
            first_line[tuple(parts)] = lineno
            lexicon.lines.setdefault(word, lineno)
            lexicon.setdefault(word, []).append(pron)
            if probabilities:
                try:
                    lexicon.probabilities.setdefault(word, []).append(float(parts[1]))
                except ValueError:
                    raise RecipeError(f"{path}:{lineno}: '{parts[1]}' is no pronunciation probability") from None
    if not lexicon:
        raise RecipeError(f"{path}: empty lexicon")
    return lexicon


def prepare_lang(
    lexicon: Path | Lexicon,
    lang_dir: Path,
    states_per_phone: int = 1,
    silence_phones: list[str] = ("sil",),
    phones: list[str] = (),
    probabilities: dict[str, list[float]] | None = None,
    silence_probabilities: dict | None = None,
) -> Lexicon:
    """The lang dir of a lexicon (a file, or one read: a dict dir's); returns the lexicon as read (lang/lexicon.txt
    holds each line once). silence_phones: the optional silence first, then any other silence phones; phones:
    phones to list besides the lexicon's (a dict dir's phone lists, as Kaldi's prepare_lang.sh lists them);
    probabilities: each word's pronunciations' probabilities, max-normalised (lang/lexiconp.txt), or None;
    silence_probabilities: (word, pronunciation) -> (P(silence after), the two corrections), or None."""
    if not isinstance(lexicon, Lexicon):
        lexicon = read_lexicon(lexicon)
    optional_silence = silence_phones[0]
    used = {p for prons in lexicon.values() for pron in prons for p in pron}
    others = sorted((used | set(silence_phones) | set(phones)) - {optional_silence})
    for reserved in (BLANK, EPSILON):
        if reserved in lexicon or reserved in others or reserved == optional_silence:
            raise RecipeError(f"{lexicon.path}: '{reserved}' is reserved")
    lang_dir.mkdir(parents=True, exist_ok=True)
    _write_symbols(lang_dir / "phones.txt", [BLANK, optional_silence, *others])
    states = [f"{p}_{k}" for p in [optional_silence, *others] for k in range(states_per_phone)]
    _write_symbols(lang_dir / "states.txt", states)
    _write_symbols(lang_dir / "words.txt", [EPSILON, *sorted(lexicon)])
    write_text_atomic(lang_dir / "silence_phones.txt", "".join(f"{p}\n" for p in silence_phones))
    write_text_atomic(lang_dir / "lexicon.txt", lexicon.text())
    if probabilities is None:
        (lang_dir / PROBABILITIES_FILE).unlink(missing_ok=True)  # of an earlier dict dir's
    else:
        lines = (
            f"{word} {p:g} {' '.join(pron)}\n"
            for word, prons in lexicon.items()
            for pron, p in zip(prons, probabilities[word], strict=True)
        )
        write_text_atomic(lang_dir / PROBABILITIES_FILE, "".join(lines))
    if silence_probabilities is None:
        (lang_dir / SILENCE_PROBABILITIES_FILE).unlink(missing_ok=True)
    else:
        lines = []
        for word, prons in lexicon.items():
            for k, pron in enumerate(prons):
                found = silence_probabilities.get((word, tuple(pron)))
                if found is not None:
                    p = probabilities[word][k] if probabilities else 1.0
                    lines.append(f"{word} {p:g} {' '.join(f'{x:g}' for x in found)} {' '.join(pron)}\n")
        write_text_atomic(lang_dir / SILENCE_PROBABILITIES_FILE, "".join(lines))
    return lexicon


def read_silence_probabilities(lang_dir: Path) -> dict[tuple[str, tuple[str, ...]], tuple[float, float, float]]:
    """lang/lexiconp_silprob.txt's silence probabilities by (word, pronunciation); {} without one."""
    path = lang_dir / SILENCE_PROBABILITIES_FILE
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        found[parts[0], tuple(parts[5:])] = tuple(float(x) for x in parts[2:5])
    return found


def read_pronunciation_probabilities(
    lang_dir: Path, lexicon: Lexicon | None = None, estimated: dict[str, dict[str, float]] | None = None
) -> dict[str, list[float]] | None:
    """lang/lexiconp.txt's probabilities, word -> one per pronunciation in lexicon.txt's order; None without one.
    `estimated` (a Viterbi model's, hmm.pronunciation_probs=estimated: word -> {phones: probability}) take the
    place of the file's for the pronunciations of `lexicon` (the lang dir's) they give."""
    path = lang_dir / PROBABILITIES_FILE
    probabilities = read_lexicon(path, probabilities=True).probabilities if path.is_file() else None
    if not estimated:
        return probabilities
    merged = dict(probabilities or {})
    for word, probs in estimated.items():
        if word in lexicon:
            before = merged.get(word, [1.0] * len(lexicon[word]))
            merged[word] = [probs.get(" ".join(pron), p) for pron, p in zip(lexicon[word], before, strict=True)]
    return merged


def _write_symbols(path: Path, symbols: list[str]) -> None:
    write_text_atomic(path, "".join(f"{sym} {i}\n" for i, sym in enumerate(symbols)))


def read_phones(lang_dir: Path) -> dict[str, int]:
    return read_symbol_table(Path(lang_dir) / "phones.txt")


def read_silence_phones(lang_dir: Path) -> list[str]:
    """lang/silence_phones.txt: the optional silence first, then the other silence phones."""
    with open(Path(lang_dir) / "silence_phones.txt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def ignored_in_scoring(cfg: DictConfig, lang_dir: Path) -> frozenset[str]:
    """The phones scoring leaves out of reference and hypothesis: score.ignore_phones, or where that is null the
    lang dir's silence phones (corpora of the user's own: whatever their dict dir calls them)."""
    if cfg.score.ignore_phones is None:
        return frozenset(read_silence_phones(lang_dir))
    return frozenset(cfg.score.ignore_phones)


def read_id2phone(lang_dir: Path) -> dict[int, str]:
    return {i: p for p, i in read_phones(lang_dir).items()}


def read_topology(lang_dir: Path, cfg: DictConfig) -> Topology:
    phones = read_phones(lang_dir)
    topo = Topology(num_phones=len(phones), states_per_phone=cfg.hmm.states_per_phone)
    states_file = lang_dir / "states.txt"
    states = read_table(states_file) if states_file.is_file() else {}
    if len(states) != topo.num_states:
        raise RecipeError(
            f"{lang_dir}/states.txt has {len(states)} states, hmm.states_per_phone={cfg.hmm.states_per_phone} "
            f"needs {topo.num_states}: run stage 0 again with this setting"
        )
    return topo
