"""The one hydra config tree (conf/) that every step composes from the same overrides, and the view of it that a
stage or a decoder takes (`StageKeys`)."""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from phonerec.base.errors import RecipeError
from phonerec.base.files import write_text_atomic
from phonerec.base.schema import SPLITS, check_config, corpus_splits, register_schemas

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = REPO_ROOT / "conf"
register_schemas()  # each conf/ file's `base_<name>` default


def load_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with command-line overrides, then check it (phonerec.base.schema): an unknown
    key, a value of the wrong type or out of range is a RecipeError of one line, before any stage runs."""
    try:
        if GlobalHydra.instance().is_initialized():  # in the app of ./run.sh -m (steps/sweep.py), on conf/ too
            cfg = compose(config_name="config", overrides=list(overrides))
        else:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        message = str(err)
        if err.__cause__ is not None:  # why an override did not merge: a type error's first line
            message += f": {str(err.__cause__).splitlines()[0]}"
        message = " ".join(message.split())  # omegaconf's errors span lines (full_key, object_type)
        raise RecipeError(f"config: {message} (overrides: {' '.join(overrides) or 'none'})") from err
    _decode_present_splits(cfg)
    check_config(cfg)
    return cfg


def _decode_present_splits(cfg: DictConfig) -> None:
    """decode.splits without a split the corpus has none of: a corpus of the user's own without a test set is
    decoded and scored on dev (stage 0 and run.sh say so)."""
    absent = set(SPLITS) - set(corpus_splits(cfg))  # (a name of no split at all is check_config's to refuse)
    if absent & set(cfg.decode.splits):
        cfg.decode.splits = [split for split in cfg.decode.splits if split not in absent]


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


@dataclass(frozen=True)
class StageKeys:
    """The config keys a stage (phonerec/pipeline/stage_keys.py) or a decoder reads. `hashed` keys change what it
    produces, so they go into its digest with the content and digests of its inputs; `unhashed` keys are read but
    change no result. A key names a value or a whole group (`model`: every key under it)."""

    hashed: tuple[str, ...]
    unhashed: tuple[str, ...] = ()
    # (key, default) of keys added to a hashed group after runs existed: left out of the digest at their default,
    # so that those runs keep their digests (and are not trained again)
    added: tuple[tuple[str, object], ...] = ()

    def __or__(self, other: "StageKeys") -> "StageKeys":
        return StageKeys(self.hashed + other.hashed, self.unhashed + other.unhashed, self.added + other.added)

    def view(self, cfg: DictConfig) -> DictConfig:
        """Only the declared keys of cfg, resolved, in struct mode and read-only."""
        view = OmegaConf.create({})
        for key in self.hashed + self.unhashed:
            value = OmegaConf.select(cfg, key, throw_on_missing=True, default=KeyError)
            if value is KeyError:
                raise RecipeError(f"config: no key '{key}' (declared in phonerec/pipeline/stage_keys.py)")
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
            OmegaConf.update(view, key, value, force_add=True)
        OmegaConf.set_struct(view, True)
        OmegaConf.set_readonly(view, True)
        return view

    def digest(self, cfg: DictConfig, *inputs) -> str:
        """The digest of the hashed keys' values and of `inputs` (the digests and content of what the stage reads).
        An unhashed key inside a hashed group (corpus.max_utterance_seconds in `corpus`) is left out of it."""
        values = {}
        for key in self.hashed:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
            values[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        left_out = [*self.unhashed, *(key for key, default in self.added if OmegaConf.select(cfg, key) == default)]
        for key in left_out:
            group, _, leaf = key.rpartition(".")
            if group in values and isinstance(values[group], dict):
                values[group].pop(leaf, None)
        return settings_hash(values, *inputs)
