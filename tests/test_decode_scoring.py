"""Greedy decoders on constructed posteriors, and PER scoring against hand-counted alignments and against the
closest pronunciations."""

import functools
import json
import random
from itertools import product

import pytest
import torch

from phonerec.base.config import load_config
from phonerec.decoding.greedy import ctc_greedy, frame_argmax
from phonerec.scoring.error_rate import (
    ScoringError,
    closest_reference,
    dev_per_scorer,
    edit_distance,
    fold_phones,
    read_phone_map,
    score,
    write_score_report,
)


def peaky(label_rows: list[list[int]], num_outputs: int, pad_label: int = 1) -> torch.Tensor:
    """(B, T, V) log-posteriors peaked on the given per-frame labels; short rows are padded with `pad_label`."""
    frames = max(len(row) for row in label_rows)
    logits = torch.zeros(len(label_rows), frames, num_outputs)
    for b, row in enumerate(label_rows):
        padded = row + [pad_label] * (frames - len(row))
        logits[b, torch.arange(frames), torch.tensor(padded, dtype=torch.long)] = 8.0
    return logits.log_softmax(dim=-1)


def reference_ctc(labels: list[int], blank: int = 0) -> list[int]:
    out, previous = [], None
    for label in labels:
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return out


# ---- decoders -------------------------------------------------------------------------------------------------


def test_ctc_greedy_merges_repeats_and_keeps_labels_split_by_blank():
    log_probs = peaky([[1, 1, 0, 1, 2, 2, 0, 0, 3]], num_outputs=4)
    assert ctc_greedy(log_probs, torch.tensor([9])) == [[1, 1, 2, 3]]


def test_ctc_greedy_ignores_padding_and_handles_batch_of_lengths():
    rows = [[1, 1, 0, 1, 2, 2, 0, 0, 3], [2, 0, 0, 3], [0, 0, 0], [3, 3, 3, 3, 1], []]
    # Padding frames carry label 2, which would show up (or merge) if they were read.
    log_probs = peaky([row or [0] for row in rows], num_outputs=4, pad_label=2)
    lengths = torch.tensor([len(row) for row in rows])
    assert ctc_greedy(log_probs, lengths) == [[1, 1, 2, 3], [2, 3], [], [3, 1], []]
    # The same sequences decoded one at a time, unpadded, agree.
    for row, decoded in zip(rows[:4], ctc_greedy(log_probs, lengths), strict=False):
        assert ctc_greedy(peaky([row], 4), torch.tensor([len(row)])) == [decoded]


def test_ctc_greedy_all_blank_and_other_blank_index():
    assert ctc_greedy(peaky([[0, 0, 0, 0]], 3), torch.tensor([4])) == [[]]
    # With blank = 3 (last output), label 0 is a real label.
    assert ctc_greedy(peaky([[0, 0, 3, 0, 1, 3]], 4), torch.tensor([6]), blank=3) == [[0, 0, 1]]


def test_ctc_greedy_matches_loop_reference_on_random_posteriors():
    generator = torch.Generator().manual_seed(0)
    log_probs = torch.randn(6, 25, 5, generator=generator).log_softmax(-1)
    lengths = torch.tensor([25, 1, 0, 17, 24, 8])
    decoded = ctc_greedy(log_probs, lengths)
    for b in range(6):
        assert decoded[b] == reference_ctc(log_probs[b, : lengths[b]].argmax(-1).tolist())
    assert all(isinstance(label, int) for row in decoded for label in row)


def test_ctc_greedy_rejects_bad_lengths():
    log_probs = peaky([[1, 0]], 3)
    with pytest.raises(ValueError, match="lengths"):
        ctc_greedy(log_probs, torch.tensor([3]))
    with pytest.raises(ValueError, match="lengths"):
        ctc_greedy(log_probs, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="blank"):
        ctc_greedy(log_probs, torch.tensor([2]), blank=3)


def test_frame_argmax_identity_merges_repeats_without_dropping_zero():
    log_probs = peaky([[0, 0, 2, 2, 2, 1, 1, 0], [3, 3, 1]], num_outputs=4, pad_label=1)
    assert frame_argmax(log_probs, torch.tensor([8, 3])) == [[0, 2, 1, 0], [3, 1]]


def test_frame_argmax_maps_three_states_per_phone():
    # Phones 0..2 with 3 HMM states each: state s belongs to phone s // 3.
    state_to_phone = [s // 3 for s in range(9)]
    states = [0, 1, 1, 2, 6, 7, 8, 8, 3, 4, 5, 5]  # phone 0 (3 states), phone 2, phone 1
    log_probs = peaky([states, [4, 4, 5, 2]], num_outputs=9, pad_label=6)
    lengths = torch.tensor([12, 4])
    assert frame_argmax(log_probs, lengths, state_to_phone) == [[0, 2, 1], [1, 0]]
    # Without the map, the states themselves come out (merged).
    assert frame_argmax(log_probs, lengths) == [[0, 1, 2, 6, 7, 8, 3, 4, 5], [4, 5, 2]]
    with pytest.raises(ValueError, match="state_to_phone"):
        frame_argmax(log_probs, lengths, state_to_phone[:-1])


# ---- phone map and folding -------------------------------------------------------------------------------------

MAP_TEXT = """# a comment line
full\tmid\tsmall
a\ta\ta
b\tb\tb
x\tx\tb
y\tb\tb
c\tc\tc
d\td\td
h#\tsil\tsil
sil\tsil\tsil
q\t-\t-
"""


@pytest.fixture
def phone_map(tmp_path):
    path = tmp_path / "phones.tsv"
    path.write_text(MAP_TEXT)
    return path


def test_read_phone_map_columns_and_unmapped(phone_map):
    to_small = read_phone_map(phone_map, source="full", target="small")
    assert to_small == {
        "a": "a",
        "b": "b",
        "x": "b",
        "y": "b",
        "c": "c",
        "d": "d",
        "h#": "sil",
        "sil": "sil",
        "q": None,
    }
    to_mid = read_phone_map(phone_map, source="full", target="mid")
    assert to_mid["x"] == "x" and to_mid["y"] == "b" and to_mid["q"] is None
    # From the middle set: rows sharing a source phone agree (y and b are both b -> b); q has no source phone.
    mid_to_small = read_phone_map(phone_map, source="mid", target="small")
    assert mid_to_small == {"a": "a", "b": "b", "x": "b", "c": "c", "d": "d", "sil": "sil"}
    assert fold_phones(["q", "a", "x", "q", "h#"], to_small) == ["a", "b", "sil"]
    with pytest.raises(ScoringError, match="'zz'"):
        fold_phones(["a", "zz"], to_small)


@pytest.mark.parametrize(
    "text, message",
    [
        ("full mid small\na a a\nb a b\n", "maps to both"),
        ("full mid small\na a\n", "expected 3 columns"),
        ("full mid\na a\n", "no column 'small'"),
        ("# only a comment\n\n", "empty"),
    ],
)
def test_read_phone_map_errors(tmp_path, text, message):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(ScoringError, match=message):
        read_phone_map(path, source="mid" if "maps to both" in message else "full", target="small")


# ---- score -------------------------------------------------------------------------------------------------------


def counts(row: dict) -> tuple:
    return row["corr"], row["sub"], row["del"], row["ins"], row["n"]


REFS = {"s1_u1": "a b c d".split(), "s1_u2": "a b c".split(), "s2_u1": "d d".split()}
HYPS = {"s1_u1": "a x c".split(), "s1_u2": "a z b c".split(), "s2_u1": "d d".split()}
UTT2SPK = {"s1_u1": "s1", "s1_u2": "s1", "s2_u1": "s2", "s3_u9": "s3"}  # an extra entry is harmless


def test_score_hand_counted():
    result = score(REFS, HYPS, UTT2SPK)
    utts = result["utterances"]
    assert counts(utts["s1_u1"]) == (2, 1, 1, 0, 4)  # b->x substituted, d deleted
    assert counts(utts["s1_u2"]) == (3, 0, 0, 1, 3)  # z inserted
    assert counts(utts["s2_u1"]) == (2, 0, 0, 0, 2)
    assert utts["s1_u1"]["per"] == pytest.approx(50.0)
    total = result["total"]
    assert counts(total) == (7, 1, 1, 1, 9)
    assert total["err"] == 3 and total["utts"] == 3 and total["utts_err"] == 2
    assert total["per"] == pytest.approx(300 / 9, rel=1e-12)
    assert result["metric"] == "per"


def test_score_speaker_totals_add_up():
    result = score(REFS, HYPS, UTT2SPK)
    speakers = result["speakers"]
    assert sorted(speakers) == ["s1", "s2"]
    assert counts(speakers["s1"]) == (5, 1, 1, 1, 7)
    assert speakers["s1"]["per"] == pytest.approx(300 / 7, rel=1e-12)
    for key in ("corr", "sub", "del", "ins", "err", "n", "utts"):
        assert sum(row[key] for row in speakers.values()) == result["total"][key]
    assert "speakers" not in score(REFS, HYPS)


def test_score_fold_applied_to_both_sides(phone_map):
    fold = functools.partial(fold_phones, mapping=read_phone_map(phone_map, source="full", target="small"))
    refs = {"u1": "a b c d".split(), "u2": "a y".split(), "u3": "q a b".split()}
    hyps = {"u1": "a x c".split(), "u2": "a b".split(), "u3": "a q b q".split()}
    unfolded = score(refs, hyps)["utterances"]
    assert counts(unfolded["u1"]) == (2, 1, 1, 0, 4)
    assert counts(unfolded["u2"]) == (1, 1, 0, 0, 2)
    folded = score(refs, hyps, fold=fold)
    utts = folded["utterances"]
    assert counts(utts["u1"]) == (3, 0, 1, 0, 4)  # x -> b: the substitution is now correct
    assert counts(utts["u2"]) == (2, 0, 0, 0, 2)  # y -> b in the reference, so it matches the hypothesis
    assert counts(utts["u3"]) == (2, 0, 0, 0, 2)  # q deleted from both sides
    assert utts["u3"]["ref"] == "a b" and utts["u3"]["hyp"] == "a b"
    assert folded["folded"] is True


def test_score_ignore_after_fold(phone_map):
    refs = {"u1": "sil a b sil".split(), "u2": "h# c h#".split()}
    hyps = {"u1": "a b sil".split(), "u2": "c sil".split()}
    plain = score(refs, hyps)["utterances"]
    assert counts(plain["u1"]) == (3, 0, 1, 0, 4)  # the leading sil deleted
    assert counts(plain["u2"]) == (1, 1, 1, 0, 3)  # h# deleted, h# -> sil substituted
    ignored = score(refs, hyps, ignore={"sil"})["utterances"]
    assert counts(ignored["u1"]) == (2, 0, 0, 0, 2)
    assert counts(ignored["u2"]) == (1, 0, 2, 0, 3)  # h# is not sil until folded
    result = score(
        refs,
        hyps,
        fold=functools.partial(fold_phones, mapping=read_phone_map(phone_map, source="full", target="small")),
        ignore={"sil"},
    )
    assert counts(result["total"]) == (3, 0, 0, 0, 3)  # folded h# -> sil, then sil dropped
    assert result["ignore"] == ["sil"]
    with pytest.raises(TypeError):
        score(refs, hyps, ignore="sil")


def test_score_empty_reference_or_hypothesis():
    refs = {"u1": [], "u2": "a b".split(), "u3": ["sil"], "u4": []}
    hyps = {"u1": "a b".split(), "u2": [], "u3": ["c"], "u4": []}
    result = score(refs, hyps, ignore={"sil"})
    utts = result["utterances"]
    assert counts(utts["u1"]) == (0, 0, 0, 2, 0) and utts["u1"]["per"] is None
    assert counts(utts["u2"]) == (0, 0, 2, 0, 2) and utts["u2"]["per"] == pytest.approx(100.0)
    assert counts(utts["u3"]) == (0, 0, 0, 1, 0)  # empty only after dropping the ignored phones
    assert counts(utts["u4"]) == (0, 0, 0, 0, 0)
    assert counts(result["total"]) == (0, 0, 2, 3, 2)
    assert result["total"]["per"] == pytest.approx(250.0)
    assert score({"u": []}, {"u": []})["total"]["per"] is None


def test_score_mismatched_utterances_raise_value_error():
    with pytest.raises(ValueError, match="no hypothesis.*s2_u1"):
        score(REFS, {k: v for k, v in HYPS.items() if k != "s2_u1"})
    with pytest.raises(ValueError, match="not in the references.*extra_utt"):
        score(REFS, {**HYPS, "extra_utt": ["a"]})
    with pytest.raises(ValueError, match="no speaker.*s2_u1"):
        score(REFS, HYPS, {"s1_u1": "s1", "s1_u2": "s1"})
    with pytest.raises(TypeError, match="s1_u1"):
        score(REFS, {**HYPS, "s1_u1": "a x c"})


def test_write_score_report(tmp_path):
    result = score(REFS, HYPS, UTT2SPK)
    out_dir = tmp_path / "exp" / "decode_test"
    write_score_report(result, out_dir, title="test set, CTC greedy")
    assert sorted(p.name for p in out_dir.iterdir()) == ["per.json", "per.txt"]  # no .tmp left behind

    data = json.loads((out_dir / "per.json").read_text())
    assert data["metric"] == "per" and data["title"] == "test set, CTC greedy"
    assert data["total"]["per"] == pytest.approx(300 / 9)
    assert data["speakers"]["s1"]["n"] == 7 and data["utterances"]["s1_u1"]["sub"] == 1
    assert "wer" not in (out_dir / "per.json").read_text().lower()

    text = (out_dir / "per.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "# test set, CTC greedy"
    assert lines[1] == "%PER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ]"
    assert "%SER 66.67 [ 2 / 3 ]" in lines
    assert "wer" not in text.lower()
    rows = {
        line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in {"s1", "s2", "Sum"}
    }
    # Speaker  #Utt Corr Sub Del Ins Err N PER
    assert rows["s1"] == ["2", "5", "1", "1", "1", "3", "7", "42.86"]
    assert rows["s2"] == ["1", "2", "0", "0", "0", "0", "2", "0.00"]
    assert rows["Sum"] == ["3", "7", "1", "1", "1", "3", "9", "33.33"]

    # Rewriting over an existing report works, and a result with N = 0 still gives strict JSON.
    write_score_report(score({"u": []}, {"u": ["a"]}), out_dir, title="empty")
    assert json.loads((out_dir / "per.json").read_text())["total"]["per"] is None
    assert "%PER n/a [ 1 / 0, 1 ins, 0 del, 0 sub ]" in (out_dir / "per.txt").read_text()


def test_word_error_rates_and_sentence_errors():
    from phonerec.scoring.error_rate import word_error_rates

    refs = {"u1": ["one", "two", "three"], "u2": ["four"], "u3": ["five", "six"]}
    hyps = {"u1": ["one", "two", "three"], "u2": ["oh"], "u3": ["five"]}
    rates = word_error_rates(refs, hyps)
    assert (rates["sub"], rates["del"], rates["ins"], rates["n"]) == (1, 1, 0, 6)
    assert rates["wer"] == pytest.approx(100 * 2 / 6) and rates["ser"] == pytest.approx(100 * 2 / 3)
    assert rates["metric"] == "wer"


def test_validation_scores_dev_as_stage_5_does():
    # TIMIT trains on 48 phones and scores 39: ao and aa are one phone to the validation's PER too.
    refs, hyps = {"u": ["sil", "aa", "cl", "sil"]}, {"u": ["sil", "ao", "vcl", "sil"]}
    timit, timit_unfolded = (
        load_config(["recipe=timit_sample"]),
        load_config(["recipe=timit_sample", "score.phone_map=null"]),
    )
    assert dev_per_scorer(timit, frozenset())(refs, hyps) == 0.0
    assert dev_per_scorer(timit_unfolded, frozenset())(refs, hyps) == 50.0
    # The digit recipes leave silence out of the PER.
    assert (
        dev_per_scorer(load_config([]), frozenset({"sil"}))({"u": ["w", "ah", "n"]}, {"u": ["sil", "w", "ah", "n"]})
        == 0.0
    )


def test_the_closest_reference_is_the_choice_of_pronunciations_at_the_least_edit_distance():
    """closest_reference against trying every choice of one pronunciation per word (Levenshtein by jiwer's
    counts): the least distance, reached by one of the choices."""
    rng = random.Random(0)
    phones = "a b c d"
    for _ in range(200):
        words = [
            [[rng.choice(phones.split()) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(1, 3))]
            for _ in range(rng.randint(1, 3))
        ]
        hyp = [rng.choice(phones.split()) for _ in range(rng.randint(0, 6))]
        choices = [[p for pron in choice for p in pron] for choice in product(*words)]
        best = min(edit_distance(ref, hyp) for ref in choices)
        found = closest_reference(hyp, words)
        assert found in choices and edit_distance(found, hyp) == best
