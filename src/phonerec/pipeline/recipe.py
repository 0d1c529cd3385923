"""What the training, decoding and scoring stages share: their settings, the lang dir and the checkpoint."""

import functools
import hashlib
import logging
from pathlib import Path

from omegaconf import DictConfig

from phonerec.data.data_dir import read_table
from phonerec.data.lang import read_phones
from phonerec.hmm.align import Topology
from phonerec.pipeline.config import repo_path
from phonerec.pipeline.errors import RecipeError
from phonerec.scoring.error_rate import fold_phones, read_phone_map

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


def load_time_features(cfg: DictConfig) -> dict:
    return {k: cfg.features[k] for k in ("norm_vars", "delta_order", "delta_window")}


def frame_shift(cfg: DictConfig) -> float:
    """Seconds between model output frames."""
    return cfg.features.kaldi.frame_shift / 1000 * cfg.model.subsample


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


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scoring_fold(cfg: DictConfig):
    """The one folding of reference and hypothesis before scoring (decode.phone_map), or None."""
    if not cfg.decode.phone_map:
        return None
    mapping = read_phone_map(repo_path(cfg.decode.phone_map), source=cfg.decode.fold_from, target=cfg.decode.fold_to)
    return functools.partial(fold_phones, mapping=mapping)
