"""The typed config (phonerec.base.schema): a bad setting is refused in one line when the config is composed,
before any stage moves or writes anything, and the types keep every recipe's stage digests as they were."""

import pytest
from conftest import run_sh
from omegaconf import OmegaConf

from phonerec.base.config import load_config
from phonerec.base.errors import RecipeError
from phonerec.pipeline import stage_keys

RECIPES = ("fsdd", "fsdd_connected", "tidigits", "timit", "timit_sample")
STAGES = ("PREPARE", "SPEED_PERTURB", "FEATURES", "TRAIN_VITERBI", "TRAIN_CTC", "LM", "DECODE", "BUNDLE")
# Each recipe's default digests before the schema (a float where the file has an int, a key the file lacks or a
# list in another form would change them, and every existing run would train again).
DEFAULT_DIGESTS = {
    "fsdd/PREPARE": "16449ddae543df5a",
    "fsdd/SPEED_PERTURB": "8d1383763d1e25cc",
    "fsdd/FEATURES": "20fd58aa92517aaa",
    "fsdd/TRAIN_VITERBI": "e361979c6078955f",
    "fsdd/TRAIN_CTC": "10ca0e74be0d3956",
    "fsdd/LM": "bda5e4059fb648c8",
    "fsdd/DECODE": "0a74b2faec242cd4",
    "fsdd/BUNDLE": "e0b04e4d99250743",
    "fsdd_connected/PREPARE": "d1347046a2d73052",
    "fsdd_connected/SPEED_PERTURB": "8d1383763d1e25cc",
    "fsdd_connected/FEATURES": "20fd58aa92517aaa",
    "fsdd_connected/TRAIN_VITERBI": "22cedd399d0d0318",
    "fsdd_connected/TRAIN_CTC": "9e5dd97b2a01995f",
    "fsdd_connected/LM": "bda5e4059fb648c8",
    "fsdd_connected/DECODE": "0a74b2faec242cd4",
    "fsdd_connected/BUNDLE": "e0b04e4d99250743",
    "tidigits/PREPARE": "77dbf5812ce83636",
    "tidigits/SPEED_PERTURB": "8d1383763d1e25cc",
    "tidigits/FEATURES": "c8f2a4e65597e1d1",
    "tidigits/TRAIN_VITERBI": "22cedd399d0d0318",
    "tidigits/TRAIN_CTC": "9e5dd97b2a01995f",
    "tidigits/LM": "bda5e4059fb648c8",
    "tidigits/DECODE": "0a74b2faec242cd4",
    "tidigits/BUNDLE": "96001a5e92535b5a",
    "timit/PREPARE": "207a8695382f4967",
    "timit/SPEED_PERTURB": "8d1383763d1e25cc",
    "timit/FEATURES": "3d9c0cc93d728ef0",
    "timit/TRAIN_VITERBI": "ea433c872045312a",
    "timit/TRAIN_CTC": "7712c32a3287466e",
    "timit/LM": "bda5e4059fb648c8",
    "timit/DECODE": "f3d8b627b49615a1",
    "timit/BUNDLE": "07a9eb4442598a86",
    "timit_sample/PREPARE": "207a8695382f4967",
    "timit_sample/SPEED_PERTURB": "8d1383763d1e25cc",
    "timit_sample/FEATURES": "3d9c0cc93d728ef0",
    "timit_sample/TRAIN_VITERBI": "62b0cd0746d16a26",
    "timit_sample/TRAIN_CTC": "3febc0e8515d8d7c",  # CTC lr 8e-3 (issue 32)
    "timit_sample/LM": "bda5e4059fb648c8",
    "timit_sample/DECODE": "552adf39fbef5ac9",
    "timit_sample/BUNDLE": "8a537e3fc799b803",
}


def test_every_recipes_default_digests_are_unchanged():
    found = {}
    for recipe in RECIPES:
        cfg = load_config([f"recipe={recipe}"])
        for stage in STAGES:
            found[f"{recipe}/{stage}"] = getattr(stage_keys, stage).digest(cfg)
    assert found == DEFAULT_DIGESTS


def test_a_key_added_later_changes_a_digest_only_off_its_default():
    """hmm.pronunciations came after runs existed: at its default the digests are those of before."""
    default = load_config(["recipe=timit_sample"])
    first = load_config(["recipe=timit_sample", "hmm.pronunciations=first"])
    variants = load_config(["recipe=timit_sample", "hmm.pronunciations=variants"])
    for stage in (stage_keys.TRAIN_VITERBI, stage_keys.BUNDLE):
        assert stage.digest(first) == stage.digest(default) != stage.digest(variants)


def test_values_keep_their_types_and_a_wrong_type_is_refused():
    cfg = load_config(["recipe=timit_sample"])
    assert type(cfg.nj) is int and type(cfg.train.batch_frames) is int and type(cfg.corpus.sample_size) is int
    assert type(cfg.train.viterbi.lr) is float and cfg.score.sclite == "auto"
    assert load_config(["score.sclite=true"]).score.sclite is True
    assert OmegaConf.get_type(load_config([]), "hmm").__name__ == "HmmConfig"  # the schema is in force
    for override, says in (
        ("nj=two", "Value 'two' of type 'str' could not be converted to Integer"),
        ("model.hidden_size=1.5", "Value '1.5' of type 'float' could not be converted to Integer"),
        ("train.spec_augment.enabled=maybe", "Value 'maybe' is not a valid bool"),
    ):
        with pytest.raises(RecipeError, match=f"{override}: {says}") as err:
            load_config([override])
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.viterbi.lr=-1"], "train.viterbi.lr=-1.0: must be > 0"),
        (["model.hidden_size=0"], "model.hidden_size=0: must be >= 1"),
        (["features.kaldi.num_ceps=100"], "features.kaldi.num_ceps=100: must be <= features.kaldi.num_mel_bins=23"),
        (["features=fbank", "features.kaldi.num_mel_bins=3"], "features.kaldi.num_mel_bins=3: must be >= 4"),
        (["train.viterbi.epochs=0"], "train.viterbi.epochs=0: must be >= 1"),
        (["nj=0"], "nj=0: must be >= 1"),
        (["train.num_threads=0"], "train.num_threads=0: must be >= 1"),
        (["train.batch_frames=10"], "train.batch_frames=10: must be >= 100"),
        (
            ["train.viterbi.realign_epochs=[2,1]"],
            r"train.viterbi.realign_epochs=\[2,1\]: expected distinct epochs in increasing",
        ),
        (["train.viterbi.realign_epochs=[1,1]"], r"train.viterbi.realign_epochs=\[1,1\]: expected distinct epochs"),
        (
            ["train.viterbi.epochs=4"],
            r"train.viterbi.realign_epochs=\[1,2,3,5,8\]: .* each in \[1, train.viterbi.epochs=4\]",
        ),
        (
            ["decode.decoders=[nosuch]"],
            r"decode.decoders=\[nosuch\]: expected one or more distinct of greedy, lm, words",
        ),
        (["decode.decoders=[]"], r"decode.decoders=\[\]: expected one or more"),
        (["hmm.states_per_phone=0"], "hmm.states_per_phone=0: must be >= 1"),
        (["hmm.transitions=estimated"], "hmm.transitions=estimated: expected one of none, fixed, learned"),
        (["hmm.silence_prob=1"], "hmm.silence_prob=1.0: must be a probability strictly between 0 and 1"),
        (["features.type=plp"], "features.type=plp: expected one of mfcc, fbank"),
        (["features.cmvn=global"], "features.cmvn=global: expected one of speaker, utterance, none"),
        (["train.viterbi.criterion=mmi"], "train.viterbi.criterion=mmi: expected one of ce, fullsum"),
        (["train.ctc.init=kaldi"], "train.ctc.init=kaldi: expected one of viterbi, fresh, scratch"),
        (["train.ctc.loss=k2"], "train.ctc.loss=k2: expected one of torch, own"),
        (["train.precision=fp16"], "train.precision=fp16: expected one of fp32, bf16"),
        (["train.device=gpu"], "train.device=gpu: expected auto, cpu, cuda or cuda:N"),
        (["train.viterbi.patience=0"], "train.viterbi.patience=0: must be >= 1, or null"),
        (["train.ctc.lr_metric=wer"], "train.ctc.lr_metric=wer: expected one of per, loss"),
        (["train.speed_perturb=[1.0]"], r"train.speed_perturb=\[1.0\]: expected distinct factors in \[0.5, 2\]"),
        (["train.compare_ctc_inits=[fresh,fresh]"], r"train.compare_ctc_inits=\[fresh,fresh\]: expected distinct of"),
        (["decode.checkpoint=first"], "decode.checkpoint=first: expected one of best, last"),
        (["decode.align_checkpoint=worst"], "decode.align_checkpoint=worst: expected one of best_alignment, best"),
        (["decode.splits=[dev,dev]"], r"decode.splits=\[dev,dev\]: expected one or more distinct of train, dev, test"),
        (["decode.splits=[dev,nosuch]"], r"decode.splits=\[dev,nosuch\]: expected one or more distinct of"),
        (["corpus.split=foo"], "corpus.split=foo: expected one of speakers, takes"),
        (["corpus=tidigits", "corpus.dev_every=0"], "corpus.dev_every=0: must be >= 1"),
        (
            ["decode.hybrid.acoustic_scales=[0]"],
            r"decode.hybrid.acoustic_scales=\[0.0\]: expected a non-empty list \(each value > 0\)",
        ),
        (["models=[hmm]"], r"models=\[hmm\]: expected one or more distinct of viterbi, ctc"),
        (["score.sclite=maybe"], "score.sclite=maybe: expected one of auto, true, false"),
        (
            ["train.viterbi.init_alignment=ali.txt"],
            "train.viterbi.init_alignment=ali.txt, train.viterbi.init_alignment_phones=null: give both",
        ),
        (
            ["recipe=fsdd_connected", "corpus.connected.max_digits=0"],
            "corpus.connected.min_digits=1, max_digits=0: expected 1 <= min_digits",
        ),
    ],
)
def test_a_bad_setting_is_refused_in_one_line_naming_the_key(overrides, message):
    with pytest.raises(RecipeError, match=f"^config: {message}") as err:
        load_config(overrides)
    assert "\n" not in str(err.value)


def test_run_sh_refuses_a_bad_setting_before_stage_0_writes(tmp_path):
    result = run_sh(
        "--stage", "0", "--stop-stage", "0", f"paths.data={tmp_path}/data", f"paths.exp={tmp_path}/exp", "nj=0"
    )
    assert result.returncode != 0 and "nj=0: must be >= 1" in result.stderr
    assert "Stage 0" not in result.stdout + result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "exp").exists()
