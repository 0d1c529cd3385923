"""HMMs of the Viterbi model: topology and alignment graphs, flat start, batched Viterbi forced alignment, and
alignments scored against hand-labelled boundaries."""
