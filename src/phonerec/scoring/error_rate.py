"""Phone error rate (PER): phone-set folding, alignment counts with jiwer, and the score report.

The same preparation is applied to the reference and the hypothesis of every utterance: first `fold` (for
TIMIT, the 61 -> 48 -> 39 phone folding of Lee & Hon (1989), read with `read_phone_map` and applied with
`fold_phones`; a phone with no mapping, such as `q`, is deleted), then the `ignore` phones are removed (e.g.
{"sil"} for the digit corpora). The aligned counts are those of jiwer's Levenshtein alignment (jiwer aligns
whitespace-separated tokens, so phones are joined with spaces; a phone may not contain whitespace).

    mapping = read_phone_map("local/timit/phones.tsv", source="train48", target="score39")
    result = score(refs, hyps, utt2spk, fold=functools.partial(fold_phones, mapping=mapping))
    write_score_report(result, Path("exp/.../decode_test"), title="test, CTC greedy")

PER = (S + D + I) / N * 100 with N the number of reference phones after preparation; it is None where N = 0.
"""

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import jiwer
from omegaconf import DictConfig

from phonerec.base.config import StageKeys, repo_path
from phonerec.base.errors import RecipeError
from phonerec.base.files import write_text_atomic

# The config keys scoring_fold and score() callers read: how a PER is scored (the fold to the scoring phones, the
# phones left out), by stage 5, by the tuned decoders on dev, and by training's validation, which picks best.pt.
PHONE_SCORING = StageKeys(hashed=("score.ignore_phones", "score.phone_map", "score.fold_from", "score.fold_to"))
COUNTS = ("corr", "sub", "del", "ins", "err", "n")


class ScoringError(RecipeError, ValueError):
    """Bad scoring input: a malformed phone map, a phone missing from it, mismatched utterance sets."""


def _phone_map_rows(path: Path | str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a phone map's lines but comments and blanks: its header first."""
    rows: list[tuple[int, list[str]]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip() and not line.startswith("#"):
                rows.append((lineno, line.split()))
    if not rows:
        raise ScoringError(f"{path}: empty phone map")
    return rows


def phone_map_columns(path: Path | str) -> list[str]:
    """The phone sets a phone map's header names, the corpus's own labels (one row each) first."""
    return _phone_map_rows(path)[0][1]


def read_phone_map(path: Path | str, source: str = "timit61", target: str = "score39") -> dict[str, str | None]:
    """Read a phone-set table as `source` phone -> `target` phone.

    The table (local/timit/phones.tsv) has `#` comment lines, then a header naming its columns (phone sets),
    then one row per phone of the first set; `-` marks a phone with no mapping (TIMIT's `q`), which
    `fold_phones` deletes. Several rows may share a source phone (61 -> 48 merges closures) only if they agree
    on the target: a table that folds one phone two ways is an error, as are rows of the wrong width."""
    (_, header), *body = _phone_map_rows(path)
    for name in (source, target):
        if name not in header:
            raise ScoringError(f"{path}: no column '{name}' (columns: {' '.join(header)})")
    src, tgt = header.index(source), header.index(target)
    mapping: dict[str, str | None] = {}
    for lineno, parts in body:
        if len(parts) != len(header):
            raise ScoringError(f"{path}:{lineno}: expected {len(header)} columns, got {len(parts)}")
        if parts[src] == "-":
            continue
        value = None if parts[tgt] == "-" else parts[tgt]
        if parts[src] in mapping and mapping[parts[src]] != value:
            raise ScoringError(f"{path}:{lineno}: '{parts[src]}' maps to both {mapping[parts[src]]} and {value}")
        mapping[parts[src]] = value
    if not mapping:
        raise ScoringError(f"{path}: empty phone map")
    return mapping


def scoring_fold(cfg: DictConfig):
    """The one folding of reference and hypothesis before scoring (score.phone_map), or None."""
    if not cfg.score.phone_map:
        return None
    mapping = read_phone_map(repo_path(cfg.score.phone_map), source=cfg.score.fold_from, target=cfg.score.fold_to)
    return functools.partial(fold_phones, mapping=mapping)


def dev_per_scorer(cfg: DictConfig, ignore: frozenset[str]) -> Callable[[dict, dict], float]:
    """The PER of training's validation (refs, hyps: utterance -> phones), scored as stage 5 scores: folded by
    score.phone_map (TIMIT's 39 phones), without the phones `ignore` (phonerec.data.lang.ignored_in_scoring);
    best.pt is the epoch of its lowest value."""
    fold = scoring_fold(cfg)
    return lambda refs, hyps: score(refs, hyps, fold=fold, ignore=ignore)["total"]["per"]


def fold_phones(phones: Iterable[str], mapping: Mapping[str, str | None]) -> list[str]:
    """Map each phone through `mapping`, deleting those mapped to None; a phone not in it is an error.

    The one folding function: apply it identically to references and hypotheses (`score(fold=...)` does).
    """
    folded = []
    for phone in phones:
        if phone not in mapping:
            raise ScoringError(f"phone '{phone}' is not in the phone map")
        target = mapping[phone]
        if target is not None:
            folded.append(target)
    return folded


def _per(err: int, n: int) -> float | None:
    return err / n * 100 if n else None


def _counts(ref: list[str], hyp: list[str]) -> dict:
    if not ref:  # jiwer (before 4.0) raises on an empty reference: everything is an insertion
        corr = sub = dele = 0
        ins = len(hyp)
    elif not hyp:
        corr = sub = ins = 0
        dele = len(ref)
    else:
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        corr, sub, dele, ins = out.hits, out.substitutions, out.deletions, out.insertions
    err = sub + dele + ins
    return {"corr": corr, "sub": sub, "del": dele, "ins": ins, "err": err, "n": len(ref), "per": _per(err, len(ref))}


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """The substitutions, deletions and insertions that turn ref into hyp, fewest (as PER counts them)."""
    return _counts(list(ref), list(hyp))["err"]


def _sum(rows: Iterable[dict]) -> dict:
    total = dict.fromkeys(COUNTS, 0)
    total["utts"] = total["utts_err"] = 0
    for row in rows:
        for key in COUNTS:
            total[key] += row[key]
        total["utts"] += 1
        total["utts_err"] += row["err"] > 0
    total["per"] = _per(total["err"], total["n"])
    return total


def _id_list(ids: Iterable[str], limit: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (f" (and {len(ids) - limit} more)" if len(ids) > limit else "")


def _prepare(utt: str, side: str, phones, fold, ignore: frozenset[str]) -> list[str]:
    if isinstance(phones, str):
        raise TypeError(f"{side} of '{utt}' must be a list of phones, not a string")
    phones = list(phones)
    if fold is not None:
        phones = list(fold(phones))
    phones = [p for p in phones if p not in ignore]
    for phone in phones:
        if not isinstance(phone, str) or not phone or phone.split() != [phone]:
            raise ScoringError(f"{side} of '{utt}' holds an invalid phone {phone!r} (empty or with whitespace)")
    return phones


def score(
    refs: dict[str, list[str]],
    hyps: dict[str, list[str]],
    utt2spk: dict[str, str] | None = None,
    fold: Callable[[list[str]], list[str]] | None = None,
    ignore: Iterable[str] = frozenset(),
) -> dict:
    """Score hypotheses against references, both utterance id -> phone list.

    Each side is folded with `fold` (None: unchanged), then stripped of the `ignore` phones. Every reference
    needs a hypothesis and every hypothesis a reference (ScoringError, a ValueError, naming the utterances);
    with `utt2spk`, every reference needs a speaker. An empty reference scores its hypothesis as insertions.

    Returns {"metric": "per", "ignore": [...], "folded": bool, "total": {...}, "speakers": {spk: {...}}
    (only with utt2spk), "utterances": {utt: {..., "ref": str, "hyp": str}}}, where each count dict holds
    corr, sub, del, ins, err (= sub + del + ins), n (reference phones) and per (None where n = 0); total and
    speakers also hold utts and utts_err (utterances with an error).
    """
    if isinstance(ignore, str):
        raise TypeError("ignore must be a collection of phones, not a string")
    ignore = frozenset(ignore)
    missing = refs.keys() - hyps.keys()
    if missing:
        raise ScoringError(f"no hypothesis for {len(missing)} utterance(s): {_id_list(missing)}")
    extra = hyps.keys() - refs.keys()
    if extra:
        raise ScoringError(f"hypotheses for {len(extra)} utterance(s) not in the references: {_id_list(extra)}")
    if utt2spk is not None:
        no_speaker = refs.keys() - utt2spk.keys()
        if no_speaker:
            raise ScoringError(f"no speaker in utt2spk for {len(no_speaker)} utterance(s): {_id_list(no_speaker)}")

    utterances = {}
    for utt in sorted(refs):
        ref = _prepare(utt, "reference", refs[utt], fold, ignore)
        hyp = _prepare(utt, "hypothesis", hyps[utt], fold, ignore)
        utterances[utt] = {**_counts(ref, hyp), "ref": " ".join(ref), "hyp": " ".join(hyp)}

    result = {"metric": "per", "ignore": sorted(ignore), "folded": fold is not None}
    result["total"] = _sum(utterances.values())
    if utt2spk is not None:
        by_speaker: dict[str, list[dict]] = {}
        for utt, row in utterances.items():
            by_speaker.setdefault(utt2spk[utt], []).append(row)
        result["speakers"] = {spk: _sum(by_speaker[spk]) for spk in sorted(by_speaker)}
    result["utterances"] = utterances
    return result


def _fmt_per(per: float | None) -> str:
    return "n/a" if per is None else f"{per:.2f}"


def per_line(total: dict, metric: str = "per") -> str:
    """Kaldi compute-wer's summary line, for PER: `%PER 12.34 [ 56 / 454, 3 ins, 10 del, 43 sub ]` (`%WER` for
    metric "wer"; the rate is total["per"] either way)."""
    return (
        f"%{metric.upper()} {_fmt_per(total['per'])} [ {total['err']} / {total['n']}, "
        f"{total['ins']} ins, {total['del']} del, {total['sub']} sub ]"
    )


def write_score_report(result: dict, out_dir: Path, title: str) -> None:
    """Write out_dir/per.json (the whole result, with the title) and out_dir/per.txt (`score_table`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = " ".join(title.split())
    # allow_nan=False: the file stays strict JSON (PER is None, never NaN or inf, where N = 0).
    data = {"title": title, **result}
    write_text_atomic(out_dir / "per.json", json.dumps(data, indent=2, allow_nan=False) + "\n")
    write_text_atomic(out_dir / "per.txt", score_table(result, title))


def score_table(result: dict, title: str, metric: str = "per") -> str:
    """per.txt (wer.txt for words): the summary lines, then Corr/Sub/Del/Ins/Err and the rate per speaker."""
    title = " ".join(title.split())
    total = result["total"]
    ser = _fmt_per(_per(total["utts_err"], total["utts"]))
    lines = [
        f"# {title}",
        per_line(total, metric),
        f"%SER {ser} [ {total['utts_err']} / {total['utts']} ]",
        f"Scored {total['utts']} utterances.",
    ]
    if result.get("folded"):
        lines.append("Phones folded before scoring.")
    if result.get("ignore"):
        lines.append(f"Ignored phones: {' '.join(result['ignore'])}")
    lines.append("")
    speakers = result.get("speakers", {})
    width = max(len("Speaker"), len("Sum"), *(len(spk) for spk in speakers))
    header = (
        f"{'Speaker':<{width}} {'#Utt':>6} {'Corr':>7} {'Sub':>6} {'Del':>6} {'Ins':>6} {'Err':>6} {'N':>7} "
        f"{metric.upper():>7}"
    )

    def row_line(name: str, row: dict) -> str:
        return (
            f"{name:<{width}} {row['utts']:>6} {row['corr']:>7} {row['sub']:>6} {row['del']:>6} {row['ins']:>6} "
            f"{row['err']:>6} {row['n']:>7} {_fmt_per(row['per']):>7}"
        )

    lines += [header, "-" * len(header)]
    if speakers:
        lines += [row_line(spk, row) for spk, row in speakers.items()]
        lines.append("-" * len(header))
    lines.append(row_line("Sum", total))
    return "\n".join(lines) + "\n"


def word_error_rates(refs: dict[str, list[str]], hyps: dict[str, list[str]]) -> dict:
    """WER and sentence error rate (SER) of word sequences, with the same alignment counts as score()."""
    return word_rates(score(refs, hyps)["total"])


def word_rates(total: dict) -> dict:
    """`word_error_rates` from the total of a score() of word sequences."""
    return {
        "metric": "wer",
        "wer": total["per"],  # score() names its rate per; for words it is the word error rate
        "ser": _per(total["utts_err"], total["utts"]),
        **{k: total[k] for k in ("corr", "sub", "del", "ins", "err", "n", "utts", "utts_err")},
    }


def closest_reference(hyp: Sequence[str], words: Sequence[Sequence[Sequence[str]]]) -> list[str]:
    """The reference phones that take one pronunciation of each word (`words`: each word's pronunciations) and
    are at the least edit distance from `hyp` (ties: the earlier pronunciation): the reference of PER against the
    closest variant. A Levenshtein DP through the words one after another, each row the least cost of the words
    so far against each prefix of hyp; the choice is read back from the last word to the first."""
    m = len(hyp)
    row = list(range(m + 1))  # before any word: hyp[:j] is j insertions
    tables = []  # per word, per pronunciation: its DP matrix, rows 0 (the row it starts from) .. len(pron)
    for prons in words:
        matrices = []
        for pron in prons:
            matrix = [row]
            for phone in pron:
                prev, cur = matrix[-1], [matrix[-1][0] + 1]
                for j in range(1, m + 1):
                    cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (phone != hyp[j - 1])))
                matrix.append(cur)
            matrices.append(matrix)
        tables.append(matrices)
        row = [min(matrix[-1][j] for matrix in matrices) for j in range(m + 1)]
    chosen, j = [], m
    for prons, matrices in zip(reversed(words), reversed(tables), strict=True):
        best = min(range(len(prons)), key=lambda v: (matrices[v][-1][j], v))
        matrix, pron = matrices[best], prons[best]
        i = len(pron)
        while i:  # back through the pronunciation to the row it started from
            if j and matrix[i][j] == matrix[i - 1][j - 1] + (pron[i - 1] != hyp[j - 1]):
                i, j = i - 1, j - 1  # a match or substitution
            elif matrix[i][j] == matrix[i - 1][j] + 1:
                i -= 1  # a deletion
            else:
                j -= 1  # an insertion
        chosen.append(list(pron))
    return [p for pron in reversed(chosen) for p in pron]
