"""What the training, decoding and bundle stages share: the digests of their inputs and the checkpoint to decode
(the lang dir's topology is phonerec.data.lang's, the scoring fold and the dev PER phonerec.scoring's)."""

from pathlib import Path

from omegaconf import DictConfig

from phonerec.base.errors import RecipeError
from phonerec.base.files import contents_sha256
from phonerec.data.data_dir import DATA_FILES
from phonerec.data.lang import LANG_FILES, OPTIONAL_LANG_FILES
from phonerec.pipeline.markers import read_digest

# The feature dir's own tables, which point into its arks: an edited feats.scp is a new input as well.
FEATURE_TABLES = ("feats.scp", "cmvn.scp", "utt2num_frames")


def feature_dir_digest(feat_dir: Path) -> dict:
    """What a stage reading a feature dir depends on: the features stage's digest (its arks and settings) and
    the content of the transcripts, lists and feature tables there, which someone may have edited since (the arks'
    bytes are not hashed: they are large, and written once per extraction)."""
    return {
        "features": read_digest(feat_dir, "features"),
        "files": contents_sha256(feat_dir, DATA_FILES + FEATURE_TABLES),
    }


def lang_dir_digest(lang_dir: Path) -> dict:
    """The content of the lang dir's files; lexiconp.txt's and lexiconp_silprob.txt's only where there is one (so
    the lang dirs of before, which have neither, keep their digests)."""
    optional = [name for name in OPTIONAL_LANG_FILES if (lang_dir / name).is_file()]
    return contents_sha256(lang_dir, [*LANG_FILES, *optional])


def find_checkpoint(cfg: DictConfig, model_dir: Path) -> Path:
    path = model_dir / f"{cfg.decode.checkpoint}.pt"
    if not path.is_file():
        raise RecipeError(f"{path}: no such checkpoint (decode.checkpoint is best or last)")
    return path


def find_alignment_checkpoint(cfg: DictConfig, model_dir: Path) -> Path:
    """The checkpoint a Viterbi model force-aligns with (decode.align_checkpoint): best_alignment.pt where
    training chose one (a dev set with hand-labelled boundaries), the decode checkpoint otherwise; or best, last."""
    choice = cfg.decode.align_checkpoint
    if choice == "best_alignment":
        path = model_dir / "best_alignment.pt"
        return path if path.is_file() else find_checkpoint(cfg, model_dir)
    path = model_dir / f"{choice}.pt"
    if not path.is_file():
        raise RecipeError(f"{path}: no such checkpoint (decode.align_checkpoint)")
    return path
