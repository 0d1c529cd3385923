"""Scoring: PER and WER, reports (alignments, confusions), NIST sclite."""
