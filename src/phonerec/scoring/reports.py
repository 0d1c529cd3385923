"""Readable scoring reports: sclite-style alignments, confusion counts, a confusion-matrix figure.

Inputs are the phone sequences that were scored, utterance id -> list of phones, already folded and stripped
of the ignored phones as `phonerec.scoring.error_rate.score` does (its result holds them, joined with spaces, as each
utterance's `ref` and `hyp`; `refs_hyps(result)` splits them back). The alignments are jiwer's, as in
`score`, so every count here agrees with per.json.

    result = score(refs, hyps, utt2spk, fold=fold, ignore=ignore)
    write_score_report(result, decode_dir, title)
    write_reports(result, decode_dir, title, writer=writer, step=epoch)

writes, next to per.json / per.txt:
  per.pra          per utterance, as NIST sclite's `-o pra` prints it: `id:`, `Scores: (#C #S #D #I)`, then
                   the REF, HYP and Eval lines, one column per aligned pair;
  confusions.txt   the most frequent substitutions (ref ==> hyp), deletions and insertions;
  confusion.png    the confusion matrix: rows reference phones and <ins>, columns hypothesis phones and <del>.
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import jiwer
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from phonerec.base.files import write_png_atomic, write_text_atomic
from phonerec.scoring.error_rate import ScoringError, per_line

DEL = "<del>"  # the hypothesis side of a deletion: (ref phone, DEL)
INS = "<ins>"  # the reference side of an insertion: (INS, hyp phone)

# One aligned column: (reference phone or None, hypothesis phone or None, code), code one of C S D I.
Column = tuple[str | None, str | None, str]


def refs_hyps(result: Mapping) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The scored (folded, filtered) reference and hypothesis phones of a `score()` result."""
    utterances = result["utterances"]
    refs = {utt: row["ref"].split() for utt, row in utterances.items()}
    hyps = {utt: row["hyp"].split() for utt, row in utterances.items()}
    return refs, hyps


def _phones(utt: str, side: str, phones) -> list[str]:
    if isinstance(phones, str):
        raise TypeError(f"{side} of '{utt}' must be a list of phones, not a string")
    phones = list(phones)
    for phone in phones:
        if not isinstance(phone, str) or not phone or phone.split() != [phone]:
            raise ScoringError(f"{side} of '{utt}' holds an invalid phone {phone!r} (empty or with whitespace)")
        if phone in (DEL, INS):
            raise ScoringError(f"{side} of '{utt}' holds the reserved symbol {phone}")
    return phones


def align(refs: Mapping[str, Sequence[str]], hyps: Mapping[str, Sequence[str]]) -> dict[str, list[Column]]:
    """utt -> its alignment, a list of (ref, hyp, code) columns in order, code C (correct), S (substitution),
    D (deletion: hyp None) or I (insertion: ref None); utterances sorted. jiwer's Levenshtein alignment, the one
    `score` counts; an empty side is all deletions or all insertions."""
    if refs.keys() != hyps.keys():
        missing, extra = sorted(refs.keys() - hyps.keys()), sorted(hyps.keys() - refs.keys())
        raise ScoringError(
            f"references and hypotheses differ: no hypothesis for {missing[:5]}, no reference for {extra[:5]}"
        )
    utts = sorted(refs)
    pairs = {utt: (_phones(utt, "reference", refs[utt]), _phones(utt, "hypothesis", hyps[utt])) for utt in utts}
    out: dict[str, list[Column]] = {}
    both = [utt for utt in utts if pairs[utt][0] and pairs[utt][1]]
    for utt in utts:
        ref, hyp = pairs[utt]
        if not hyp:
            out[utt] = [(r, None, "D") for r in ref]
        elif not ref:
            out[utt] = [(None, h, "I") for h in hyp]
    if both:
        # One jiwer call for the whole set: a list of sentences, each a space-joined phone string.
        words = jiwer.process_words([" ".join(pairs[u][0]) for u in both], [" ".join(pairs[u][1]) for u in both])
        for utt, chunks in zip(both, words.alignments, strict=True):
            ref, hyp = pairs[utt]
            columns: list[Column] = []
            for chunk in chunks:
                r = ref[chunk.ref_start_idx : chunk.ref_end_idx]
                h = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
                if chunk.type == "equal":
                    columns += [(a, b, "C") for a, b in zip(r, h, strict=True)]
                elif chunk.type == "substitute":
                    columns += [(a, b, "S") for a, b in zip(r, h, strict=True)]
                elif chunk.type == "delete":
                    columns += [(a, None, "D") for a in r]
                elif chunk.type == "insert":
                    columns += [(None, b, "I") for b in h]
                else:  # pragma: no cover - jiwer's four chunk types
                    raise ValueError(f"unknown jiwer alignment chunk {chunk.type!r}")
            out[utt] = columns
    return {utt: out[utt] for utt in utts}


def _scores(columns: Iterable[Column]) -> dict[str, int]:
    codes = Counter(code for _, _, code in columns)
    return {code: codes[code] for code in "CSDI"}


def _pra_block(utt: str, columns: list[Column], upcase_errors: bool) -> list[str]:
    s = _scores(columns)
    lines = [f"id: ({utt})", f"Scores: (#C #S #D #I) {s['C']} {s['S']} {s['D']} {s['I']}"]
    if not columns:  # sclite prints no REF/HYP/Eval lines for an utterance with nothing on either side
        return lines
    ref_cells, hyp_cells, eval_cells = [], [], []
    for ref, hyp, code in columns:
        width = max(len(ref or ""), len(hyp or ""))
        if upcase_errors and code != "C":
            ref, hyp = ref and ref.upper(), hyp and hyp.upper()
        # As sclite: the missing side of a deletion or insertion is asterisks across the column's width.
        ref_cells.append((ref or "*" * width).ljust(width))
        hyp_cells.append((hyp or "*" * width).ljust(width))
        eval_cells.append(("" if code == "C" else code).ljust(width))
    lines += [
        ("REF:  " + " ".join(ref_cells)).rstrip(),
        ("HYP:  " + " ".join(hyp_cells)).rstrip(),
        ("Eval: " + " ".join(eval_cells)).rstrip(),
    ]
    return lines


def alignment_report(
    refs: Mapping[str, Sequence[str]], hyps: Mapping[str, Sequence[str]], upcase_errors: bool | None = None
) -> str:
    """The alignments in NIST sclite's `-o pra` layout, one block per utterance (sorted), blocks separated by a
    blank line:

        id: (utt1)
        Scores: (#C #S #D #I) 5 1 1 1
        REF:  sh IY hh AE d y er **
        HYP:  sh IH hh ** d y er DX
        Eval:    S     D         I

    Each column is as wide as its wider side; a deletion is asterisks in HYP, an insertion asterisks in REF,
    across the column's width. As sclite (in its default, case-insensitive mode), the phones of an error are
    upper-cased; `upcase_errors=None` does that only where every phone is lower-case, so that a phone set with
    case distinctions (X-SAMPA) is never misprinted (the Eval line marks the errors either way). Trailing
    blanks are stripped from each line; an utterance empty on both sides has only its id and Scores lines."""
    alignments = align(refs, hyps)
    if upcase_errors is None:
        upcase_errors = all(
            p == p.lower() for columns in alignments.values() for ref, hyp, _ in columns for p in (ref, hyp) if p
        )
    blocks = ["\n".join(_pra_block(utt, columns, upcase_errors)) + "\n" for utt, columns in alignments.items()]
    return "\n".join(blocks)


def confusion_counts(refs: Mapping[str, Sequence[str]], hyps: Mapping[str, Sequence[str]]) -> Counter:
    """Counter of aligned (ref phone, hyp phone) pairs over all utterances: correct pairs (p, p), substitutions
    (p, q), deletions (p, "<del>") and insertions ("<ins>", q). Its off-diagonal total is S + D + I."""
    counts: Counter = Counter()
    for columns in align(refs, hyps).values():
        counts.update((ref or INS, hyp or DEL) for ref, hyp, _ in columns)
    return counts


def _kind(pair: tuple[str, str]) -> str:
    ref, hyp = pair
    if ref == INS:
        return "ins"
    if hyp == DEL:
        return "del"
    return "corr" if ref == hyp else "sub"


def most_frequent_confusions(counts: Mapping[tuple[str, str], int], n: int = 20) -> list[tuple[tuple[str, str], int]]:
    """The `n` most frequent substitutions, then the `n` most frequent deletions, then the `n` most frequent
    insertions, as ((ref, hyp), count) like Counter.most_common; each group by count, most frequent first, ties
    by phone. Correct pairs are left out."""
    out = []
    for kind in ("sub", "del", "ins"):
        group = [(pair, c) for pair, c in counts.items() if c > 0 and _kind(pair) == kind]
        group.sort(key=lambda item: (-item[1], item[0]))
        out += group[:n]
    return out


def confusions_text(
    counts: Mapping[tuple[str, str], int], n: int = 20, title: str | None = None, metric: str = "per"
) -> str:
    """confusions.txt: the totals, then the most frequent substitutions, deletions and insertions (as sclite's
    dtl report lists its confusion pairs, deletions and insertions)."""
    totals = Counter()
    for pair, c in counts.items():
        totals[_kind(pair)] += c
    num_ref = totals["corr"] + totals["sub"] + totals["del"]
    err = totals["sub"] + totals["del"] + totals["ins"]
    total = {"err": err, "n": num_ref, "sub": totals["sub"], "del": totals["del"], "ins": totals["ins"]}
    total["per"] = err / num_ref * 100 if num_ref else None
    lines = [f"# {' '.join(title.split())}"] if title else []
    lines.append(per_line(total, metric))
    unit = "word" if metric == "wer" else "phone"
    top = most_frequent_confusions(counts, n)
    headings = {
        "sub": "SUBSTITUTIONS (ref ==> hyp)",
        "del": f"DELETIONS (ref {unit})",
        "ins": f"INSERTIONS (hyp {unit})",
    }
    for kind, heading in headings.items():
        group = [(pair, c) for pair, c in top if _kind(pair) == kind]
        distinct = sum(1 for pair, c in counts.items() if c > 0 and _kind(pair) == kind)
        lines += ["", f"{heading}: {totals[kind]} in all, {distinct} distinct, the {len(group)} most frequent"]
        for rank, ((ref, hyp), c) in enumerate(group, 1):
            what = f"{ref} ==> {hyp}" if kind == "sub" else ref if kind == "del" else hyp
            lines.append(f"{rank:4d}: {c:6d}  ->  {what}")
    return "\n".join(lines) + "\n"


def _phone_order(counts: Mapping[tuple[str, str], int], labels: Sequence[str] | None) -> list[str]:
    seen = {p for pair in counts for p in pair if p not in (DEL, INS)}
    order = list(dict.fromkeys(labels)) if labels is not None else []
    return order + sorted(seen - set(order))


def confusion_matrix_figure(
    counts: Mapping[tuple[str, str], int],
    labels: Sequence[str] | None = None,
    title: str | None = None,
    unit: str = "phone",
) -> Figure:
    """The confusion matrix as a matplotlib Figure (no pyplot state): rows are reference phones then <ins>,
    columns hypothesis phones then <del>, in the order of `labels` (phones counted but not in `labels` are
    added after them, sorted; None: all counted phones, sorted). Colours are log-scaled counts; zero cells are
    blank, the others hold their count where it fits (up to 64 symbols). Sized to stay readable at 48 phones and
    more (about a quarter inch per row). `unit` names the axes' symbols (phone, word)."""
    phones = _phone_order(counts, labels)
    rows, cols = [*phones, INS], [*phones, DEL]
    row_index = {p: i for i, p in enumerate(rows)}
    col_index = {p: j for j, p in enumerate(cols)}
    matrix = np.zeros((len(rows), len(cols)))
    for (ref, hyp), c in counts.items():
        if c > 0:
            matrix[row_index[ref], col_index[hyp]] += c
    vmax = matrix.max() if matrix.size else 0.0
    norm = LogNorm(vmin=1.0, vmax=max(vmax, 10.0))

    # Fixed margins in inches, no layout engine (constrained layout would double the drawing time): a
    # quarter inch a cell, at least 3 inches of matrix, room for the labels, the title and the colour bar.
    fontsize = 8 if len(cols) <= 64 else 6
    side = max(3.0, 0.22 * len(cols))
    left, right, bottom, top = 1.0, 1.3, 0.9, 1.2
    width, height = left + side + right, bottom + side + top
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((left / width, bottom / height, side / width, side / height))
    image = ax.imshow(np.ma.masked_less(matrix, 1.0), norm=norm, cmap="viridis", interpolation="nearest", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(rows)), rows, fontsize=fontsize)
    ax.tick_params(top=True, labeltop=True, right=True)
    ax.set_xlabel(f"hypothesis {unit}")
    ax.set_ylabel(f"reference {unit}")
    # A faint grid to follow a row or column; darker lines set the <ins> row and the <del> column apart.
    edges = np.arange(len(cols) + 1) - 0.5
    ax.vlines(edges[1:-2], -0.5, len(rows) - 0.5, colors="0.92", linewidth=0.3)
    ax.hlines(edges[1:-2], -0.5, len(cols) - 0.5, colors="0.92", linewidth=0.3)
    if len(cols) <= 64:  # counts in the cells: three digits fit a quarter inch at 4.5 points
        for i, j in zip(*np.nonzero(matrix), strict=True):
            count = int(matrix[i, j])
            dark = norm(count) < 0.6  # viridis: light text on its dark half
            text = str(count) if count < 1000 else f"{count / 1000:.0f}k"
            ax.text(j, i, text, ha="center", va="center", fontsize=4.5, color="white" if dark else "black")
    ax.axhline(len(rows) - 1.5, color="0.3", linewidth=0.8)
    ax.axvline(len(cols) - 1.5, color="0.3", linewidth=0.8)
    total = int(matrix.sum())
    errors = total - int(np.trace(matrix[: len(phones), : len(phones)]))
    heading = f"{' '.join(title.split())}\n" if title else ""
    fig.suptitle(f"{heading}{total} aligned pairs, S + D + I = {errors}, log colour scale", fontsize=10, y=0.995)
    cax = fig.add_axes(((left + side + 0.2) / width, (bottom + 0.2 * side) / height, 0.2 / width, 0.6 * side / height))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("count")
    return fig


def _tag(title: str) -> str:
    return "confusion/" + ("_".join(title.split()) or "untitled")


def write_reports(
    source: Mapping | tuple[Mapping[str, Sequence[str]], Mapping[str, Sequence[str]]],
    out_dir: Path | str,
    title: str,
    writer=None,
    step: int = 0,
    *,
    labels: Sequence[str] | None = None,
    top: int = 20,
    metric: str = "per",
    heading: str | None = None,
) -> dict[str, Path]:
    """Write out_dir/per.pra (`alignment_report`; wer.pra for metric "wer"), out_dir/confusions.txt (the `top`
    most frequent substitutions, deletions and insertions) and out_dir/confusion.png (`confusion_matrix_figure`
    over `labels`, headed `heading`, else `title`), each to a temporary name then renamed. `source` is a `score()`
    result or a (refs, hyps) pair. With a TensorBoard SummaryWriter (anything with add_figure), the figure is also
    logged as `confusion/<title>` (whitespace in the title made `_`) at `step`. Returns the paths written."""
    if isinstance(source, tuple):
        refs, hyps = source
    elif isinstance(source, Mapping) and "utterances" in source:
        refs, hyps = refs_hyps(source)
    else:
        raise TypeError("source must be a score() result or a (refs, hyps) pair")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_title = " ".join(title.split())
    paths = {
        "pra": out_dir / f"{metric}.pra",
        "confusions": out_dir / "confusions.txt",
        "png": out_dir / "confusion.png",
    }

    counts = confusion_counts(refs, hyps)
    report = alignment_report(refs, hyps)
    write_text_atomic(paths["pra"], f"# {clean_title}\n\n{report}" if clean_title else report)
    write_text_atomic(paths["confusions"], confusions_text(counts, top, clean_title, metric))

    fig = confusion_matrix_figure(counts, labels, heading or clean_title, unit="word" if metric == "wer" else "phone")
    write_png_atomic(paths["png"], fig)
    if writer is not None:
        writer.add_figure(_tag(clean_title), fig, global_step=step, close=False)
    return paths


__all__ = [
    "DEL",
    "INS",
    "align",
    "alignment_report",
    "confusion_counts",
    "confusion_matrix_figure",
    "confusions_text",
    "most_frequent_confusions",
    "refs_hyps",
    "write_reports",
]
