"""NIST sclite (SCTK) as an optional second scorer: its standard reports, and its totals as a dict.

sclite is not a Python package: Debian and Ubuntu ship it in `sctk` (`apt-get install -y sctk`), which puts the
binary at /usr/lib/sctk/bin/sclite, off PATH (/usr/bin/sctk is a front end: `sctk sclite ...`, `sctk path`).
`find_sclite` looks on PATH first, then there.

    totals = run_sclite(refs, hyps, utt2spk, decode_dir)   # refs, hyps: the phones score() scored
    totals["per"], totals["err"], totals["n"]

`run_sclite` writes ref.trn and hyp.trn in sclite's trn format, one utterance a line, `phone phone ...
(<spk>-<utt>)`, and runs, in a scratch directory out_dir/.sclite.tmp whose files are then moved to out_dir,

    sclite -r ref.trn trn -h hyp.trn trn -i rm -e utf-8 -s -o sum rsum pra dtl -n sclite -O .

`-i rm` reads an id as speaker, separator, utterance, the separator being the id's first `-`, or where it has
none its first `_` (tried on this sclite: `a_b-c` is speaker `a_b`; `a-b_c` and `a_b` are speaker `a`). So the
id is `<spk>-<utt>`, with any `-` in the speaker made `.`: right whatever the utterance id holds, where
`<spk>_<utt>` would split a TIMIT-style `fcjf0_fcjf0-si1027` as speaker `fcjf0_fcjf0`. `-s` scores
case-sensitively, as jiwer does (sclite otherwise folds case, merging phones such as X-SAMPA's `A` and `a`);
`-e utf-8` reads IPA phone sets. The reports kept in out_dir: sclite.sys (`sum`: percentages per speaker),
sclite.raw (`rsum`: the same in counts), sclite.pra (the alignments), sclite.dtl (confusion pairs, insertions,
deletions), with ref.trn, hyp.trn, and sclite's console output in sclite.log.

sclite aligns with weights (substitution 4, insertion and deletion 3), not Levenshtein's unit costs, so its
split of the errors into S, D and I can differ from `phonerec.scoring.error_rate.score`'s; the total error is
the same or very close.
"""

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from phonerec.base.files import write_text_atomic
from phonerec.scoring.error_rate import ScoringError

SCTK_BIN_DIRS = (Path("/usr/lib/sctk/bin"),)  # where Debian's sctk package puts sclite
NAME = "sclite"  # the root name of sclite's reports: sclite.sys, sclite.raw, sclite.pra, sclite.dtl
REPORTS = {"sum": "sys", "rsum": "raw", "pra": "pra", "dtl": "dtl"}  # -o report -> file suffix
FIELDS = ("corr", "sub", "del", "ins", "err", "utts_err")  # the count columns of the sum / rsum tables


class ScliteError(ScoringError):
    """sclite is missing, failed, or wrote a report that could not be read."""


def find_sclite() -> Path | None:
    """The sclite binary: `sclite` on PATH, else Debian's sctk location (/usr/lib/sctk/bin/sclite), else the
    directory the `sctk` front end names (`sctk path`); None if there is none."""
    on_path = shutil.which("sclite")
    if on_path:
        return Path(on_path)
    for directory in SCTK_BIN_DIRS:
        candidate = directory / "sclite"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    front_end = shutil.which("sctk")
    if front_end:
        try:
            out = subprocess.run([front_end, "path"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        candidate = Path(out.stdout.strip() or ".") / "sclite"
        if out.returncode == 0 and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def sclite_speaker(spk: str) -> str:
    """The speaker as written into trn ids, before the `-`: its own `-` (which would end it) made `.`."""
    return spk.replace("-", ".")


_BAD_ID = re.compile(r"[\s()]")
_BAD_PHONE = re.compile(r"[(){}]")  # sclite reads (...) as optionally deletable words and { / } as alternations


def trn_ids(utts: Sequence[str], utt2spk: Mapping[str, str] | None) -> dict[str, str]:
    """utt -> its trn id `<spk>-<utt>`, the speaker made safe by `sclite_speaker`; without utt2spk every
    utterance is speaker `all`. Ids with whitespace or parentheses, and two speakers that would become one,
    are errors."""
    ids, speakers = {}, {}
    for utt in utts:
        if utt2spk is not None and utt not in utt2spk:
            raise ScoringError(f"no speaker in utt2spk for '{utt}'")
        spk = "all" if utt2spk is None else utt2spk[utt]
        for what, value in (("utterance id", utt), ("speaker", spk)):
            if not value or _BAD_ID.search(value):
                raise ScoringError(f"{what} {value!r} cannot be written for sclite (empty, blank or parenthesis)")
        code = sclite_speaker(spk)
        if speakers.setdefault(code, spk) != spk:
            raise ScoringError(f"speakers '{speakers[code]}' and '{spk}' are both '{code}' for sclite")
        ids[utt] = f"{code}-{utt}"
    return ids


def _trn_line(utt: str, side: str, phones, trn_id: str) -> str:
    if isinstance(phones, str):
        raise TypeError(f"{side} of '{utt}' must be a list of phones, not a string")
    phones = list(phones)
    for phone in phones:
        if not isinstance(phone, str) or not phone or phone.split() != [phone] or _BAD_PHONE.search(phone):
            raise ScoringError(f"{side} of '{utt}' holds a phone sclite cannot score: {phone!r}")
    return " ".join([*phones, f"({trn_id})"])


def write_trn(
    refs: Mapping[str, Sequence[str]],
    hyps: Mapping[str, Sequence[str]],
    utt2spk: Mapping[str, str] | None,
    out_dir: Path,
) -> tuple[Path, Path]:
    """out_dir/ref.trn and out_dir/hyp.trn, utterances sorted by trn id (so by speaker)."""
    if refs.keys() != hyps.keys():
        missing, extra = sorted(refs.keys() - hyps.keys()), sorted(hyps.keys() - refs.keys())
        raise ScoringError(
            f"references and hypotheses differ: no hypothesis for {missing[:5]}, no reference for {extra[:5]}"
        )
    if not refs:
        raise ScoringError("no utterances to score")
    ids = trn_ids(list(refs), utt2spk)
    order = sorted(refs, key=lambda utt: ids[utt])
    paths = []
    for name, side, table in (("ref.trn", "reference", refs), ("hyp.trn", "hypothesis", hyps)):
        lines = [_trn_line(utt, side, table[utt], ids[utt]) for utt in order]
        path = Path(out_dir) / name
        write_text_atomic(path, "\n".join(lines) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def _table_rows(text: str) -> list[list[str]]:
    """The `| name | # Snt # Wrd | Corr ... |` rows of a sum or rsum table, as [name, snt, wrd, 6 columns];
    the separator rows (`|====`) are kept as ["="] to find the Sum row after them."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|=") or line.startswith("|-"):
            rows.append(["="] if line.startswith("|=") else ["-"])
            continue
        cells = line.split("|")
        if len(cells) != 5 or cells[0] or cells[4]:
            continue
        values = cells[2].split() + cells[3].split()
        if len(values) == 2 + len(FIELDS):
            rows.append([cells[1].strip(), *values])
    return rows


def parse_sum_table(text: str) -> dict:
    """The overall row of a sclite sum (.sys) or rsum (.raw) report: the row after the first `|====` line
    (`Sum/Avg` or `Sum`), as {"utts", "n", "corr", "sub", "del", "ins", "err", "utts_err"}: # Snt and # Wrd,
    then the six columns (percentages in .sys, counts in .raw). Per speaker rows are in "speakers"."""
    rows = _table_rows(text)
    try:
        at = next(i for i, row in enumerate(rows) if row == ["="])
        name, *values = rows[at + 1]
    except (StopIteration, IndexError, ValueError):
        raise ScliteError("no Sum row in the sclite sum report") from None
    if not name.startswith("Sum"):
        raise ScliteError(f"unexpected row after the sclite sum table's separator: {name!r}")

    def as_dict(values: list[str]) -> dict:
        # sclite marks a speaker with no reference words (counts, not percents, in .sys) with `*`, and the
        # means that leave such speakers out with `+`.
        numbers = [float(v.rstrip("*+#")) for v in values]
        return {"utts": numbers[0], "n": numbers[1], **dict(zip(FIELDS, numbers[2:], strict=True))}

    speakers = {row[0]: as_dict(row[1:]) for row in rows[:at] if len(row) > 1 and row[0] != "SPKR"}
    return {**as_dict(values), "speakers": speakers}


def sclite_command(sclite: Path | str, name: str = NAME, case_sensitive: bool = True) -> list[str]:
    """The sclite command line run in the output directory (ref.trn and hyp.trn there, reports written there)."""
    cmd = [str(sclite), "-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "rm", "-e", "utf-8"]
    if case_sensitive:
        cmd.append("-s")
    return [*cmd, "-o", *REPORTS, "-n", name, "-O", "."]


def run_sclite(
    refs: Mapping[str, Sequence[str]],
    hyps: Mapping[str, Sequence[str]],
    utt2spk: Mapping[str, str] | None,
    out_dir: Path | str,
    sclite: Path | str | None = None,
    case_sensitive: bool = True,
    timeout: float = 600,
) -> dict:
    """Score with sclite (found by `find_sclite` unless given); keep its reports in out_dir and return its
    totals from the rsum report, keyed as `score()`'s total:

        {"utts": #Snt, "n": #Wrd, "corr", "sub", "del", "ins", "err" (counts), "utts_err": sentences with an
         error, "per": err / n * 100 (None where n = 0), "percent": the sum report's Sum/Avg row as sclite
         prints it (Corr, Sub, Del, Ins, Err, S.Err in %, one decimal), "speakers": {speaker: counts}
         (named as in utt2spk), "command": the command line, "reports": {"sum"|"rsum"|"pra"|"dtl": path}}

    sclite runs in a scratch directory inside out_dir and its reports are then renamed into place, so a
    failed run leaves none half-written; a missing sclite, a failed run or an unreadable report raise
    ScliteError (a ScoringError)."""
    sclite = Path(sclite) if sclite is not None else find_sclite()
    if sclite is None:
        raise ScliteError("sclite not found: install SCTK (Debian/Ubuntu: apt-get install -y sctk)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / ".sclite.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    write_trn(refs, hyps, utt2spk, work)
    cmd = sclite_command(sclite, NAME, case_sensitive)
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, errors="replace", timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise ScliteError(f"could not run {shlex.join(cmd)}: {e}") from e
    log = f"# {shlex.join(cmd)}  (in {out_dir})\n{proc.stdout}{proc.stderr}"
    write_text_atomic(out_dir / f"{NAME}.log", log)
    written = {report: work / f"{NAME}.{suffix}" for report, suffix in REPORTS.items()}
    if (
        proc.returncode != 0
        or "Successful Completion" not in proc.stdout
        or not all(p.is_file() for p in written.values())
    ):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise ScliteError(f"sclite failed (exit {proc.returncode}); see {out_dir / (NAME + '.log')}:\n{tail}")

    raw = parse_sum_table(written["rsum"].read_text(encoding="utf-8", errors="replace"))
    pct = parse_sum_table(written["sum"].read_text(encoding="utf-8", errors="replace"))
    totals = {key: int(raw[key]) for key in ("utts", "n", *FIELDS)}
    totals["per"] = totals["err"] / totals["n"] * 100 if totals["n"] else None
    totals["percent"] = {key: pct[key] for key in FIELDS}
    code_to_spk = {sclite_speaker(spk): spk for spk in (utt2spk or {"all": "all"}).values()}
    totals["speakers"] = {
        code_to_spk.get(code, code): {key: int(v) for key, v in row.items()} for code, row in raw["speakers"].items()
    }
    totals["command"] = shlex.join(cmd)

    reports = {}
    for name in ("ref.trn", "hyp.trn", *(p.name for p in written.values())):
        (work / name).replace(out_dir / name)
    for report, path in written.items():
        reports[report] = out_dir / path.name
    totals["reports"] = reports
    shutil.rmtree(work, ignore_errors=True)
    return totals
