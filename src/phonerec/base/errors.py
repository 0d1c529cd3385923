"""Errors that steps report as a clear message (no traceback) before exiting non-zero."""


class RecipeError(Exception):
    """Bad input or a failed precondition; the message names the file, line or utterance."""


class DataDirError(RecipeError):
    """A Kaldi data dir breaks the contract (see phonerec.data.data_dir.validate_data_dir)."""


class DictDirError(RecipeError):
    """A Kaldi dict dir breaks the contract (see phonerec.data.dict_dir.read_dict_dir)."""


class CorpusError(RecipeError):
    """A corpus copy or download is missing, incomplete or corrupt."""
