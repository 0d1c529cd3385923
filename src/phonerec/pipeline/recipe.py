"""What the training, decoding and scoring stages share: the digests of their inputs, the lang dir's topology,
the checkpoint to decode, the scoring fold and the dev PER of validation."""

import functools
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from phonerec.data.data_dir import DATA_FILES, read_table
from phonerec.data.lang import LANG_FILES, read_phones
from phonerec.hmm.align import Topology
from phonerec.hmm.align_eval import frame_offset
from phonerec.pipeline.config import repo_path
from phonerec.pipeline.errors import RecipeError
from phonerec.pipeline.files import contents_sha256
from phonerec.pipeline.markers import read_digest
from phonerec.scoring.error_rate import fold_phones, read_phone_map, score

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
    return contents_sha256(lang_dir, LANG_FILES)


def frame_shift(cfg: DictConfig, subsample: int) -> float:
    """Seconds between model output frames (features.kaldi.frame_shift, the model's subsampling)."""
    return cfg.features.kaldi.frame_shift / 1000 * subsample


def frame_timing(cfg: DictConfig, subsample: int) -> tuple[float, float]:
    """(frame shift, boundary offset) of the model's output frames in seconds, for align_eval's segments: the
    offset from features.kaldi's frame_length, frame_shift and snip_edges (stage_keys.FRAME_TIMING). A
    subsampled frame t starts at input frame subsample * t, so the offset is the input frames'."""
    kaldi = cfg.features.kaldi
    offset = frame_offset(kaldi.frame_length / 1000, kaldi.frame_shift / 1000, kaldi.snip_edges)
    return frame_shift(cfg, subsample), offset


def read_id2phone(lang_dir: Path) -> dict[int, str]:
    return {i: p for p, i in read_phones(lang_dir).items()}


def read_topology(lang_dir: Path, cfg: DictConfig) -> Topology:
    phones = read_phones(lang_dir)
    topo = Topology(num_phones=len(phones), states_per_phone=cfg.hmm.states_per_phone)
    states_file = lang_dir / "states.txt"
    states = read_table(states_file) if states_file.is_file() else {}
    if len(states) != topo.num_states:
        raise RecipeError(
            f"{lang_dir}/states.txt has {len(states)} states, hmm.states_per_phone={cfg.hmm.states_per_phone} "
            f"needs {topo.num_states}: run stage 0 again with this setting"
        )
    return topo


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


def scoring_fold(cfg: DictConfig):
    """The one folding of reference and hypothesis before scoring (score.phone_map), or None."""
    if not cfg.score.phone_map:
        return None
    mapping = read_phone_map(repo_path(cfg.score.phone_map), source=cfg.score.fold_from, target=cfg.score.fold_to)
    return functools.partial(fold_phones, mapping=mapping)


def dev_per_scorer(cfg: DictConfig) -> Callable[[dict, dict], float]:
    """The PER of training's validation (refs, hyps: utterance -> phones), scored as stage 5 scores: folded by
    score.phone_map (TIMIT's 39 phones), without score.ignore_phones; best.pt is the epoch of its lowest value."""
    fold, ignore = scoring_fold(cfg), frozenset(cfg.score.ignore_phones)
    return lambda refs, hyps: score(refs, hyps, fold=fold, ignore=ignore)["total"]["per"]
