"""What feeds the models: Kaldi data dirs, audio, downloads, the lang dir, the corpora, speed perturbation, the
features of a recording and as loaded, examples and batches."""
