"""HMMs of the Viterbi model: topology and alignment graphs, flat start, batched Viterbi forced alignment, the
full-sum forward-backward over the same graphs, and alignments scored against hand-labelled boundaries."""
