"""Decoding: greedy decoders, CTC prefix beam search, hybrid Viterbi search, the n-gram LM, and the decoders
that stage 4 tunes and runs."""
