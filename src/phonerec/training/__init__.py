"""Training: the shared loop and checkpoints, and the two tasks it runs (Viterbi frame cross-entropy, CTC)."""
