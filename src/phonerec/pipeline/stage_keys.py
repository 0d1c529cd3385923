"""The config keys each stage reads: the one place that declares them (a decoder declares its own, in
phonerec.decoding.decoders, and the decode stage adds them to DECODE's).

`hashed` keys change what a stage produces, so they go into its digest together with the content and digests of
its inputs: change one and the stage runs again. `unhashed` keys are read but change no result (parallel jobs,
thread counts, the device, how many checkpoints are kept, how many frames the hybrid search takes at once, where
the results table goes). A key names a value or a whole group (`model`: every key under it).

A stage sees the config only through `StageKeys.view`: its declared keys, resolved and read-only. Reading any
other key fails at once, naming it, so a stage cannot depend on a setting its digest does not cover.
"""

from phonerec.base.config import StageKeys
from phonerec.hmm.timing import FRAME_TIMING
from phonerec.scoring.error_rate import PHONE_SCORING

FEATURES_AT_LOAD = ("features.cmvn", "features.norm_vars", "features.delta_order", "features.delta_window")

# Stage 0: the corpus and where a download goes; the lang dir's HMM states. A corpus of the user's own is checked
# for utterances too short for their phones, with the frames the features and the model give (a warning alone).
PREPARE = StageKeys(
    hashed=("corpus", "hmm.states_per_phone", "paths.downloads"),
    unhashed=("corpus.max_utterance_seconds", "features.kaldi", "model.subsample", "models"),
    added=(("corpus.held_out_speaker", None),),
)
# Stage 0, when on: the speed-perturbed copy of the training data dir.
SPEED_PERTURB = StageKeys(hashed=("train.speed_perturb",))
# Stage 1: extraction settings; CMVN and deltas act when features are loaded.
FEATURES = StageKeys(
    hashed=("features.type", "features.kaldi", "features.cmvn", "corpus.sample_rate"),
    unhashed=("features.name", "nj", "corpus.max_utterance_seconds"),
)
# Stages 2 and 3; the dev PER of validation folds and removes phones as scoring does (score.*).
_TRAINING = (
    StageKeys(
        hashed=(
            "model",
            "train.seed",
            "train.batch_frames",
            "train.max_batch_utts",
            "train.grad_clip",
            "train.spec_augment",
            "train.precision",
            *FEATURES_AT_LOAD,
        ),
        unhashed=("train.num_threads", "train.keep_checkpoints", "train.device", "train.log_every_batches"),
        added=(("model.cell", "lstm"), ("model.gf_gate", "scalar"), ("model.match_lstm_parameters", False)),
    )
    | PHONE_SCORING
)
TRAIN_VITERBI = _TRAINING | StageKeys(
    hashed=("train.viterbi", "hmm", *FRAME_TIMING),
    added=(("hmm.pronunciations", "first"), ("hmm.pronunciation_probs", "lexicon")),
)
TRAIN_CTC = _TRAINING | StageKeys(hashed=("train.ctc",))
# Stage 4: the phone (and word) LMs, then each decoder (whose own keys are added to DECODE).
LM = StageKeys(hashed=("decode.lm_order",), unhashed=("decode.decoders",))  # (whether words is in it is hashed)
DECODE = StageKeys(
    hashed=(
        "decode.checkpoint",
        "decode.align_checkpoint",
        "decode.batch_frames",
        "decode.max_batch_utts",
        *FEATURES_AT_LOAD,
    ),
    unhashed=("decode.num_threads", "train.device"),
)
# Stage 6: a model's bundle (phonerec.pipeline.bundle_stage): what applying it needs, the decoders' settings included.
BUNDLE = StageKeys(
    hashed=("features", "corpus.sample_rate", "hmm", "decode", "score"),
    unhashed=("train.device", "corpus.max_utterance_seconds"),
    added=(("hmm.pronunciations", "first"), ("hmm.pronunciation_probs", "lexicon")),
)
# Stage 5: scoring and RESULTS.md; it always runs (it is quick), so nothing is hashed.
SCORE = StageKeys(
    hashed=(),
    unhashed=(
        "score",
        "models",
        "decode.decoders",
        "decode.splits",
        "decode.checkpoint",
        "recipe_name",
        "features.name",
        "train.num_threads",
        "train.seed",
        "train.ctc.init",
        "train.compare_ctc_inits",
        "train.speed_perturb",
        "paths.results",
        "hmm.pronunciations",
    ),
)
