"""Alignment accuracy against TIMIT's hand labels, for alignments made from words and a dictionary (recipe=timit_mfa,
steps/align.py --corpus) as well as from the hand-labelled phones (the timit_sample recipe's stage 7).

  . ./path.sh && python benchmarks/timit_alignment.py ../shared/corpora/timit_sample \
      exp/timit_mfa/viterbi/align_corpus exp/timit_sample/viterbi/align_test --speakers dr6-fapb0 dr6-mbma1

For each aligned dir (its phones.ctm and words.ctm) and each utterance of the speakers whose hand labels are in the
sample (<speaker>/<sentence>.phn, .wrd; an utterance is found by the id that ends in its sentence and holds its
speaker), it prints:

- words: each hand-labelled word paired with an aligned one by an edit-distance alignment of the two word sequences
  (phonerec.hmm.align_eval.align_labels; only pairs of the same word count), its start and its end each a boundary;
  the share within 10, 20 and 50 ms.
- phones: both sides made comparable first. The hand labels: a closure followed by its release is one segment of
  the release (bcl b -> b), a closure alone is its stop (an unreleased kcl -> k), then TIMIT's 61 phones folded to 39
  (local/timit/phones.tsv; h#, pau and epi are sil, q is deleted). The alignment: the 48 training phones folded to
  39 (spn stays spn). Then phonerec.hmm.align_eval.evaluate_alignment, which the recipe's stage 7 uses: equal
  neighbours merged, the two label sequences aligned by edit distance, and a hand-labelled boundary counted where
  the phones on both its sides pair with consecutive aligned phones.
- with --dictionary (the MFA dictionary the alignment was made with, each word's first pronunciation first): for
  each paired word, the pronunciation the alignment chose (its phones within the word, silence left out) and the
  word's first pronunciation, each against the hand-labelled phones within the hand-labelled word (all on 39, as
  above) by edit distance: how often the alignment chose another than the first, and how often that one is closer
  to the hand labels, and how often farther.
"""

import argparse
from pathlib import Path

from phonerec.hmm.align_eval import Segment, align_labels, evaluate_alignment, format_accuracy, read_ctm
from phonerec.scoring.error_rate import edit_distance, read_phone_map

PHONES = Path(__file__).resolve().parents[1] / "local" / "timit" / "phones.tsv"
CLOSURES = {"bcl": "b", "dcl": "d", "gcl": "g", "pcl": "p", "tcl": "t", "kcl": "k"}
RELEASES = {"b", "d", "g", "p", "t", "k", "ch", "jh"}
TOLERANCES = (0.010, 0.020, 0.050)


def read_labels(path: Path, rate: int = 16000) -> list[Segment]:
    """A TIMIT .phn or .wrd file: `<start sample> <end sample> <label>` lines."""
    segments = []
    for line in path.read_text().splitlines():
        start, end, label = line.split()
        segments.append(Segment(int(start) / rate, int(end) / rate, label))
    return segments


def hand_phones(segments: list[Segment], fold61: dict) -> list[Segment]:
    """Closures merged into their releases (or made their stop), then folded to 39."""
    merged: list[Segment] = []
    k = 0
    while k < len(segments):
        seg = segments[k]
        if seg.label in CLOSURES:
            following = segments[k + 1] if k + 1 < len(segments) else None
            if following is not None and following.label in RELEASES and following.start == seg.end:
                merged.append(Segment(seg.start, following.end, following.label))
                k += 2
                continue
            seg = Segment(seg.start, seg.end, CLOSURES[seg.label])
        merged.append(seg)
        k += 1
    return [Segment(s.start, s.end, fold61[s.label]) for s in merged if fold61.get(s.label)]


def find(ids, speaker: str, sentence: str) -> str | None:
    """The id of the speaker's sentence: it ends in the sentence and holds the speaker (dr6-fapb0 in the MFA form's
    ids, fapb0 in the TIMIT recipe's)."""
    found = [i for i in ids if speaker.split("-")[-1] in i and i.endswith(sentence)]
    return found[0] if len(found) == 1 else None


def word_errors(ref: list[Segment], hyp: list[Segment]) -> list[float]:
    """The start and end differences of the hand-labelled words paired with the same aligned word."""
    errors = []
    for i, j in align_labels([s.label for s in ref], [s.label for s in hyp]):
        if ref[i].label == hyp[j].label:
            errors += [hyp[j].start - ref[i].start, hyp[j].end - ref[i].end]
    return errors


def read_first_pronunciations(path: Path) -> dict[str, list[str]]:
    """Each word's first pronunciation in an MFA dictionary (word, then optional numbers, then phones)."""
    first = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts and parts[0] not in first:
            rest = parts[1:]
            while rest and rest[0].replace(".", "", 1).isdigit():
                rest = rest[1:]
            first[parts[0]] = rest
    return first


def within(segments: list[Segment], span: Segment) -> list[str]:
    """The labels of the segments whose middle lies in span."""
    return [s.label for s in segments if span.start <= (s.start + s.end) / 2 < span.end]


def pronunciation_choices(ref_words, hyp_words, ref_phones, hyp_phones, first, fold48) -> tuple[int, int, int, int]:
    """(paired words, those whose chosen pronunciation is not the first, of those the closer and the farther to
    the hand-labelled phones)."""
    paired = other = closer = farther = 0
    for i, j in align_labels([s.label for s in ref_words], [s.label for s in hyp_words]):
        word = hyp_words[j].label
        if ref_words[i].label != word or word not in first:
            continue
        paired += 1
        hand = [p for p in within(ref_phones, ref_words[i]) if p != "sil"]
        chosen = [p for p in within(hyp_phones, hyp_words[j]) if p != "sil"]
        canonical = [fold48.get(p) or p for p in first[word]]
        if chosen == canonical:
            continue
        other += 1
        gain = edit_distance(hand, canonical) - edit_distance(hand, chosen)
        closer += gain > 0
        farther += gain < 0
    return paired, other, closer, farther


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sample_root", type=Path, help="the TIMIT sample (the folder holding timit/)")
    parser.add_argument("aligned", type=Path, nargs="+", help="dirs with phones.ctm and words.ctm")
    parser.add_argument("--speakers", nargs="+", required=True, help="the speakers scored (e.g. the test speakers)")
    parser.add_argument("--dictionary", type=Path, help="the MFA dictionary: the chosen pronunciations scored")
    args = parser.parse_args()
    first = read_first_pronunciations(args.dictionary) if args.dictionary else None
    fold61 = read_phone_map(PHONES, "timit61", "score39")
    fold48 = read_phone_map(PHONES, "train48", "score39")
    for aligned in args.aligned:
        phones, words = read_ctm(aligned / "phones.ctm"), read_ctm(aligned / "words.ctm")
        ref_phones, hyp_phones, errors, pairs, ref_words, choices = {}, {}, [], 0, 0, [0, 0, 0, 0]
        for speaker in args.speakers:
            for phn in sorted((args.sample_root / "timit" / speaker).glob("*.phn")):
                utt = find(phones, speaker, phn.stem)
                if utt is None:
                    continue
                ref_phones[utt] = hand_phones(read_labels(phn), fold61)
                hyp_phones[utt] = [Segment(s.start, s.end, fold48.get(s.label) or s.label) for s in phones[utt]]
                ref = read_labels(phn.with_suffix(".wrd"))
                utt_errors = word_errors(ref, words.get(utt, []))
                errors += utt_errors
                pairs += len(utt_errors) // 2
                ref_words += len(ref)
                if first is not None:
                    found = pronunciation_choices(
                        ref, words.get(utt, []), ref_phones[utt], hyp_phones[utt], first, fold48
                    )
                    choices = [a + b for a, b in zip(choices, found, strict=True)]
        accuracy = evaluate_alignment(ref_phones, hyp_phones, 0.01, TOLERANCES)
        within = [100 * sum(abs(e) <= t + 1e-9 for e in errors) / max(1, len(errors)) for t in TOLERANCES]
        print(f"{aligned}: {len(ref_phones)} utterances")
        print(
            f"  words: {pairs} of {ref_words} hand-labelled words paired, their {len(errors)} boundaries within "
            f"10/20/50 ms: {within[0]:.1f}/{within[1]:.1f}/{within[2]:.1f}%"
        )
        print(
            f"  phones (39): {accuracy['matched_boundaries']} of {accuracy['ref_boundaries']} hand-labelled "
            f"boundaries paired; {format_accuracy(accuracy)}"
        )
        if first is not None:
            paired, other, closer, farther = choices
            share = [100 * x / max(y, 1) for x, y in ((other, paired), (closer, other), (farther, other))]
            print(
                f"  pronunciations: {other} of {paired} paired words ({share[0]:.1f}%) took another than the first; "
                f"of those, closer to the hand labels {closer} ({share[1]:.1f}%), farther {farther} ({share[2]:.1f}%)"
            )


if __name__ == "__main__":
    main()
