"""phonerec: a Kaldi-style phone recognition recipe (BiLSTM, Viterbi re-alignment, CTC) in PyTorch."""
