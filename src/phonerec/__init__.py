"""phonerec: a Kaldi-style phone recognition recipe (bidirectional LSTM or another recurrent cell, Viterbi
re-alignment, CTC) in PyTorch.

`phonerec.load_model(<exp>/<recipe>/<model>)` loads a trained model's bundle (phonerec.inference)."""


def __getattr__(name: str):
    # Imported on first use: the pipeline's modules import `phonerec.*` without loading the models' stack.
    if name == "load_model":
        from phonerec.inference import load_model

        return load_model
    raise AttributeError(f"module 'phonerec' has no attribute {name!r}")
