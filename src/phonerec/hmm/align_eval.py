"""Phone alignment quality against a hand-labelled segmentation (TIMIT's .PHN files, in seconds).

Conventions:

- Times are in seconds. A segment spans [start, end). Frame t stands for the frame shift around the middle of
  its analysis window: with Kaldi's framing (snip-edges) that window spans [t * shift, t * shift + length), so a
  boundary between frames t - 1 and t lies halfway between their windows' middles, at
  t * shift + (length - shift) / 2 (`frame_offset`: 7.5 ms for 25 ms windows every 10 ms), the first segment
  starting at 0 (`frames_to_segments`). Kaldi's CTMs put that boundary at t * shift, the start of frame t's
  window: 7.5 ms early.
- CTC alignments (`ctc_scored_segments`): a token's segment starts at the first frame the forced alignment gives it;
  the blank frames that follow a token belong to it, so its segment ends where the next token starts (the last
  one at the end of the last frame), and blank frames before the first token belong to the first token (it starts at 0).
  A CTC boundary is thus the frame where the next token's spike begins.
- Merged labels: consecutive segments with the same label are merged into one, in the reference and in the
  hypothesis alike, before anything is compared (a frame labelling cannot show a boundary between two equal
  labels, so such a boundary is not scored). The number of reference boundaries removed this way is reported
  as `merged_ref_boundaries`. Labels are compared as strings: fold both phone sets beforehand.
- Only inner boundaries count: the starts of segments 2..n, never the utterance's start or end.
- Boundary pairing: when the (merged) label sequences of reference and hypothesis are equal, boundary i of one
  pairs with boundary i of the other. Otherwise the two label sequences are aligned by edit distance
  (substitution, insertion and deletion cost 1; ties broken by preferring match/substitution, then deletion,
  then insertion, walking back from the end), and reference boundary i (between reference segments i - 1 and
  i) pairs with hypothesis boundary j when reference segments i - 1 and i are aligned with hypothesis segments
  j - 1 and j (each as a match or substitution). Reference boundaries with no partner (next to an insertion or
  deletion) are counted as unmatched and left out of the error statistics.
- Boundary error is hyp - ref of a pair; `within_<N>ms` is the percent of matched boundaries with
  |hyp - ref| <= N ms (with 1 ns of slack for float rounding, so a shift of exactly 10 ms is within 10 ms).
- Frame agreement: frame t (t = 0, 1, ... while the frame's middle (t + 0.5) * shift is before the reference's
  end) agrees when the hypothesis label at the frame's middle equals the reference label there. Frames whose
  middle lies in no reference segment (a gap) are not counted; frames past the hypothesis' end (or in a gap of
  it) count as disagreement.
- Only utterances present in both reference and hypothesis are evaluated; those missing from the hypothesis
  (and those only in it) are counted. Totals are over all matched boundaries and all frames (not averages of
  per-utterance numbers). A statistic with nothing to count is None.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as taf

from phonerec.base.errors import RecipeError
from phonerec.base.files import write_text_atomic
from phonerec.hmm.align import BranchedGraph, Graph, Topology

_SLACK = 1e-9  # seconds: float rounding slack for the tolerance test


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float  # seconds
    label: str


def frame_time(frame: int, frame_shift: float, offset: float = 0.0) -> float:
    """Where frame `frame` starts, in seconds (frame 0 at 0: `frame_offset`), rounded to the microsecond: a time
    of frames reads 0.0875, not 0.08750000000000001."""
    return round(frame * frame_shift + offset, 6) if frame else 0.0


# --- CTM ----------------------------------------------------------------------------------------------------


def write_ctm(path: str | os.PathLike, segments_by_utt: Mapping[str, Sequence[Segment]]) -> None:
    """Write Kaldi CTM lines `<utt> 1 <start> <dur> <label>`, utterances sorted, segments in time order, times
    with 4 decimals (durations from the rounded ends, so contiguous segments stay contiguous). Atomic: a
    temporary file is renamed over `path`."""
    path = Path(path)
    lines = []
    for utt in sorted(segments_by_utt):
        if not utt or any(c.isspace() for c in utt):
            raise ValueError(f"utterance id {utt!r} is empty or holds whitespace")
        for seg in sorted(segments_by_utt[utt], key=lambda s: (s.start, s.end)):
            if not seg.label or any(c.isspace() for c in seg.label):
                raise ValueError(f"{utt}: label {seg.label!r} is empty or holds whitespace")
            if seg.end < seg.start:
                raise ValueError(f"{utt}: segment {seg} ends before it starts")
            start, end = round(seg.start, 4), round(seg.end, 4)
            lines.append(f"{utt} 1 {start:.4f} {end - start:.4f} {seg.label}\n")
    write_text_atomic(path, "".join(lines))


def read_ctm(path: str | os.PathLike) -> dict[str, list[Segment]]:
    """Read a CTM (`<utt> <channel> <start> <dur> <label> [<confidence>]`) into segments per utterance, each
    utterance's segments sorted by start. Raises RecipeError naming file:line for a malformed line, a negative
    time or duration, or segments of one utterance that overlap (by more than the 4-decimal rounding)."""
    path = Path(path)
    out: dict[str, list[tuple[Segment, int]]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}:{lineno}"
            if len(fields) not in (5, 6):
                raise RecipeError(f"{where}: expected '<utt> <channel> <start> <dur> <label>', got {line.strip()!r}")
            utt, _channel, start_s, dur_s, label = fields[:5]
            try:
                start, dur = float(start_s), float(dur_s)
            except ValueError:
                raise RecipeError(f"{where}: start {start_s!r} or duration {dur_s!r} is not a number") from None
            if not (math.isfinite(start) and math.isfinite(dur)) or start < 0 or dur < 0:
                raise RecipeError(f"{where}: start {start_s} and duration {dur_s} must be finite and >= 0")
            out.setdefault(utt, []).append((Segment(start, start + dur, label), lineno))
    result = {}
    for utt, items in out.items():
        items.sort(key=lambda item: (item[0].start, item[0].end))
        for (prev, _), (seg, lineno) in zip(items, items[1:], strict=False):
            if seg.start < prev.end - 1e-4:
                raise RecipeError(f"{path}:{lineno}: segment of {utt} at {seg.start:.4f} overlaps the one before")
        result[utt] = [seg for seg, _ in items]
    return result


# --- segments from alignments -------------------------------------------------------------------------------


def frames_to_segments(labels: Sequence[str], frame_shift: float, offset: float = 0.0) -> list[Segment]:
    """Runs of identical consecutive frame labels as segments: a run of frames t0 .. t1 - 1 spans
    [t0 * frame_shift + offset, t1 * frame_shift + offset), the first run from 0 (`frame_offset`)."""
    if frame_shift <= 0:
        raise ValueError(f"frame_shift must be > 0, got {frame_shift}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    segments = []
    t0 = 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[t0]:
            segments.append(
                Segment(frame_time(t0, frame_shift, offset), frame_time(t, frame_shift, offset), labels[t0])
            )
            t0 = t
    return segments


def state_segments(
    states: Sequence[int], topo: Topology, id2phone: Mapping[int, str], frame_shift: float, offset: float = 0.0
) -> list[Segment]:
    """The phone segments of an alignment of HMM states (one state per frame), timed as frames_to_segments."""
    state_to_phone = topo.state_to_phone()
    return frames_to_segments([id2phone[state_to_phone[s]] for s in states], frame_shift, offset)


def graph_segments(
    nodes: Sequence[int],
    graph: Graph | BranchedGraph,
    topo: Topology,
    id2phone: Mapping[int, str],
    frame_shift: float,
    offset: float = 0.0,
) -> list[tuple[Segment, int | None]]:
    """The phone segments of a path of graph nodes (align_utterances(..., nodes=True)) through a graph of
    build_graph or build_word_graph, one per phone of the graph the path passes through, so that two equal phones
    in a row stay apart; each with the index of its phone in the transcript the path spells (with pronunciation
    variants, the chosen ones), or None for an optional silence the path took. Timed as frames_to_segments."""
    n = topo.states_per_phone
    state_to_phone = topo.state_to_phone()
    found, spelled = [], 0
    for run in frames_to_segments([int(node) // n for node in nodes], frame_shift, offset):  # label: the block
        phone = id2phone[state_to_phone[graph.states[run.label * n]]]
        optional = graph.optional[run.label * n]
        found.append((Segment(run.start, run.end, phone), None if optional else spelled))
        spelled += not optional  # a path passes every phone it spells, in order, each once
    return found


def ctc_scored_segments(
    log_probs: torch.Tensor,
    targets: Sequence[int],
    blank: int,
    frame_shift: float,
    id2label: Mapping[int, str],
    offset: float = 0.0,
) -> tuple[list[Segment], float]:
    """Segments of `targets` from CTC forced alignment (torchaudio's forced_align and merge_tokens) over
    `log_probs` (T, V), log-softmax outputs. Token k's segment starts at the first frame of its spike and ends
    where token k + 1's starts (the last at T * frame_shift + offset, boundaries timed as frames_to_segments):
    blank frames after a token belong to it. Blank frames before the first token belong to the first token,
    which starts at 0. Raises ValueError when the
    targets are empty, hold the blank or an id outside the outputs, or T is too short for them (CTC needs one
    frame per token plus one blank between each pair of repeated tokens). With the segments, the alignment's
    log-probability per frame (the forced path's frames' log-posteriors, averaged)."""
    if frame_shift <= 0:
        raise ValueError(f"frame_shift must be > 0, got {frame_shift}")
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, V), got shape {tuple(log_probs.shape)}")
    num_frames, vocab = log_probs.shape
    targets = [int(x) for x in targets]
    if not targets:
        raise ValueError("no targets to align")
    bad = [x for x in targets if x == blank or not 0 <= x < vocab]
    if bad:
        raise ValueError(f"targets hold the blank ({blank}) or ids outside 0..{vocab - 1}: {bad}")
    repeats = sum(1 for a, b in zip(targets, targets[1:], strict=False) if a == b)
    needed = len(targets) + repeats
    if num_frames < needed:
        raise ValueError(
            f"too few frames for CTC: {len(targets)} targets with {repeats} repeats need {needed} frames, "
            f"log_probs has {num_frames}"
        )
    emission = log_probs.detach().float().unsqueeze(0)  # on its device: torchaudio aligns on the CPU or CUDA
    target_tensor = torch.tensor([targets], dtype=torch.int32, device=emission.device)
    path, scores = taf.forced_align(emission, target_tensor, blank=blank)
    spans = taf.merge_tokens(path[0].cpu(), scores[0].cpu(), blank=blank)
    if [span.token for span in spans] != targets:  # cannot happen for a valid CTC path
        raise RuntimeError(f"forced alignment gave tokens {[s.token for s in spans]}, expected {targets}")
    starts = [0] + [span.start for span in spans[1:]]
    ends = starts[1:] + [num_frames]
    segments = [
        Segment(frame_time(s, frame_shift, offset), frame_time(e, frame_shift, offset), id2label[token])
        for s, e, token in zip(starts, ends, targets, strict=True)
    ]
    return segments, float(scores[0].sum()) / num_frames


def alignment_gap(loglik: float, frame_scores: torch.Tensor) -> tuple[float, float]:
    """(an alignment's log-likelihood per frame, its gap): how far below the best path free of the transcript it
    lies, per frame, the free path taking each frame's best output (no transitions, so never below the forced
    path): about 0 where the transcript fits the recording, far below 0 where words are missing or wrong, which
    the log-likelihood alone, swayed by the recording (its silence, its speaker), does not show."""
    frames = len(frame_scores)
    free = float(frame_scores.max(dim=-1).values.sum())
    return loglik / frames, (loglik - free) / frames


# --- evaluation ---------------------------------------------------------------------------------------------


def _merge_equal(segments: Sequence[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for seg in segments:
        if merged and merged[-1].label == seg.label:
            merged[-1] = Segment(merged[-1].start, seg.end, seg.label)
        else:
            merged.append(seg)
    return merged


def _check_order(utt: str, which: str, segments: Sequence[Segment]) -> None:
    for k, seg in enumerate(segments):
        if seg.end < seg.start:
            raise ValueError(f"{which} {utt}: segment {k} {seg} ends before it starts")
        if k and seg.start < segments[k - 1].start:
            raise ValueError(f"{which} {utt}: segment {k} {seg} starts before segment {k - 1}")


def align_labels(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int, int]]:
    """The (ref index, hyp index) pairs that an edit-distance alignment of two label sequences aligns as a match
    or substitution (cost 1 for substitution, insertion and deletion), in order. Ties are broken walking back
    from the end, preferring match/substitution, then deletion (a ref label alone), then insertion."""
    n, m = len(ref), len(hyp)
    dist = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        dist[i][0] = i
    for j in range(m + 1):
        dist[0][j] = j
    for i in range(1, n + 1):
        row, prev = dist[i], dist[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (ref[i - 1] != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    pairs = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and dist[i][j] == dist[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and dist[i][j] == dist[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def pair_boundaries(ref: Sequence[Segment], hyp: Sequence[Segment]) -> list[tuple[int, int | None]]:
    """For each inner reference boundary i (1 .. len(ref) - 1, the start of ref[i]), the hypothesis boundary j
    it pairs with, or None (see the module docstring)."""
    ref_labels, hyp_labels = [s.label for s in ref], [s.label for s in hyp]
    if ref_labels == hyp_labels:
        return [(i, i) for i in range(1, len(ref))]
    hyp_of = dict(align_labels(ref_labels, hyp_labels))
    out: list[tuple[int, int | None]] = []
    for i in range(1, len(ref)):
        j = hyp_of.get(i)
        out.append((i, j if j is not None and j >= 1 and hyp_of.get(i - 1) == j - 1 else None))
    return out


def _frame_agreement(ref: Sequence[Segment], hyp: Sequence[Segment], frame_shift: float) -> tuple[int, int]:
    """(agreeing frames, counted frames): labels at frame middles, see the module docstring."""
    if not ref:
        return 0, 0
    num_frames = max(0, math.ceil(ref[-1].end / frame_shift - 0.5 - 1e-6))
    mids = (np.arange(num_frames) + 0.5) * frame_shift
    vocab: dict[str, int] = {}

    def labels_at(segments: Sequence[Segment]) -> np.ndarray:
        if not segments:
            return np.full(num_frames, -1)
        starts = np.array([s.start for s in segments])
        ends = np.array([s.end for s in segments])
        ids = np.array([vocab.setdefault(s.label, len(vocab)) for s in segments])
        k = np.searchsorted(starts, mids, side="right") - 1
        inside = (k >= 0) & (mids < ends[np.maximum(k, 0)])
        return np.where(inside, ids[np.maximum(k, 0)], -1)

    ref_ids, hyp_ids = labels_at(ref), labels_at(hyp)
    counted = ref_ids >= 0
    return int(np.sum(counted & (ref_ids == hyp_ids))), int(np.sum(counted))


def _tolerance_key(tol: float) -> str:
    return f"within_{tol * 1000:g}ms"


def _summary(errors: list[float], unmatched: int, tolerances: Iterable[float]) -> dict:
    n = len(errors)
    out: dict = {"matched_boundaries": n, "unmatched_ref_boundaries": unmatched}
    abs_errors = [abs(e) for e in errors]
    for tol in tolerances:
        out[_tolerance_key(tol)] = 100.0 * sum(e <= tol + _SLACK for e in abs_errors) / n if n else None
    out["mean_abs_error_ms"] = 1000.0 * sum(abs_errors) / n if n else None
    out["mean_signed_error_ms"] = 1000.0 * sum(errors) / n if n else None
    return out


def evaluate_alignment(
    ref: Mapping[str, Sequence[Segment]],
    hyp: Mapping[str, Sequence[Segment]],
    frame_shift: float,
    tolerances: Sequence[float] = (0.010, 0.020, 0.050),
) -> dict:
    """Boundary accuracy and frame agreement of `hyp` against `ref` (segments per utterance), with the
    conventions of the module docstring. Returns totals:

    - num_utts (evaluated), missing_from_hyp, missing_from_ref (utterances only in hyp, not evaluated)
    - ref_boundaries (inner boundaries after merging equal neighbours), merged_ref_boundaries,
      matched_boundaries, unmatched_ref_boundaries
    - within_<N>ms for each tolerance (percent of matched boundaries), mean_abs_error_ms, mean_signed_error_ms
      (hyp - ref: positive when the hypothesis is late)
    - frame_agreement (percent), num_frames
    - per_utt: {utt: the same boundary and frame numbers for that utterance}
    """
    if frame_shift <= 0:
        raise ValueError(f"frame_shift must be > 0, got {frame_shift}")
    tolerances = tuple(tolerances)
    common = sorted(set(ref) & set(hyp))
    all_errors: list[float] = []
    unmatched = merged_total = agree_total = frames_total = 0
    per_utt = {}
    for utt in common:
        _check_order(utt, "reference", ref[utt])
        _check_order(utt, "hypothesis", hyp[utt])
        r, h = _merge_equal(ref[utt]), _merge_equal(hyp[utt])
        merged = len(ref[utt]) - len(r)
        errors = []
        utt_unmatched = 0
        for i, j in pair_boundaries(r, h):
            if j is None:
                utt_unmatched += 1
            else:
                errors.append(h[j].start - r[i].start)
        agree, frames = _frame_agreement(r, h, frame_shift)
        per_utt[utt] = {
            "ref_boundaries": max(0, len(r) - 1),
            "merged_ref_boundaries": merged,
            "same_labels": [s.label for s in r] == [s.label for s in h],
            **_summary(errors, utt_unmatched, tolerances),
            "frame_agreement": 100.0 * agree / frames if frames else None,
            "num_frames": frames,
        }
        all_errors.extend(errors)
        unmatched += utt_unmatched
        merged_total += merged
        agree_total += agree
        frames_total += frames
    return {
        "num_utts": len(common),
        "missing_from_hyp": len(set(ref) - set(hyp)),
        "missing_from_ref": len(set(hyp) - set(ref)),
        "ref_boundaries": len(all_errors) + unmatched,
        "merged_ref_boundaries": merged_total,
        **_summary(all_errors, unmatched, tolerances),
        "frame_agreement": 100.0 * agree_total / frames_total if frames_total else None,
        "num_frames": frames_total,
        "per_utt": per_utt,
    }


# The figures of evaluate_alignment that TensorBoard, the logs and RESULTS.md show.
ACCURACY_KEYS = ("within_10ms", "within_20ms", "within_50ms", "mean_abs_error_ms", "frame_agreement")


def format_accuracy(accuracy: dict) -> str:
    def pct(key):
        return "n/a" if accuracy[key] is None else f"{accuracy[key]:.1f}"

    return (
        f"boundaries within 10/20/50 ms {pct('within_10ms')}/{pct('within_20ms')}/{pct('within_50ms')}%, "
        f"mean error {pct('mean_abs_error_ms')} ms, frame agreement {pct('frame_agreement')}%"
    )
