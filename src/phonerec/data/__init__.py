"""Stage 0 and what feeds the models: Kaldi data dirs, audio, downloads, the lang dir, the corpora, examples
and batches."""
