"""A Kaldi dict dir (data/local/dict: what utils/prepare_lang.sh reads), read and checked as Kaldi's
utils/validate_dict_dir.pl checks it, each problem named by file and line.

silence_phones.txt     the silence and garbage phones (sil, spn, nsn, ...), one or more a line
optional_silence.txt   one of them: the optional silence between words and at utterance edges
nonsilence_phones.txt  the other phones, one or more a line (Kaldi's tree roots; here each phone is its own)
lexicon.txt            `<word> <phone>...`, or lexiconp.txt: `<word> <probability> <phone>...` (with both, they must
                       agree line by line, and lexiconp.txt is read, as prepare_lang.sh reads it)
lexiconp_silprob.txt   optional: `<word> <probability> <P(silence after)> <correction after silence> <correction after
                       no silence> <phone>...` (Kaldi's utils/dict_dir_add_pronprobs.sh, MFA's dictionary columns):
                       the silence probabilities of the pronunciations it lists, each of which the lexicon must hold
silprob.txt            not read (the utterance edges' silence probabilities: the edges keep hmm.silence_prob)
extra_questions.txt    not read: it shapes Kaldi's decision trees, which this recipe does not build (the log says so)

The checks: each file UTF-8, no carriage return, its last line ending in a newline; no empty line and no phone twice
in the phone lists; no phone written as a disambiguation symbol (`#...`), in a word-position form (`_B`, `_E`, `_S`,
`_I`) or as `<eps>`; one optional silence, a silence phone; silence and nonsilence phones disjoint; in the lexicon,
no line twice, no reserved word (`<s>`, `</s>`, `<eps>`, `#0`), no empty pronunciation, probabilities in (0, 1], and
every phone listed. The probabilities are max-normalised per word (each word's likeliest pronunciation 1, as Kaldi's
utils/dict_dir_add_pronprobs.sh writes them) and kept for pronunciation variants.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from phonerec.base.errors import DictDirError
from phonerec.data.data_dir import Problems
from phonerec.data.lang import Lexicon, max_normalised, read_lexicon

log = logging.getLogger(__name__)

RESERVED_WORDS = ("<s>", "</s>", "<eps>", "#0")
WORD_POSITION_SUFFIXES = ("_B", "_E", "_S", "_I")


@dataclass
class DictDir:
    path: Path
    silence_phones: list[str]  # in file order
    optional_silence: str
    nonsilence_phones: list[str]
    lexicon: Lexicon  # lexiconp.txt's or lexicon.txt's
    probabilities: dict[str, list[float]] | None  # word -> its pronunciations' probabilities (lexiconp.txt's), or None
    # (word, pronunciation) -> (P(silence after), correction after silence, after none): lexiconp_silprob.txt's
    silence_probabilities: dict[tuple[str, tuple[str, ...]], tuple[float, float, float]] | None = None


def _lines(path: Path, problems: Problems) -> list[str]:
    """The file's lines without their newlines; reported: not UTF-8, carriage returns, no newline at the end."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        problems.add(f"{path}:{line}", "not UTF-8")
        return []
    lines = text.split("\n")
    if lines[-1] != "":
        problems.add(f"{path}:{len(lines)}", "the last line does not end in a newline")
    else:
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        if "\r" in line:
            problems.add(f"{path}:{lineno}", "a carriage return (^M): DOS line ends")
            break  # once a file, as Kaldi reports it
    return [line.rstrip("\r") for line in lines]


def _phone_list(path: Path, problems: Problems) -> dict[str, str]:
    """phone -> where it is (file:line), in file order."""
    phones: dict[str, str] = {}
    for lineno, line in enumerate(_lines(path, problems), 1):
        where = f"{path}:{lineno}"
        if not line.split():
            problems.add(where, "empty line")
        for phone in line.split():
            if phone in phones:
                problems.add(where, f"phone '{phone}' repeats {phones[phone]}")
                continue
            if phone.startswith("#") or phone.endswith(WORD_POSITION_SUFFIXES) or phone == "<eps>":
                problems.add(
                    where,
                    f"phone '{phone}': a name like a disambiguation symbol (#...), a word-position phone (_B, _E, _S, "
                    "_I) or <eps> is not allowed",
                )
            phones[phone] = where
    return phones


def _check_lexicon(path: Path, probabilities: bool, phones: dict[str, str], problems: Problems) -> list[tuple]:
    """Kaldi's line checks of lexicon.txt or lexiconp.txt; returns each line as (word, pronunciation), for the check
    that the two agree."""
    seen: dict[str, int] = {}
    entries = []
    for lineno, line in enumerate(_lines(path, problems), 1):
        where = f"{path}:{lineno}"
        parts = line.split()
        if not parts:
            problems.add(where, "empty line")
            continue
        if line in seen:
            problems.add(where, f"repeats line {seen[line]}")
        seen.setdefault(line, lineno)
        word, rest = parts[0], parts[1:]
        if word in RESERVED_WORDS:
            problems.add(where, f"'{word}' is a reserved word ({', '.join(RESERVED_WORDS)})")
        if probabilities:
            probability = _probability(rest[0]) if rest else None
            if probability is None or not 0.0 < probability <= 1.0:
                problems.add(where, f"'{rest[0] if rest else ''}' is no pronunciation probability in (0, 1]")
            rest = rest[1:]
        if not rest:
            problems.add(where, f"word '{word}' has an empty pronunciation")
        for phone in rest:
            if phone not in phones:
                problems.add(where, f"phone '{phone}' is in neither silence_phones.txt nor nonsilence_phones.txt")
        entries.append((word, tuple(rest)))
    return entries


def _probability(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_dict_dir(path: Path) -> DictDir:
    """The dict dir at `path`, checked; a DictDirError lists every problem found, by file and line."""
    path = Path(path)
    if not path.is_dir():
        raise DictDirError(f"{path}: no such dict dir")
    problems = Problems(f"dict dir {path}", DictDirError)
    needed = ["silence_phones.txt", "optional_silence.txt", "nonsilence_phones.txt"]
    missing = [name for name in needed if not (path / name).is_file() or (path / name).stat().st_size == 0]
    lexicons = [name for name in ("lexicon.txt", "lexiconp.txt") if (path / name).is_file()]
    if not lexicons:
        missing.append("lexicon.txt (or lexiconp.txt)")
    if missing:
        raise DictDirError(f"{path}: missing or empty: {', '.join(missing)}")

    silence = _phone_list(path / "silence_phones.txt", problems)
    nonsilence = _phone_list(path / "nonsilence_phones.txt", problems)
    for phone in silence.keys() & nonsilence.keys():
        problems.add(nonsilence[phone], f"phone '{phone}' is also a silence phone ({silence[phone]})")
    optional = _lines(path / "optional_silence.txt", problems)
    optional_phones = [p for line in optional for p in line.split()]
    if len(optional_phones) != 1:
        problems.add(f"{path / 'optional_silence.txt'}:1", f"one phone expected, found {len(optional_phones)}")
    elif optional_phones[0] not in silence:
        problems.add(f"{path / 'optional_silence.txt'}:1", f"phone '{optional_phones[0]}' is not in silence_phones.txt")

    phones = {**silence, **nonsilence}
    entries = {name: _check_lexicon(path / name, name == "lexiconp.txt", phones, problems) for name in lexicons}
    if len(entries) == 2:
        plain, with_probs = entries["lexicon.txt"], entries["lexiconp.txt"]
        for lineno, (a, b) in enumerate(zip(plain, with_probs, strict=False), 1):
            if a != b:
                problems.add(
                    f"{path / 'lexiconp.txt'}:{lineno}", f"differs from lexicon.txt:{lineno} (sorted otherwise?)"
                )
                break
        else:
            if len(plain) != len(with_probs):
                problems.add(str(path / "lexiconp.txt"), f"{len(with_probs)} lines, lexicon.txt {len(plain)}")
    silence_probabilities = None
    if (path / SILPROB_FILE).is_file():
        known = {entry for lines in entries.values() for entry in lines}
        silence_probabilities = _check_silprob(path / SILPROB_FILE, known, problems)
    problems.raise_if_any()

    if (path / "extra_questions.txt").is_file():
        log.info(
            "%s: not read (it shapes Kaldi's decision trees; this recipe builds none)", path / "extra_questions.txt"
        )
    use_probs = "lexiconp.txt" in lexicons
    lexicon = read_lexicon(path / lexicons[-1], probabilities=use_probs)
    return DictDir(
        path=path,
        silence_phones=list(silence),
        optional_silence=optional_phones[0],
        nonsilence_phones=list(nonsilence),
        lexicon=lexicon,
        probabilities=max_normalised(lexicon.probabilities) if use_probs else None,
        silence_probabilities=silence_probabilities,
    )


SILPROB_FILE = "lexiconp_silprob.txt"


def _check_silprob(path: Path, known: set, problems: Problems) -> dict:
    """lexiconp_silprob.txt's silence probabilities by (word, pronunciation); each line's numbers checked (a
    probability in (0, 1], P(silence after) in [0, 1], corrections > 0) and its pronunciation one of the lexicon's."""
    found = {}
    for lineno, line in enumerate(_lines(path, problems), 1):
        where, parts = f"{path}:{lineno}", line.split()
        numbers = [_probability(x) for x in parts[1:5]]
        if len(parts) < 6 or None in numbers:
            problems.add(where, "expected <word> <probability> <P(silence after)> <two corrections> <phone>...")
            continue
        _, after, with_silence, without = numbers
        if not 0.0 <= after <= 1.0 or with_silence <= 0 or without <= 0:
            problems.add(where, "P(silence after) must be in [0, 1] and the corrections above 0")
        entry = (parts[0], tuple(parts[5:]))
        if entry not in known:
            problems.add(where, f"'{parts[0]} {' '.join(parts[5:])}' is not a pronunciation of the lexicon")
        found[entry] = (after, with_silence, without)
    return found
