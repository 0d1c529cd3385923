"""The types of every key in conf/ and the one check of their values.

Each config file has a dataclass here, registered in hydra's ConfigStore as that file's schema (the file names it
first in its defaults list: `- base_<name>`), so composition refuses a value of the wrong type and a key no file
declares. Every field is MISSING: the values live in the YAML files alone, and a field's type must keep the value
the file gives as it is (an int stays an int), since stage digests hash them (tests/test_config_schema.py pins
every recipe's). `check_config` then checks ranges, names and keys that depend on each other, right after
composition (phonerec.base.config.load_config), before any stage runs.
"""

import re
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from phonerec.base.errors import RecipeError

# Batches never split an utterance, so below about a second of frames each batch holds one utterance.
MIN_BATCH_FRAMES = 100
MODELS = ("viterbi", "ctc")  # conf/config.yaml models
CHECKPOINTS = ("best", "last")
ALIGN_CHECKPOINTS = ("best_alignment", "best", "last")
FEATURE_TYPES = ("mfcc", "fbank")
CMVN_LEVELS = ("speaker", "utterance", "none")
LR_METRICS = ("per", "loss")
SCLITE = ("auto", True, False)
# The names that the code reading these keys knows, declared here so that checking a config needs no torch (run.sh
# composes one before any stage): each module that reads the key takes its names from here.
SPLITS = ("train", "dev", "test")  # the data dirs stage 0 writes, each with its features from stage 1
SPEED_PERTURBED_TRAIN = "train_sp"  # and with train.speed_perturb, train's speed-perturbed copy (Kaldi's name)
OOV_POLICIES = ("error", "skip", "unk")  # corpus.oov of corpora of the user's own (phonerec.data.oovs)
FSDD_SPLITS = ("speakers", "takes")  # corpus.split of FSDD: speaker-independent, or the corpus's own split by takes
TRANSITION_MODES = ("none", "fixed", "learned")  # hmm.transitions (phonerec.hmm.transitions)
PRONUNCIATION_MODES = ("first", "variants")  # hmm.pronunciations (phonerec.hmm.align.build_word_graph)
PRONUNCIATION_PROBS = ("lexicon", "estimated")  # hmm.pronunciation_probs (phonerec.training.viterbi_ce)
VITERBI_CRITERIA = ("ce", "fullsum")  # train.viterbi.criterion (phonerec.training.viterbi_ce.ViterbiTask)
# model.cell (phonerec.model.recurrent): torch's own cells, then the gated-feedback ones (phonerec.model.gated_feedback)
GF_CELLS = ("gf_rnn", "gf_gru", "gf_lstm")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu", *GF_CELLS)
GF_GATES = ("scalar", "vector")  # model.gf_gate: the global reset gate of a gated-feedback cell
CTC_INITS = ("viterbi", "fresh", "scratch")  # train.ctc.init (phonerec.pipeline.train_stages)
CTC_LOSSES = ("torch", "own")  # train.ctc.loss: torch.nn.functional.ctc_loss, phonerec.hmm.fullsum.ctc_loss
PRECISIONS = ("fp32", "bf16")  # train.precision (phonerec.model.device)
DEVICE_SPEC = re.compile(r"auto|cpu|cuda(?::(\d+))?")  # train.device (phonerec.model.device.resolve_device)
DEVICES = "auto, cpu, cuda or cuda:N"
DECODERS = ("greedy", "lm", "words")  # decode.decoders: the names phonerec.decoding.decoders registers


@dataclass
class PathsConfig:
    data: str = MISSING
    exp: str = MISSING
    lm: str = MISSING
    downloads: str = MISSING
    results: str = MISSING


@dataclass
class ConnectedConfig:
    enabled: bool = MISSING
    min_digits: int = MISSING
    max_digits: int = MISSING
    pause_seconds: list[float] = MISSING
    edge_seconds: list[float] = MISSING
    noise_dbfs: float = MISSING
    seed: int = MISSING


@dataclass
class FsddConfig:
    name: str = MISSING
    root: str | None = MISSING
    url: str = MISSING
    archive_dir: str = MISSING
    manifest: str = MISSING
    lexicon: str = MISSING
    sample_rate: int = MISSING
    max_utterance_seconds: float = MISSING  # not hashed (StageKeys.digest), so a float may hold the file's int
    split: str = MISSING
    dev_speakers: list[str] = MISSING
    test_speakers: list[str] = MISSING
    train_speakers: list[str] | None = MISSING
    held_out_speaker: str | None = MISSING
    test_takes: list[int] = MISSING
    dev_takes: list[int] = MISSING
    connected: ConnectedConfig = MISSING


@dataclass
class TidigitsConfig:
    name: str = MISSING
    root: str | None = MISSING
    lexicon: str = MISSING
    sample_rate: int = MISSING
    max_utterance_seconds: float = MISSING
    groups: list[str] = MISSING
    dev_speakers: list[str] | None = MISSING
    dev_every: int = MISSING


@dataclass
class KaldiConfig:
    """A corpus of the user's own as Kaldi data dirs and a dict dir (phonerec.data.corpora.kaldi)."""

    name: str = MISSING
    train_dir: str = MISSING
    dev_dir: str | None = MISSING
    test_dir: str | None = MISSING
    dict_dir: str = MISSING
    oov: str = MISSING
    oov_word: str | None = MISSING
    allow_pipes: bool = MISSING
    resample: bool = MISSING
    sample_rate: int = MISSING
    max_utterance_seconds: float = MISSING
    dev_share: float = MISSING
    dev_seed: int = MISSING


@dataclass
class MfaConfig:
    """A corpus of the user's own as an MFA folder and dictionary (phonerec.data.corpora.mfa)."""

    name: str = MISSING
    root: str = MISSING
    dictionary: str = MISSING
    speaker_characters: int | None = MISSING
    dev_speakers: list[str] | None = MISSING
    test_speakers: list[str] = MISSING
    oov: str = MISSING
    resample: bool = MISSING
    sample_rate: int = MISSING
    max_utterance_seconds: float = MISSING
    dev_share: float = MISSING
    dev_seed: int = MISSING


@dataclass
class TimitConfig:
    name: str = MISSING
    root: str | None = MISSING
    sample_url: str = MISSING
    sample_size: int = MISSING
    sample_md5: str = MISSING
    sample_rate: int = MISSING
    max_utterance_seconds: float = MISSING
    include_sa: bool = MISSING
    phone_table: str = MISSING
    train_phones: str = MISSING
    speaker_lists: str = MISSING
    sample_dev_speakers: list[str] = MISSING
    sample_test_speakers: list[str] = MISSING


@dataclass
class FbankOptions:
    num_mel_bins: int = MISSING
    use_energy: bool = MISSING
    frame_length: float = MISSING
    frame_shift: float = MISSING
    snip_edges: bool = MISSING
    low_freq: float = MISSING
    high_freq: float = MISSING
    dither: float = MISSING


@dataclass
class MfccOptions(FbankOptions):
    num_ceps: int = MISSING


@dataclass
class FbankConfig:
    name: str = MISSING
    type: str = MISSING
    kaldi: FbankOptions = MISSING
    cmvn: str = MISSING
    norm_vars: bool = MISSING
    delta_order: int = MISSING
    delta_window: int = MISSING


@dataclass
class MfccConfig(FbankConfig):
    kaldi: MfccOptions = MISSING


@dataclass
class RecurrentConfig:
    cell: str = MISSING
    gf_gate: str = MISSING
    match_lstm_parameters: bool = MISSING
    num_layers: int = MISSING
    hidden_size: int = MISSING
    dropout: float = MISSING
    projection_size: int = MISSING
    splice: int = MISSING
    subsample: int = MISSING


@dataclass
class SpecAugmentConfig:
    enabled: bool = MISSING
    freq_masks: int = MISSING
    freq_width: int = MISSING
    time_masks: int = MISSING
    time_width: int = MISSING
    time_max_fraction: float = MISSING


@dataclass
class PhaseConfig:
    """What the two training phases (train.viterbi, train.ctc) share."""

    epochs: int = MISSING
    patience: int | None = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    lr_decay: float = MISSING
    lr_patience: int | None = MISSING
    lr_metric: str = MISSING


@dataclass
class ViterbiTrainConfig(PhaseConfig):
    realign_epochs: list[int] = MISSING
    init_alignment: str | None = MISSING
    init_alignment_phones: str | None = MISSING
    use_priors: bool = MISSING
    criterion: str = MISSING
    fullsum_prior_scale: float = MISSING
    prior_scale: float = MISSING


@dataclass
class CtcTrainConfig(PhaseConfig):
    init: str = MISSING
    blank_offset: float = MISSING
    loss: str = MISSING


@dataclass
class TrainConfig:
    seed: int = MISSING
    num_threads: int = MISSING
    device: str = MISSING
    precision: str = MISSING
    batch_frames: int = MISSING
    max_batch_utts: int = MISSING
    grad_clip: float = MISSING
    keep_checkpoints: int = MISSING
    log_every_batches: int = MISSING
    spec_augment: SpecAugmentConfig = MISSING
    speed_perturb: list[float] = MISSING
    compare_ctc_inits: list[str] = MISSING
    viterbi: ViterbiTrainConfig = MISSING
    ctc: CtcTrainConfig = MISSING


@dataclass
class CtcBeamConfig:
    beam_size: int = MISSING
    beam_size_token: int | None = MISSING
    lm_weights: list[float] = MISSING
    insertion_bonuses: list[float] = MISSING


@dataclass
class HybridConfig:
    beam: float = MISSING
    batch_frames: int = MISSING
    acoustic_scales: list[float] = MISSING
    insertion_bonuses: list[float] = MISSING


@dataclass
class WordsConfig:
    beam_size: int = MISSING
    lm_weights: list[float] = MISSING
    word_scores: list[float] = MISSING


@dataclass
class DecodeConfig:
    decoders: list[str] = MISSING
    splits: list[str] = MISSING
    checkpoint: str = MISSING
    align_checkpoint: str = MISSING
    num_threads: int = MISSING
    batch_frames: int = MISSING
    max_batch_utts: int = MISSING
    prior_scale: float = MISSING
    lm_order: int = MISSING
    ctc_beam: CtcBeamConfig = MISSING
    hybrid: HybridConfig = MISSING
    words: WordsConfig = MISSING


@dataclass
class ScoreConfig:
    ignore_phones: list[str] | None = MISSING  # null: the lang dir's silence phones
    phone_map: str | None = MISSING
    fold_from: str = MISSING
    fold_to: str = MISSING
    sclite: str | bool = MISSING  # auto, true or false


@dataclass
class HmmConfig:
    states_per_phone: int = MISSING
    optional_silence: bool = MISSING
    transitions: str = MISSING
    self_loop_prob: float = MISSING
    silence_prob: float = MISSING
    pronunciations: str = MISSING
    pronunciation_probs: str = MISSING


@dataclass
class Config:
    """conf/config.yaml's own keys; each group is typed by its option's schema."""

    recipe_name: str = MISSING
    nj: int = MISSING
    models: list[str] = MISSING
    sweep_name: str = MISSING
    hmm: HmmConfig = MISSING
    paths: Any = MISSING
    corpus: Any = MISSING
    features: Any = MISSING
    model: Any = MISSING
    train: Any = MISSING
    decode: Any = MISSING
    score: Any = MISSING


# (group, option): its schema, stored as <group>/base_<option>.
SCHEMAS = {
    ("paths", "default"): PathsConfig,
    ("corpus", "fsdd"): FsddConfig,
    ("corpus", "tidigits"): TidigitsConfig,
    ("corpus", "timit"): TimitConfig,
    ("corpus", "kaldi"): KaldiConfig,
    ("corpus", "mfa"): MfaConfig,
    ("features", "mfcc"): MfccConfig,
    ("features", "fbank"): FbankConfig,
    ("model", "recurrent"): RecurrentConfig,
    ("train", "default"): TrainConfig,
    ("decode", "default"): DecodeConfig,
    ("score", "default"): ScoreConfig,
}


def register_schemas() -> None:
    """Store every schema in hydra's ConfigStore (storing one again replaces it)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for (group, option), schema in SCHEMAS.items():
        store.store(group=group, name=f"base_{option}", node=schema)


def _show(value) -> str:
    """A value as it would be written on the command line."""
    if OmegaConf.is_list(value) or isinstance(value, list | tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _names(names) -> str:
    return ", ".join(_show(n) for n in names)


# Rules: (test, what the error says). A list rule tests the whole list.
def _at_least(low):
    return (lambda v: v >= low), f"must be >= {low}"


def _above(low):
    return (lambda v: v > low), f"must be > {low}"


def _in_range(low, high):
    return (lambda v: low <= v <= high), f"must be in [{low}, {high}]"


def _probability():
    return (lambda v: 0 < v < 1), "must be a probability strictly between 0 and 1"


def _or_null(rule):
    test, says = rule
    return (lambda v: v is None or test(v)), f"{says}, or null"


def _one_of(names):
    return (lambda v: v in names), f"expected one of {_names(names)}"


def _some_of(names, empty_ok=False):
    def test(values):
        return (empty_ok or len(values) > 0) and len(set(values)) == len(values) and all(v in names for v in values)

    return test, f"expected {'distinct' if empty_ok else 'one or more distinct'} of {_names(names)}"


def _nonempty(rule=None):
    test, says = rule or ((lambda v: True), "")
    return (lambda v: len(v) > 0 and all(test(x) for x in v)), "expected a non-empty list" + (
        f" (each value {says.removeprefix('must be ')})" if says else ""
    )


def _rules() -> dict:
    """The rule of each checked key."""
    phases = {
        f"train.{phase}.{key}": rule
        for phase in ("viterbi", "ctc")
        for key, rule in {
            "epochs": _at_least(1),
            "patience": _or_null(_at_least(1)),
            "lr": _above(0),
            "weight_decay": _at_least(0),
            "lr_decay": ((lambda v: 0 < v < 1), "must be between 0 and 1"),
            "lr_patience": _or_null(_at_least(0)),
            "lr_metric": _one_of(LR_METRICS),
        }.items()
    }  # the keys of PhaseConfig
    return {
        **phases,
        "nj": _at_least(1),
        "models": _some_of(MODELS),
        "hmm.states_per_phone": _at_least(1),
        "hmm.transitions": _one_of(TRANSITION_MODES),
        "hmm.self_loop_prob": _probability(),
        "hmm.silence_prob": _probability(),
        "hmm.pronunciations": _one_of(PRONUNCIATION_MODES),
        "hmm.pronunciation_probs": _one_of(PRONUNCIATION_PROBS),
        "corpus.sample_rate": _above(0),
        "corpus.max_utterance_seconds": _above(0),
        "corpus.split": _one_of(FSDD_SPLITS),  # FSDD's
        "corpus.dev_every": _at_least(1),  # TIDIGITS'
        "corpus.oov": _one_of(OOV_POLICIES),  # corpora of the user's own
        "corpus.dev_share": ((lambda v: 0 < v < 1), "must be between 0 and 1"),
        "corpus.speaker_characters": _or_null(_at_least(1)),
        "features.type": _one_of(FEATURE_TYPES),
        "features.kaldi.num_mel_bins": _at_least(4),  # torchaudio's mel banks need more than 3
        "features.kaldi.num_ceps": _at_least(1),  # and at most num_mel_bins: check_config
        "features.kaldi.frame_length": _above(0),
        "features.kaldi.frame_shift": _above(0),
        "features.kaldi.low_freq": _at_least(0),
        "features.kaldi.dither": _at_least(0),
        "features.cmvn": _one_of(CMVN_LEVELS),
        "features.delta_order": _at_least(0),
        "features.delta_window": _at_least(1),
        "model.cell": _one_of(CELLS),
        "model.gf_gate": _one_of(GF_GATES),
        "model.num_layers": _at_least(1),
        "model.hidden_size": _at_least(1),
        "model.dropout": ((lambda v: 0 <= v < 1), "must be in [0, 1)"),
        "model.projection_size": _at_least(0),
        "model.splice": _at_least(0),
        "model.subsample": _at_least(1),
        "train.num_threads": _at_least(1),
        "train.device": ((lambda v: DEVICE_SPEC.fullmatch(v) is not None), f"expected {DEVICES}"),
        "train.precision": _one_of(PRECISIONS),
        "train.batch_frames": _at_least(MIN_BATCH_FRAMES),
        "train.max_batch_utts": _at_least(1),
        "train.grad_clip": _above(0),
        "train.keep_checkpoints": _at_least(1),  # 0 would keep every checkpoint ([:-0] is empty)
        "train.log_every_batches": _at_least(1),
        "train.spec_augment.freq_masks": _at_least(0),
        "train.spec_augment.freq_width": _at_least(0),
        "train.spec_augment.time_masks": _at_least(0),
        "train.spec_augment.time_width": _at_least(0),
        "train.spec_augment.time_max_fraction": _in_range(0, 1),
        "train.speed_perturb": (
            lambda v: all(0.5 <= f <= 2 and f != 1 for f in v) and len(set(v)) == len(v),
            "expected distinct factors in [0.5, 2], other than 1 ([] = off)",
        ),
        "train.compare_ctc_inits": _some_of(CTC_INITS, empty_ok=True),
        "train.viterbi.criterion": _one_of(VITERBI_CRITERIA),
        "train.viterbi.fullsum_prior_scale": _at_least(0),
        "train.viterbi.prior_scale": _at_least(0),
        "train.ctc.init": _one_of(CTC_INITS),
        "train.ctc.loss": _one_of(CTC_LOSSES),
        "decode.decoders": _some_of(DECODERS),
        "decode.splits": _some_of(SPLITS),
        "decode.checkpoint": _one_of(CHECKPOINTS),
        "decode.align_checkpoint": _one_of(ALIGN_CHECKPOINTS),
        "decode.num_threads": _at_least(1),
        "decode.batch_frames": _at_least(MIN_BATCH_FRAMES),
        "decode.max_batch_utts": _at_least(1),
        "decode.prior_scale": _at_least(0),
        "decode.lm_order": _at_least(1),
        "decode.ctc_beam.beam_size": _at_least(1),
        "decode.ctc_beam.beam_size_token": _or_null(_at_least(1)),
        "decode.ctc_beam.lm_weights": _nonempty(),
        "decode.ctc_beam.insertion_bonuses": _nonempty(),
        "decode.hybrid.beam": _above(0),
        "decode.hybrid.batch_frames": _at_least(MIN_BATCH_FRAMES),
        "decode.hybrid.acoustic_scales": _nonempty(_above(0)),
        "decode.hybrid.insertion_bonuses": _nonempty(),
        "decode.words.beam_size": _at_least(1),
        "decode.words.lm_weights": _nonempty(),
        "decode.words.word_scores": _nonempty(),
        "score.sclite": _one_of(SCLITE),
    }


_ABSENT = object()


def check_values(cfg: DictConfig, where: str = "config") -> None:
    """Refuse the first value out of its range or a name not allowed, of the keys `cfg` holds (a composed config,
    or a model bundle's config.yaml, which holds some): a RecipeError of one line naming `where`, the key, its value
    and what is allowed."""
    for key, (test, says) in _rules().items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not test(value):
            raise RecipeError(f"{where}: {key}={_show(value)}: {says}")


def corpus_kind(cfg: DictConfig) -> str:
    """The conf/corpus option the config's corpus was composed from (fsdd, timit, tidigits, kaldi), known by its
    schema: local/<kind>/prepare_data.py prepares it (corpus.name may be the user's, for corpus=kaldi)."""
    kinds = [option for (group, option), schema in SCHEMAS.items() if group == "corpus"]
    for option in kinds:
        if OmegaConf.get_type(cfg.corpus) is SCHEMAS["corpus", option]:
            return option
    raise RecipeError(f"config: the corpus group is none of {', '.join(kinds)}")


def corpus_splits(cfg: DictConfig) -> tuple[str, ...]:
    """The data dirs stage 0 writes: SPLITS, less test for a corpus of the user's own without one
    (corpus=kaldi: corpus.test_dir=null; corpus=mfa: corpus.test_speakers=[])."""
    ccfg = cfg.corpus  # by its keys: a stage's view of the config (StageKeys.view) has lost the schema's type
    if ("test_dir" in ccfg and ccfg.test_dir is None) or ("test_speakers" in ccfg and not ccfg.test_speakers):
        return tuple(s for s in SPLITS if s != "test")
    return SPLITS


def check_config(cfg: DictConfig) -> None:
    """check_values, then keys that do not fit together: a RecipeError of one line naming the keys."""
    check_values(cfg)
    kaldi = cfg.features.kaldi
    if "num_ceps" in kaldi and kaldi.num_ceps > kaldi.num_mel_bins:
        bins = f"features.kaldi.num_mel_bins={kaldi.num_mel_bins}"
        raise RecipeError(f"config: features.kaldi.num_ceps={kaldi.num_ceps}: must be <= {bins}")
    if cfg.model.cell in GF_CELLS and cfg.model.projection_size:
        raise RecipeError(
            f"config: model.cell={cfg.model.cell}, model.projection_size={cfg.model.projection_size}: a gated-feedback "
            "stack has no projection (it would sit inside the feedback between layers); set model.projection_size=0"
        )
    vcfg = cfg.train.viterbi
    realign = list(vcfg.realign_epochs)
    if realign != sorted(set(realign)) or any(not 1 <= e <= vcfg.epochs for e in realign):
        raise RecipeError(
            f"config: train.viterbi.realign_epochs={_show(realign)}: expected distinct epochs in increasing order, "
            f"each in [1, train.viterbi.epochs={vcfg.epochs}]"
        )
    if (vcfg.init_alignment is None) != (vcfg.init_alignment_phones is None):
        raise RecipeError(
            f"config: train.viterbi.init_alignment={_show(vcfg.init_alignment)}, "
            f"train.viterbi.init_alignment_phones={_show(vcfg.init_alignment_phones)}: give both or neither"
        )
    held_out = OmegaConf.select(cfg, "corpus.held_out_speaker", default=None)
    if held_out is not None and cfg.corpus.split != "speakers":
        raise RecipeError(
            f"config: corpus.held_out_speaker={held_out}, corpus.split={cfg.corpus.split}: leaving a speaker out "
            "needs a corpus split by speakers (corpus.split=speakers)"
        )
    connected = OmegaConf.select(cfg, "corpus.connected", default=None)
    if connected is not None and not 1 <= connected.min_digits <= connected.max_digits:
        raise RecipeError(
            f"config: corpus.connected.min_digits={connected.min_digits}, max_digits={connected.max_digits}: "
            "expected 1 <= min_digits <= max_digits"
        )
