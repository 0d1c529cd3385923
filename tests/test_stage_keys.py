"""The config keys of each stage (phonerec.pipeline.stage_keys): declared keys exist in every recipe, a stage's
view refuses any other key, and its digest changes with each hashed setting and with nothing else."""

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from phonerec.base.config import CONF_DIR, load_config
from phonerec.decoding.decoders import _REGISTRY
from phonerec.pipeline import stage_keys

STAGES = {name: keys for name, keys in vars(stage_keys).items() if isinstance(keys, stage_keys.StageKeys)}
DECODE_STAGES = {f"DECODE {kind} {name}": stage_keys.DECODE | cls.keys for (kind, name), cls in _REGISTRY.items()}
ALL = {**{k: v for k, v in STAGES.items() if not k.startswith("_")}, **DECODE_STAGES}
RECIPES = sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))


# What a recipe needs on the command line besides itself (corpora of the user's own have no default).
REQUIRED = {
    "kaldi": ["corpus.name=mine", "corpus.train_dir=/nowhere", "corpus.dict_dir=/nowhere"],
    "mfa": ["corpus.name=mine", "corpus.root=/nowhere", "corpus.dictionary=/nowhere"],
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_declared_key_is_in_every_recipe(recipe):
    cfg = load_config([f"recipe={recipe}", *REQUIRED.get(recipe, ["corpus.root=/nowhere"])])
    for keys in ALL.values():
        keys.view(cfg)  # raises naming a missing key


def test_a_view_refuses_keys_not_declared():
    view = stage_keys.DECODE.view(load_config([]))
    assert view.decode.checkpoint == "best"
    with pytest.raises(ConfigAttributeError, match="train"):
        _ = view.train.batch_frames
    with pytest.raises(ConfigAttributeError, match="prior_scale"):
        _ = view.decode.prior_scale  # a key of some decoders only


def _leaves(node, prefix):
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node)
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}")
    else:
        yield prefix, node


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    return "x"  # None


def _with(plain: dict, key: str, value):
    cfg = OmegaConf.create(plain)
    OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.mark.parametrize("stage", sorted(ALL))
def test_the_digest_follows_each_hashed_setting_and_nothing_else(stage):
    keys = ALL[stage]
    plain = OmegaConf.to_container(load_config(["recipe=timit_sample"]), resolve=True)
    base = keys.digest(keys.view(OmegaConf.create(plain)))
    for declared in keys.hashed:
        for leaf, value in _leaves(OmegaConf.select(OmegaConf.create(plain), declared), declared):
            if leaf in keys.unhashed:  # read but left out of the digest, inside a hashed group
                continue
            changed = _with(plain, leaf, _changed(value))
            assert keys.digest(keys.view(changed)) != base, f"{stage}: {leaf} changed, the digest did not"
    unread = [*keys.unhashed, "recipe_name" if "recipe_name" not in keys.unhashed else "nj"]
    for leaf in unread:
        value = OmegaConf.select(OmegaConf.create(plain), leaf)
        if OmegaConf.is_config(value) or isinstance(value, dict):
            continue
        changed = _with(plain, leaf, _changed(value))
        assert keys.digest(keys.view(changed)) == base, f"{stage}: {leaf} changed the digest"
