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
from phonerec.pipeline.schema import check_config, register_schemas

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = REPO_ROOT / "conf"
register_schemas()  # each conf/ file's `base_<name>` default


def load_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with command-line overrides, then check it (phonerec.pipeline.schema): an unknown
    key, a value of the wrong type or out of range is a RecipeError of one line, before any stage runs."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        message = str(err)
        if err.__cause__ is not None:  # why an override did not merge: a type error's first line
            message += f": {str(err.__cause__).splitlines()[0]}"
        message = " ".join(message.split())  # omegaconf's errors span lines (full_key, object_type)
        raise RecipeError(f"config: {message} (overrides: {' '.join(overrides) or 'none'})") from err
    check_config(cfg)
    return cfg


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
