"""NIST sclite as a second scorer: the trn files, the report parser, and (where SCTK is installed; CI installs
it, `apt-get install -y sctk`) sclite's totals against hand counts and against phonerec.scoring.error_rate.score."""

import os
import random
import stat

import pytest

from phonerec.scoring import sclite as sclite_module
from phonerec.scoring.error_rate import ScoringError, score
from phonerec.scoring.reports import alignment_report
from phonerec.scoring.sclite import (
    ScliteError,
    find_sclite,
    parse_sum_table,
    run_sclite,
    sclite_command,
    trn_ids,
    write_trn,
)

PHONES48 = (
    "aa ae ah ao aw ax ay b ch cl d dh dx eh el en epi er ey f g hh ih ix iy jh k l m n ng ow oy p r s sh sil t th "
    "uh uw v vcl w y z zh"
).split()

# Hand-counted pairs whose minimal alignment is the same for unit costs (jiwer) and sclite's 4/3/3 weights.
KNOWN_REFS = {
    "u1": ["a", "b", "c", "d"],  # 3 C, b -> x S, e I
    "u2": ["e", "f", "g"],  # f D
    "u3": [],  # p, q I
    "u4": ["aa", "b"],  # both D
    "u5": ["sil", "k", "sil"],  # correct
    "u6": ["AA", "b"],  # AA -> aa S: phones are case-sensitive
}
KNOWN_HYPS = {
    "u1": ["a", "x", "c", "d", "e"],
    "u2": ["e", "g"],
    "u3": ["p", "q"],
    "u4": [],
    "u5": ["sil", "k", "sil"],
    "u6": ["aa", "b"],
}
KNOWN_SPK = {"u1": "dr1-fcjf0", "u2": "dr1-fcjf0", "u3": "george", "u4": "george", "u5": "theo_2", "u6": "theo_2"}
KNOWN_TOTALS = {"utts": 6, "n": 14, "corr": 9, "sub": 2, "del": 3, "ins": 3, "err": 8, "utts_err": 5}


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def sclite():
    path = find_sclite()
    if path is None:
        if _ci():
            pytest.fail("sclite not found, and CI is set: CI must install SCTK (apt-get install -y sctk)")
        pytest.skip("sclite not found (Debian/Ubuntu: apt-get install -y sctk)")
    return path


def random_pairs(num_utts: int = 200, seed: int = 1) -> tuple[dict, dict, dict]:
    """Random phone sequences with random substitutions, deletions and insertions, over 10 speakers."""
    rng = random.Random(seed)
    refs, hyps, utt2spk = {}, {}, {}
    for i in range(num_utts):
        spk = f"spk{i % 10}"
        utt = f"{spk}-utt{i:03d}"
        ref = [rng.choice(PHONES48) for _ in range(rng.randint(5, 40))]
        hyp = []
        for phone in ref:
            x = rng.random()
            if x < 0.07:
                continue  # deletion
            hyp.append(rng.choice(PHONES48) if x < 0.22 else phone)
            while rng.random() < 0.06:
                hyp.append(rng.choice(PHONES48))  # insertion
        refs[utt], hyps[utt], utt2spk[utt] = ref, hyp, spk
    return refs, hyps, utt2spk


# ---- without sclite ------------------------------------------------------------------------------------------


def test_trn_ids_put_the_speaker_before_the_first_hyphen():
    ids = trn_ids(["u1", "fcjf0-si1027", "x_y"], {"u1": "dr1-fcjf0", "fcjf0-si1027": "fcjf0", "x_y": "a_b"})
    assert ids == {"u1": "dr1.fcjf0-u1", "fcjf0-si1027": "fcjf0-fcjf0-si1027", "x_y": "a_b-x_y"}
    assert trn_ids(["u1"], None) == {"u1": "all-u1"}
    with pytest.raises(ScoringError, match="both 'a.b'"):
        trn_ids(["u1", "u2"], {"u1": "a-b", "u2": "a.b"})
    with pytest.raises(ScoringError, match="parenthesis"):
        trn_ids(["u(1)"], {"u(1)": "s"})
    with pytest.raises(ScoringError, match="no speaker"):
        trn_ids(["u1"], {})


def test_write_trn(tmp_path):
    ref, hyp = write_trn(KNOWN_REFS, KNOWN_HYPS, KNOWN_SPK, tmp_path)
    assert ref.read_text().splitlines() == [
        "a b c d (dr1.fcjf0-u1)",
        "e f g (dr1.fcjf0-u2)",
        "(george-u3)",
        "aa b (george-u4)",
        "sil k sil (theo_2-u5)",
        "AA b (theo_2-u6)",
    ]
    assert hyp.read_text().splitlines()[0] == "a x c d e (dr1.fcjf0-u1)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyp.trn", "ref.trn"]
    with pytest.raises(ScoringError, match="cannot score"):
        write_trn({"u": ["(a)"]}, {"u": ["a"]}, None, tmp_path)
    with pytest.raises(ScoringError, match="differ"):
        write_trn({"u": ["a"]}, {"v": ["a"]}, None, tmp_path)
    with pytest.raises(TypeError):
        write_trn({"u": "a b"}, {"u": ["a"]}, None, tmp_path)


RAW = """\
        ,--------------------------------------------------------------.
        |                           hyp.trn                            |
        |--------------------------------------------------------------|
        | SPKR | # Snt # Wrd | Corr    Sub    Del    Ins    Err  S.Err |
        |------+-------------+-----------------------------------------|
        | ab   |    1      6 |    4      1      1      2      4      1 |
        |------+-------------+-----------------------------------------|
        | e    |    4      0 |    0*     0*     0*     3*     3*     3 |
        |==============================================================|
        | Sum  |    5      6 |    4      1      1      5      7      4 |
        |==============================================================|
        | Mean |  2.5    3.0 |  2.0+   0.5+   0.5+   2.5+   3.5+   2.0 |
        `--------------------------------------------------------------'
"""


def test_parse_sum_table():
    table = parse_sum_table(RAW)
    assert {k: v for k, v in table.items() if k != "speakers"} == {
        "utts": 5,
        "n": 6,
        "corr": 4,
        "sub": 1,
        "del": 1,
        "ins": 5,
        "err": 7,
        "utts_err": 4,
    }
    assert table["speakers"]["e"]["ins"] == 3 and table["speakers"]["ab"]["n"] == 6
    with pytest.raises(ScliteError):
        parse_sum_table("no table here\n")


def test_find_sclite_prefers_path_then_the_sctk_directory(tmp_path, monkeypatch):
    def executable(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    package = executable(tmp_path / "lib" / "sctk" / "bin" / "sclite")
    monkeypatch.setattr(sclite_module, "SCTK_BIN_DIRS", (package.parent,))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_sclite() == package
    on_path = executable(tmp_path / "bin" / "sclite")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_sclite() == on_path
    monkeypatch.setattr(sclite_module, "SCTK_BIN_DIRS", ())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_sclite() is None
    with pytest.raises(ScliteError, match="apt-get install -y sctk"):
        run_sclite(KNOWN_REFS, KNOWN_HYPS, KNOWN_SPK, tmp_path / "out")


def test_failed_sclite_run_is_reported_and_leaves_no_reports(tmp_path):
    fake = tmp_path / "sclite"
    fake.write_text("#!/bin/sh\necho 'sclite: Error, bad things' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(ScliteError, match="bad things"):
        run_sclite(KNOWN_REFS, KNOWN_HYPS, KNOWN_SPK, tmp_path / "out", sclite=fake)
    assert not list((tmp_path / "out").glob("sclite.sys"))
    assert (tmp_path / "out" / "sclite.log").read_text().startswith("# ")


def test_command_line():
    assert (
        sclite_command("/usr/lib/sctk/bin/sclite")
        == (
            "/usr/lib/sctk/bin/sclite -r ref.trn trn -h hyp.trn trn -i rm -e utf-8 -s -o sum rsum pra dtl -n sclite "
            "-O ."
        ).split()
    )


# ---- with sclite ---------------------------------------------------------------------------------------------


def test_sclite_totals_equal_hand_counts(sclite, tmp_path):
    totals = run_sclite(KNOWN_REFS, KNOWN_HYPS, KNOWN_SPK, tmp_path, sclite=sclite)
    assert {k: totals[k] for k in KNOWN_TOTALS} == KNOWN_TOTALS
    assert totals["per"] == pytest.approx(8 / 14 * 100)
    assert totals["percent"]["err"] == pytest.approx(57.1)
    # The same counts as phonerec's own scoring, here where the alignment is unambiguous.
    ours = score(KNOWN_REFS, KNOWN_HYPS, KNOWN_SPK)["total"]
    assert {k: ours[k] for k in KNOWN_TOTALS} == KNOWN_TOTALS
    # Speakers: sclite's sys report names them (with '-' made '.'); the dict maps them back.
    assert totals["speakers"]["dr1-fcjf0"] == {
        "utts": 2,
        "n": 7,
        "corr": 5,
        "sub": 1,
        "del": 1,
        "ins": 1,
        "err": 3,
        "utts_err": 2,
    }
    assert set(totals["speakers"]) == {"dr1-fcjf0", "george", "theo_2"}
    sys_report = (tmp_path / "sclite.sys").read_text()
    assert "| dr1.fcjf0 " in sys_report and "| george " in sys_report and "| theo_2 " in sys_report
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "hyp.trn",
        "ref.trn",
        "sclite.dtl",
        "sclite.log",
        "sclite.pra",
        "sclite.raw",
        "sclite.sys",
    ]
    assert "ref.trn" in totals["command"] and totals["reports"]["dtl"] == tmp_path / "sclite.dtl"


def test_sclite_folds_case_unless_case_sensitive(sclite, tmp_path):
    totals = run_sclite({"u": ["AA", "b"]}, {"u": ["aa", "b"]}, None, tmp_path, sclite=sclite, case_sensitive=False)
    assert (totals["corr"], totals["sub"]) == (2, 0)


def test_sclite_agrees_with_score_on_random_edits(sclite, tmp_path):
    refs, hyps, utt2spk = random_pairs()
    ours = score(refs, hyps, utt2spk)["total"]
    theirs = run_sclite(refs, hyps, utt2spk, tmp_path, sclite=sclite)
    assert (theirs["utts"], theirs["n"], theirs["utts_err"]) == (ours["utts"], ours["n"], ours["utts_err"])
    assert theirs["corr"] + theirs["sub"] + theirs["del"] == theirs["n"]
    # sclite's weights (S 4, I/D 3) may split the errors differently; the totals agree closely.
    assert 10 < ours["per"] < 40
    assert abs(theirs["per"] - ours["per"]) <= 0.5
    assert len(theirs["speakers"]) == 10


def test_alignment_report_matches_sclite_pra(sclite, tmp_path):
    # Where the alignment is unambiguous, phonerec.scoring.reports prints what sclite prints (case-folded mode, which
    # upper-cases the errors; sclite pads its lines with a trailing blank, reports strips it).
    refs = {"u1": "sh iy hh ae d y er".split(), "u2": ["aa", "b"], "u3": []}
    hyps = {"u1": "sh ih hh d y er dx".split(), "u2": [], "u3": ["p", "q"]}
    run_sclite(refs, hyps, {u: "s" for u in refs}, tmp_path, sclite=sclite, case_sensitive=False)
    theirs = [line.rstrip() for line in (tmp_path / "sclite.pra").read_text().splitlines()]
    for block in alignment_report(refs, hyps).strip().split("\n\n"):
        lines = block.splitlines()
        trn_id = lines[0].replace("id: (", "id: (s-")
        at = theirs.index(trn_id)
        assert theirs[at + 1 : at + 5] == lines[1:]
