"""Alignment evaluation on constructed segmentations with answers worked out by hand, CTM round trip, and CTC
forced-alignment segments from peaky log-probs."""

import pytest
import torch
from omegaconf import OmegaConf

from phonerec.base.errors import RecipeError
from phonerec.hmm.align_eval import (
    Segment,
    align_labels,
    alignment_gap,
    ctc_scored_segments,
    evaluate_alignment,
    frames_to_segments,
    read_ctm,
    write_ctm,
)
from phonerec.hmm.timing import frame_offset, frame_timing

SHIFT = 0.01


def segs(*items):
    """Segments from (label, start, end) triples."""
    return [Segment(start, end, label) for label, start, end in items]


# inner boundaries at 0.10, 0.25, 0.40, 0.60; 70 frames of 10 ms
REF = segs(("sil", 0.0, 0.1), ("a", 0.1, 0.25), ("b", 0.25, 0.4), ("c", 0.4, 0.6), ("sil", 0.6, 0.7))


def test_identical_segmentation():
    res = evaluate_alignment({"u1": REF}, {"u1": list(REF)}, SHIFT)
    assert res["num_utts"] == 1 and res["missing_from_hyp"] == 0
    assert res["ref_boundaries"] == 4 and res["matched_boundaries"] == 4 and res["unmatched_ref_boundaries"] == 0
    assert res["within_10ms"] == res["within_20ms"] == res["within_50ms"] == 100.0
    assert res["mean_abs_error_ms"] == 0.0
    assert res["frame_agreement"] == 100.0 and res["num_frames"] == 70
    assert res["per_utt"]["u1"]["same_labels"] is True


def test_shifted_boundaries():
    # errors +15, -30, +15, +30 ms
    hyp = segs(("sil", 0.0, 0.115), ("a", 0.115, 0.22), ("b", 0.22, 0.415), ("c", 0.415, 0.63), ("sil", 0.63, 0.7))
    res = evaluate_alignment({"u1": REF}, {"u1": hyp}, SHIFT)
    assert res["matched_boundaries"] == 4 and res["unmatched_ref_boundaries"] == 0
    assert res["within_10ms"] == 0.0
    assert res["within_20ms"] == 50.0
    assert res["within_50ms"] == 100.0
    assert res["mean_abs_error_ms"] == pytest.approx(22.5)
    assert res["mean_signed_error_ms"] == pytest.approx(7.5)
    # frames whose middle falls between ref and hyp boundary: 0.105 | 0.225 0.235 0.245 | 0.405 | 0.605 0.615 0.625
    assert res["num_frames"] == 70
    assert res["frame_agreement"] == pytest.approx(100.0 * 62 / 70)


def test_tolerance_is_inclusive_despite_float_rounding():
    # 0.26 - 0.25 > 0.010 in floats; a shift of exactly 10 ms must still count as within 10 ms
    hyp = segs(("sil", 0.0, 0.11), ("a", 0.11, 0.26), ("b", 0.26, 0.39), ("c", 0.39, 0.61), ("sil", 0.61, 0.7))
    res = evaluate_alignment({"u1": REF}, {"u1": hyp}, SHIFT, tolerances=(0.005, 0.010))
    assert res["within_5ms"] == 0.0
    assert res["within_10ms"] == 100.0
    assert res["mean_abs_error_ms"] == pytest.approx(10.0)


def test_inserted_silence():
    # ref a|b (0.25) has no partner; sil|a, b|c (+10 ms), c|sil pair as usual
    hyp = segs(
        ("sil", 0.0, 0.1), ("a", 0.1, 0.2), ("sil", 0.2, 0.26), ("b", 0.26, 0.41), ("c", 0.41, 0.6), ("sil", 0.6, 0.7)
    )
    res = evaluate_alignment({"u1": REF}, {"u1": hyp}, SHIFT)
    assert res["ref_boundaries"] == 4
    assert res["matched_boundaries"] == 3 and res["unmatched_ref_boundaries"] == 1
    assert res["mean_abs_error_ms"] == pytest.approx(10.0 / 3)
    assert res["within_10ms"] == 100.0
    assert res["per_utt"]["u1"]["same_labels"] is False
    # disagreeing frames: 0.205 .. 0.245 (a vs sil: 5), 0.255 (b vs sil), 0.405 (b vs c)
    assert res["frame_agreement"] == pytest.approx(100.0 * 63 / 70)


def test_deletion_and_substitution():
    deleted = segs(("sil", 0.0, 0.1), ("a", 0.1, 0.3), ("c", 0.3, 0.6), ("sil", 0.6, 0.7))
    res = evaluate_alignment({"u1": REF}, {"u1": deleted}, SHIFT)
    assert res["matched_boundaries"] == 2 and res["unmatched_ref_boundaries"] == 2  # a|b and b|c lost
    assert res["mean_abs_error_ms"] == 0.0
    substituted = segs(("sil", 0.0, 0.1), ("a", 0.1, 0.25), ("x", 0.27, 0.4), ("c", 0.4, 0.6), ("sil", 0.6, 0.7))
    res = evaluate_alignment({"u1": REF}, {"u1": substituted}, SHIFT)
    assert res["matched_boundaries"] == 4 and res["unmatched_ref_boundaries"] == 0
    assert res["mean_abs_error_ms"] == pytest.approx(20.0 / 4)


def test_align_labels():
    assert align_labels(list("abc"), list("abc")) == [(0, 0), (1, 1), (2, 2)]
    assert align_labels(list("abc"), list("axbc")) == [(0, 0), (1, 2), (2, 3)]
    assert align_labels(list("abc"), list("ac")) == [(0, 0), (2, 1)]
    assert align_labels(list("abc"), list("xyz")) == [(0, 0), (1, 1), (2, 2)]
    assert align_labels([], list("ab")) == [] and align_labels(list("ab"), []) == []


def test_merged_labels_missing_utts_and_short_hyp():
    ref = {
        "u1": segs(("sil", 0.0, 0.1), ("a", 0.1, 0.2), ("a", 0.2, 0.3), ("sil", 0.3, 0.4)),
        "u2": REF,
    }
    hyp = {
        "u1": frames_to_segments(["sil"] * 10 + ["a"] * 20 + ["sil"] * 5, SHIFT),  # ends at 0.35, ref at 0.4
        "u3": REF,
    }
    res = evaluate_alignment(ref, hyp, SHIFT)
    assert res["num_utts"] == 1 and res["missing_from_hyp"] == 1 and res["missing_from_ref"] == 1
    assert res["merged_ref_boundaries"] == 1  # the a|a boundary is not scored
    assert res["ref_boundaries"] == 2 and res["matched_boundaries"] == 2
    assert res["mean_abs_error_ms"] == pytest.approx(0.0, abs=1e-9)
    assert res["num_frames"] == 40 and res["frame_agreement"] == pytest.approx(100.0 * 35 / 40)


def test_empty_evaluation_gives_none():
    res = evaluate_alignment({"u1": REF}, {}, SHIFT)
    assert res["num_utts"] == 0 and res["missing_from_hyp"] == 1
    assert res["within_10ms"] is None and res["mean_abs_error_ms"] is None and res["frame_agreement"] is None


def test_frames_to_segments():
    labels = ["sil", "sil", "sil", "a", "a", "b", "sil"]
    got = frames_to_segments(labels, 0.01)
    assert [s.label for s in got] == ["sil", "a", "b", "sil"]
    assert [s.start for s in got] == pytest.approx([0.0, 0.03, 0.05, 0.06])
    assert [s.end for s in got] == pytest.approx([0.03, 0.05, 0.06, 0.07])
    assert frames_to_segments([], 0.01) == []
    with pytest.raises(ValueError, match="frame_shift"):
        frames_to_segments(labels, 0.0)


def test_boundaries_lie_between_the_windows_middles():
    """25 ms windows every 10 ms: window t spans [10 t, 10 t + 25) ms, its middle at 10 t + 12.5, so the boundary
    between frames t - 1 and t lies at 10 t + 7.5 ms; the first segment still starts at 0."""
    offset = frame_offset(0.025, 0.010)
    assert offset == pytest.approx(0.0075)
    assert frame_offset(0.025, 0.010, snip_edges=False) == 0.0  # windows centred on 10 t + 5 ms
    got = frames_to_segments(["sil", "sil", "sil", "a", "a", "b", "sil"], 0.01, offset)
    assert [s.start for s in got] == pytest.approx([0.0, 0.0375, 0.0575, 0.0675])
    assert [s.end for s in got] == pytest.approx([0.0375, 0.0575, 0.0675, 0.0775])
    ctc = ctc_scored_segments(peaky([0, 1, 1, 0, 2, 0, 0, 3]), [1, 2, 3], 0, SHIFT, ID2LABEL, offset)[0]
    assert [s.start for s in ctc] == pytest.approx([0.0, 0.0475, 0.0775])
    with pytest.raises(ValueError, match="offset"):
        frames_to_segments(["a"], 0.01, -0.001)


def test_frame_timing_follows_the_feature_settings():
    cfg = OmegaConf.create({"features": {"kaldi": {"frame_length": 25.0, "frame_shift": 10.0, "snip_edges": True}}})
    assert frame_timing(cfg, 1) == pytest.approx((0.01, 0.0075))
    assert frame_timing(cfg, 3) == pytest.approx((0.03, 0.0075))  # subsampled frame t starts at input frame 3 t
    cfg.features.kaldi.snip_edges = False
    assert frame_timing(cfg, 1) == pytest.approx((0.01, 0.0))


def test_ctm_round_trip(tmp_path):
    data = {
        "spk2_utt1": segs(("b", 0.0125, 0.25), ("sil", 0.0, 0.0125)),  # out of order: written in time order
        "spk1_utt1": segs(("sil", 0.0, 0.1234), ("aa", 0.1234, 0.5), ("sil", 0.5, 1.0)),
    }
    path = tmp_path / "ali.ctm"
    write_ctm(path, data)
    lines = path.read_text().splitlines()
    assert lines[0] == "spk1_utt1 1 0.0000 0.1234 sil"
    assert lines[3] == "spk2_utt1 1 0.0000 0.0125 sil"
    assert lines[4] == "spk2_utt1 1 0.0125 0.2375 b"
    assert list(tmp_path.iterdir()) == [path]
    back = read_ctm(path)
    assert sorted(back) == sorted(data)
    for utt, orig in data.items():
        orig = sorted(orig, key=lambda s: s.start)
        assert [s.label for s in back[utt]] == [s.label for s in orig]
        assert [s.start for s in back[utt]] == pytest.approx([s.start for s in orig], abs=1e-9)
        assert [s.end for s in back[utt]] == pytest.approx([s.end for s in orig], abs=1e-9)


def test_ctm_read_errors(tmp_path):
    path = tmp_path / "bad.ctm"
    path.write_text("u1 1 0.0 0.1 sil\nu1 1 0.1 a\n")
    with pytest.raises(RecipeError, match=r"bad\.ctm:2"):
        read_ctm(path)
    path.write_text("u1 1 0.0 0.1 sil\n\nu1 1 0.1 x a\n")
    with pytest.raises(RecipeError, match=r"bad\.ctm:3: .*not a number"):
        read_ctm(path)
    path.write_text("u1 1 0.0 0.2 sil\nu1 1 0.1 0.1 a\n")
    with pytest.raises(RecipeError, match=r"bad\.ctm:2: .*overlaps"):
        read_ctm(path)


def peaky(frames, vocab=4):
    """Log-softmax outputs that put almost all mass on the given id at each frame."""
    logits = torch.full((len(frames), vocab), -10.0)
    logits[torch.arange(len(frames)), torch.tensor(frames)] = 10.0
    return logits.log_softmax(-1)


ID2LABEL = {1: "a", 2: "b", 3: "c"}


def test_ctc_segments():
    log_probs = peaky([0, 1, 1, 0, 2, 0, 0, 3])  # blank a a blank b blank blank c
    got = ctc_scored_segments(log_probs, [1, 2, 3], blank=0, frame_shift=SHIFT, id2label=ID2LABEL)[0]
    assert [s.label for s in got] == ["a", "b", "c"]
    assert [s.start for s in got] == pytest.approx([0.0, 0.04, 0.07])  # a takes the leading blank
    assert [s.end for s in got] == pytest.approx([0.04, 0.07, 0.08])


def test_a_wrong_transcript_lies_far_below_the_free_path():
    """The gap (alignment_gap) of a forced alignment to the best path free of the transcript: 0 where the
    transcript is what the outputs say, far below where it is not, while the forced path's own log-likelihood is
    a figure of the recording as much as of the transcript."""
    log_probs = peaky([0, 1, 1, 0, 2, 0, 0, 3])  # blank a a blank b blank blank c
    gaps = {}
    for name, targets in (("right", [1, 2, 3]), ("wrong", [3, 1, 2]), ("missing a word", [1, 3])):
        _, per_frame = ctc_scored_segments(log_probs, targets, 0, SHIFT, ID2LABEL)
        score, gaps[name] = alignment_gap(per_frame * len(log_probs), log_probs)
        assert score == pytest.approx(per_frame) and gaps[name] <= 1e-6
    assert gaps["right"] == pytest.approx(0, abs=1e-6)
    assert gaps["wrong"] < -4 and gaps["missing a word"] < -1


def test_ctc_segments_forced_not_greedy():
    # the targets decide, not the argmax: frame 2 peaks on c, but the targets are a b
    log_probs = peaky([1, 0, 3, 2, 2, 0])
    got = ctc_scored_segments(log_probs, [1, 2], blank=0, frame_shift=SHIFT, id2label=ID2LABEL)[0]
    assert [s.label for s in got] == ["a", "b"]
    assert got[0].start == 0.0 and got[-1].end == pytest.approx(0.06)
    assert got[0].end == got[1].start and 0.01 <= got[1].start <= 0.03


def test_ctc_segments_repeats_and_too_short():
    log_probs = peaky([1, 0, 1])
    got = ctc_scored_segments(log_probs, [1, 1], blank=0, frame_shift=SHIFT, id2label=ID2LABEL)[0]
    assert [(s.label, round(s.start, 6), round(s.end, 6)) for s in got] == [("a", 0.0, 0.02), ("a", 0.02, 0.03)]
    with pytest.raises(ValueError, match="too few frames"):  # repeated tokens need a blank between them
        ctc_scored_segments(peaky([1, 1]), [1, 1], blank=0, frame_shift=SHIFT, id2label=ID2LABEL)
    with pytest.raises(ValueError, match="too few frames"):
        ctc_scored_segments(peaky([1, 2]), [1, 2, 3], blank=0, frame_shift=SHIFT, id2label=ID2LABEL)
    with pytest.raises(ValueError, match="blank"):
        ctc_scored_segments(peaky([1, 0, 2]), [1, 0], blank=0, frame_shift=SHIFT, id2label=ID2LABEL)


def test_ctc_segments_evaluate_end_to_end():
    # CTC segments against the frame-level reference they were built from: boundaries at the spikes' starts
    log_probs = peaky([0, 1, 1, 0, 2, 0, 0, 3])
    hyp = ctc_scored_segments(log_probs, [1, 2, 3], blank=0, frame_shift=SHIFT, id2label=ID2LABEL)[0]
    ref = segs(("a", 0.0, 0.04), ("b", 0.04, 0.06), ("c", 0.06, 0.08))
    res = evaluate_alignment({"u": ref}, {"u": hyp}, SHIFT)
    assert res["matched_boundaries"] == 2 and res["mean_abs_error_ms"] == pytest.approx(5.0)
    assert res["within_10ms"] == 100.0 and res["frame_agreement"] == pytest.approx(100.0 * 7 / 8)
