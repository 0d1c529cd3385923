"""The one hydra config tree (conf/) that every step composes from the same overrides."""

import hashlib
import json
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from phonerec.pipeline.errors import RecipeError
from phonerec.pipeline.files import write_text_atomic

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = REPO_ROOT / "conf"


def load_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with command-line overrides; unknown keys are rejected (struct mode)."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise RecipeError(f"config: {err} (overrides: {' '.join(overrides) or 'none'})") from err


def repo_path(path: str | Path) -> Path:
    """A path from the config: relative ones are relative to the repository root."""
    return Path(path) if Path(path).is_absolute() else REPO_ROOT / path


def settings_hash(*parts) -> str:
    """A short digest of the settings a stage reads (DictConfigs are resolved first)."""
    plain = [OmegaConf.to_container(p, resolve=True) if isinstance(p, DictConfig) else p for p in parts]
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the resolved config next to a step's outputs."""
    write_text_atomic(path, OmegaConf.to_yaml(cfg, resolve=True))
