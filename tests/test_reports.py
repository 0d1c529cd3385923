"""Scoring reports: sclite-style alignments, confusion counts and their order, the confusion-matrix PNG and its
TensorBoard copy."""

import json
import random
from collections import Counter

import numpy as np
import pytest

from phonerec.base.config import load_config
from phonerec.pipeline.results import write_seed_table
from phonerec.scoring.error_rate import ScoringError, score, score_table
from phonerec.scoring.reports import (
    DEL,
    INS,
    align,
    alignment_report,
    confusion_counts,
    confusion_matrix_figure,
    most_frequent_confusions,
    refs_hyps,
    write_reports,
)

# One substitution (iy -> ih), one deletion (ae), one insertion (dx): the only minimal alignment.
REF = "sh iy hh ae d y er".split()
HYP = "sh ih hh d y er dx".split()

EXPECTED_PRA = """\
id: (utt1)
Scores: (#C #S #D #I) 5 1 1 1
REF:  sh IY hh AE d y er **
HYP:  sh IH hh ** d y er DX
Eval:    S     D         I
"""

PHONES48 = (
    "aa ae ah ao aw ax ay b ch cl d dh dx eh el en epi er ey f g hh ih ix iy jh k l m n ng ow oy p r s sh sil t th "
    "uh uw v vcl w y z zh"
).split()


def random_pairs(num_utts: int = 60, seed: int = 0) -> tuple[dict, dict]:
    """Random phone sequences and edited copies: substitutions, deletions, insertions, and a few empty sides."""
    rng = random.Random(seed)
    refs, hyps = {}, {}
    for i in range(num_utts):
        ref = [rng.choice(PHONES48) for _ in range(rng.randint(0 if i % 20 == 0 else 3, 25))]
        hyp = []
        for phone in ref:
            x = rng.random()
            if x < 0.08:
                continue
            hyp.append(rng.choice(PHONES48[:12]) if x < 0.2 else phone)
            if rng.random() < 0.06:
                hyp.append(rng.choice(PHONES48))
        refs[f"spk{i % 4}_utt{i:03d}"], hyps[f"spk{i % 4}_utt{i:03d}"] = ref, [] if i % 25 == 7 else hyp
    return refs, hyps


# ---- alignment report ----------------------------------------------------------------------------------------


def test_pra_block_for_one_substitution_deletion_and_insertion_is_exact():
    assert alignment_report({"utt1": REF}, {"utt1": HYP}) == EXPECTED_PRA


def test_pra_columns_pad_to_the_wider_side_and_star_the_missing_one():
    report = alignment_report({"u": ["sil", "b", "iy"]}, {"u": ["sil", "bcl", "b"]})
    # The minimal alignment: sil = sil, bcl inserted, b = b, iy deleted; each column as wide as its wider side.
    assert report.splitlines()[2:] == [
        "REF:  sil *** b IY",
        "HYP:  sil BCL b **",
        "Eval:     I     D",
    ]


def test_pra_handles_empty_sides_and_orders_utterances():
    refs = {"b_empty_hyp": ["aa", "b"], "a_empty_ref": [], "c_both_empty": []}
    hyps = {"b_empty_hyp": [], "a_empty_ref": ["p", "q"], "c_both_empty": []}
    assert alignment_report(refs, hyps) == (
        "id: (a_empty_ref)\nScores: (#C #S #D #I) 0 0 0 2\nREF:  * *\nHYP:  P Q\nEval: I I\n\n"
        "id: (b_empty_hyp)\nScores: (#C #S #D #I) 0 0 2 0\nREF:  AA B\nHYP:  ** *\nEval: D  D\n\n"
        "id: (c_both_empty)\nScores: (#C #S #D #I) 0 0 0 0\n"
    )


def test_pra_keeps_case_when_the_phone_set_has_upper_case():
    report = alignment_report({"u": ["A", "a", "b"]}, {"u": ["a", "a", "b"]})
    assert "REF:  A a b" in report and "HYP:  a a b" in report and "Eval: S" in report
    forced = alignment_report({"u": ["a", "b"]}, {"u": ["a", "c"]}, upcase_errors=False)
    assert "REF:  a b" in forced


def test_alignment_counts_agree_with_score():
    refs, hyps = random_pairs()
    result = score(refs, hyps)
    for utt, columns in align(refs, hyps).items():
        codes = Counter(code for _, _, code in columns)
        row = result["utterances"][utt]
        assert (codes["C"], codes["S"], codes["D"], codes["I"]) == (row["corr"], row["sub"], row["del"], row["ins"])
        assert [r for r, _, _ in columns if r] == refs[utt] and [h for _, h, _ in columns if h] == hyps[utt]
    report = alignment_report(refs, hyps)
    total = result["total"]
    scores = [line.split()[-4:] for line in report.splitlines() if line.startswith("Scores:")]
    assert [sum(int(s[i]) for s in scores) for i in range(4)] == [
        total["corr"],
        total["sub"],
        total["del"],
        total["ins"],
    ]


def test_bad_input_is_rejected():
    with pytest.raises(ScoringError, match="no hypothesis"):
        alignment_report({"a": ["x"], "b": ["y"]}, {"a": ["x"]})
    with pytest.raises(TypeError, match="list of phones"):
        alignment_report({"a": "x y"}, {"a": ["x"]})
    with pytest.raises(ScoringError, match="reserved"):
        confusion_counts({"a": [DEL]}, {"a": ["x"]})


# ---- confusions ----------------------------------------------------------------------------------------------


def test_confusion_counts_on_known_pairs():
    refs = {"u1": REF, "u2": ["aa", "b", "iy"], "u3": []}
    hyps = {"u1": HYP, "u2": ["ae", "b"], "u3": ["dx"]}
    counts = confusion_counts(refs, hyps)
    assert counts == Counter(
        {
            ("sh", "sh"): 1,
            ("hh", "hh"): 1,
            ("d", "d"): 1,
            ("y", "y"): 1,
            ("er", "er"): 1,
            ("b", "b"): 1,
            ("iy", "ih"): 1,
            ("aa", "ae"): 1,
            ("ae", DEL): 1,
            ("iy", DEL): 1,
            (INS, "dx"): 2,
        }
    )


def test_off_diagonal_total_is_the_error_count():
    refs, hyps = random_pairs()
    counts = confusion_counts(refs, hyps)
    total = score(refs, hyps)["total"]
    assert sum(c for (r, h), c in counts.items() if r != h) == total["err"]
    assert sum(c for (r, h), c in counts.items() if r != INS) == total["n"]


def test_most_frequent_confusions_order():
    counts = Counter(
        {
            ("a", "a"): 50,  # correct: left out
            ("a", "b"): 2,
            ("c", "d"): 5,
            ("b", "a"): 2,
            ("e", DEL): 1,
            ("f", DEL): 7,
            (INS, "g"): 3,
            (INS, "h"): 9,
            ("x", "y"): 0,  # never happened: left out
        }
    )
    assert most_frequent_confusions(counts) == [
        (("c", "d"), 5),
        (("a", "b"), 2),
        (("b", "a"), 2),
        (("f", DEL), 7),
        (("e", DEL), 1),
        ((INS, "h"), 9),
        ((INS, "g"), 3),
    ]
    assert most_frequent_confusions(counts, n=1) == [(("c", "d"), 5), (("f", DEL), 7), ((INS, "h"), 9)]


# ---- figure and files ----------------------------------------------------------------------------------------


def test_confusion_matrix_rows_refs_and_ins_cols_hyps_and_del():
    counts = confusion_counts({"u1": REF}, {"u1": HYP})
    fig = confusion_matrix_figure(counts, labels=["sh", "iy", "ih"])
    ax = fig.axes[0]
    rows = [tick.label1.get_text() for tick in ax.yaxis.get_major_ticks()]
    cols = [tick.label1.get_text() for tick in ax.xaxis.get_major_ticks()]
    # Labels first, in their order, then the other counted phones sorted, then <ins> / <del>.
    assert rows == ["sh", "iy", "ih", "ae", "d", "dx", "er", "hh", "y", INS]
    assert cols == ["sh", "iy", "ih", "ae", "d", "dx", "er", "hh", "y", DEL]
    data = np.ma.filled(ax.images[0].get_array(), 0)
    assert data[rows.index("iy"), cols.index("ih")] == 1
    assert data[rows.index("ae"), cols.index(DEL)] == 1
    assert data[rows.index(INS), cols.index("dx")] == 1
    assert data.sum() == sum(counts.values())
    assert ax.images[0].norm.__class__.__name__ == "LogNorm"
    # Each counted cell holds its count, where it is drawn.
    written = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    assert written == {(i, j): int(data[i, j]) for i, j in zip(*np.nonzero(data), strict=True)}


def test_write_reports_files(tmp_path):
    refs, hyps = random_pairs()
    paths = write_reports((refs, hyps), tmp_path / "decode", "test, CTC greedy", labels=PHONES48)
    pra = paths["pra"].read_text()
    assert pra.startswith("# test, CTC greedy\n\n") and pra.endswith(alignment_report(refs, hyps))
    text = paths["confusions"].read_text()
    top = most_frequent_confusions(confusion_counts(refs, hyps))
    (ref, hyp), count = top[0]
    assert f"   1: {count:6d}  ->  {ref} ==> {hyp}" in text
    assert "SUBSTITUTIONS" in text and "DELETIONS" in text and "INSERTIONS" in text
    assert text.splitlines()[1].startswith("%PER ")
    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert sorted(p.name for p in (tmp_path / "decode").iterdir()) == ["confusion.png", "confusions.txt", "per.pra"]


def test_write_reports_from_a_score_result_matches_refs_hyps(tmp_path):
    refs, hyps = random_pairs(20)
    result = score(refs, hyps)
    assert refs_hyps(result) == (refs, hyps)
    a = write_reports(result, tmp_path / "a", "t")
    b = write_reports((refs, hyps), tmp_path / "b", "t")
    assert a["pra"].read_text() == b["pra"].read_text()
    assert a["confusions"].read_text() == b["confusions"].read_text()
    with pytest.raises(TypeError):
        write_reports(refs, tmp_path / "c", "t")


def test_tensorboard_figure(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    refs, hyps = random_pairs(10)
    writer = SummaryWriter(str(tmp_path / "tb"))
    write_reports((refs, hyps), tmp_path / "decode", "dev CTC", writer=writer, step=3)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={IMAGES: 0})
    events.Reload()
    assert events.Tags()["images"] == ["confusion/dev_CTC"]
    (image,) = events.Images("confusion/dev_CTC")
    assert image.step == 3 and image.width > 500 and image.height > 500


def test_word_reports_are_named_and_labelled_for_words(tmp_path):
    refs = {"u1": ["one", "two"], "u2": ["three"]}
    hyps = {"u1": ["one", "one"], "u2": []}
    paths = write_reports((refs, hyps), tmp_path / "decode", "dev words", metric="wer")
    assert sorted(p.name for p in (tmp_path / "decode").iterdir()) == ["confusion.png", "confusions.txt", "wer.pra"]
    text = paths["confusions"].read_text()
    assert text.splitlines()[1] == "%WER 66.67 [ 2 / 3, 0 ins, 1 del, 1 sub ]"
    assert "DELETIONS (ref word)" in text and "two ==> one" in text
    table = score_table(score(refs, hyps, {"u1": "a", "u2": "b"}), "dev words", metric="wer")
    assert table.splitlines()[1] == "%WER 66.67 [ 2 / 3, 0 ins, 1 del, 1 sub ]"
    assert table.splitlines()[5].split()[-1] == "WER"


def test_the_seed_table_holds_the_forced_alignments_accuracy(tmp_path):
    """The seed sweep's table: beside each decoder's PER, the share of boundaries the forced alignment puts within
    20 ms of the hand labels, mean (min-max) over the seeds, and which checkpoint aligned."""
    cfg = load_config(["recipe=timit_sample", "models=[viterbi]", "decode.decoders=[greedy]"])
    dirs = {}
    for seed, within in ((0, 70.0), (1, 74.0)):
        dirs[seed] = tmp_path / f"seed{seed}"
        for split in ("dev", "test"):
            decode_dir = dirs[seed] / "viterbi" / f"decode_{split}_greedy"
            decode_dir.mkdir(parents=True)
            (decode_dir / "per.json").write_text(json.dumps({"total": {"per": 40.0 + seed}}))
            (decode_dir / "decoder.json").write_text(json.dumps({"decoder": "frame argmax"}))
            accuracy = {"within_20ms": within - (split == "test"), "checkpoint": {"file": "best_alignment.pt"}}
            (decode_dir / "alignment_accuracy.json").write_text(json.dumps(accuracy))
    write_seed_table(cfg, dirs, tmp_path / "seeds.md", "./run.sh -m sweep=seeds")
    table = (tmp_path / "seeds.md").read_text()
    assert "| viterbi | frame argmax | PER | 40.50 (40.00-41.00) | 40.50 (40.00-41.00) |" in table
    assert (
        "| viterbi | forced alignment (best_alignment.pt) | boundaries within 20 ms | 72.00 (70.00-74.00) | "
        "71.00 (69.00-73.00) |" in table
    )
