"""Applying a trained model to new recordings: `load_model(<exp>/<model>)` reads the bundle that stage 6 wrote
(phonerec.pipeline.bundle_stage); the TrainedModel transcribes recordings and force-aligns them with their
transcripts.

A recording of any sample rate and channel count is read with soundfile, downmixed to mono (the mean of its
channels) and resampled to the model's rate (torchaudio.functional.resample), both logged, then gets the
training features: Kaldi MFCC or fbank as stage 1 made them, CMVN, deltas. CMVN: where training normalised per
speaker, recordings that come with speakers (a data dir's utt2spk) are normalised with their speaker's
statistics, as training did; a single recording without one is normalised with its own (utterance-level CMVN,
what Kaldi's online decoding falls back to as well).

Times: a phone segment spans [start, end) seconds as phonerec.hmm.align_eval times frames (boundaries halfway
between frames, multiples of the frame shift plus a constant offset). Transcription decodes, then aligns the
hypothesis (for words: through each word's first pronunciation) to time it; alignment runs the Viterbi model
through the utterance's HMM graph (optional silence at the edges and between words where hmm.optional_silence
says so, as in training) and the CTC model through torchaudio's forced_align (a CTC token's segment holds the
blank frames after it).

A bundle is data, never code or environment: its YAML and JSON are read as plain data (yaml.safe_load, never
OmegaConf's resolver) and a string holding "${" is refused; config.yaml and decoders.json are checked for the keys
and types the loader reads; the model files' kind and arguments against bundle.json; and every file against the
sha256 that bundle.json recorded when the bundle was made.
"""

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf
import yaml
from omegaconf import DictConfig, OmegaConf

from phonerec.base.errors import RecipeError
from phonerec.base.files import file_digest, write_text_atomic
from phonerec.base.schema import check_values
from phonerec.data.audio import check_audio_file
from phonerec.data.data_dir import UtteranceAudio, read_table, read_utterance_audio
from phonerec.data.dataset import Example, word_ends, word_spellings
from phonerec.data.features import cmvn_stats, compute_features, features_at_load, warn_long_recording
from phonerec.data.lang import (
    Lexicon,
    max_normalised,
    read_id2phone,
    read_lexicon,
    read_pronunciation_probabilities,
    read_silence_phones,
    read_silence_probabilities,
    read_topology,
)
from phonerec.decoding.decoders import Decoder, decoder_class, decoder_names
from phonerec.decoding.hybrid import scaled_log_likelihoods
from phonerec.hmm.align import word_variants
from phonerec.hmm.align_eval import Segment, write_ctm
from phonerec.hmm.fullsum import ctc_min_frames
from phonerec.model.device import resolve_device
from phonerec.model.posteriors import utterance_posteriors
from phonerec.scoring.error_rate import phone_map_columns, read_phone_map
from phonerec.training.checkpoints import load_model as load_trained

log = logging.getLogger(__name__)
BUNDLE_TOP_FILES = ("model.pt", "align_model.pt", "config.yaml", "decoders.json")
PHONE_MAP_FILE = "phone_map.tsv"  # the corpus's phone set folded to the model's (score.phone_map), where it has one
RESULT_FILE = "result.json"  # <exp>/<recipe>/result.json: the model and phone decoder stage 5 chose on dev
MAX_UTTERANCE_SECONDS = 30  # corpus.max_utterance_seconds of a bundle made before its config.yaml held it
REMAKE = "remake it with ./run.sh --stage 6 --stop-stage 6 and the settings of the run that made it"


@dataclass
class Recording:
    utt: str
    samples: np.ndarray  # mono, int16-scaled float32, at the model's sample rate
    path: str
    speaker: str | None = None  # for per-speaker CMVN; None: the recording's own statistics
    recording: str | None = None  # a segment of this recording (a data dir's segments), or None: the whole file
    start: float = 0.0  # where the segment starts in its recording, in seconds


@dataclass
class Transcription:
    """A recording decoded: its phones and words (None without a word decoder) in time, and the decoders."""

    phones: list[Segment]
    phone_decoder: str
    words: list[Segment] | None
    word_decoder: str | None
    duration: float  # seconds of audio
    score: float | None = None  # its phones' alignment's log-likelihood per frame (Aligned.score)
    gap: float | None = None  # and its gap to the free path (Aligned.gap)


@dataclass
class Aligned:
    """A recording's phones and words in time (words None where the model or transcript has none)."""

    phones: list[Segment]
    words: list[Segment] | None
    duration: float  # seconds of audio
    # The alignment's log-likelihood per frame: a Viterbi model's scaled (posteriors / priors, as MFA reports its
    # score), a CTC model's the forced path's log-posteriors; and its gap, how far it lies below the best path free
    # of the transcript, per frame (phonerec.hmm.align_eval.alignment_gap). Below the bundle's floor for the
    # gap, the transcript is suspect.
    score: float | None = None
    gap: float | None = None


def read_recording(
    path: str | Path,
    sample_rate: int,
    utt: str | None = None,
    speaker: str | None = None,
    segment: UtteranceAudio | None = None,
):
    """A Recording of an audio file at `sample_rate`, or of the segment of it that `segment` says: downmixed and
    resampled where needed (logged). A file that is not audio, holds no samples or holds non-finite ones is a
    RecipeError naming it."""
    path = Path(path)
    problem = check_audio_file(path)
    of = f" (utterance '{utt}')" if utt is not None and utt != path.stem else ""  # named by a wav.scp
    if problem and (path.is_dir() or not path.exists()):
        raise RecipeError(f"{path}: {problem}{of}")
    if problem:
        raise RecipeError(f"{path}: not a usable audio file: {problem}{of}")
    span = {}
    if segment is not None:
        rate = sf.info(str(path)).samplerate
        span = {
            "start": round(segment.start * rate),
            "stop": None if segment.end is None else round(segment.end * rate),
        }
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True, **span)
    if not len(samples):
        raise RecipeError(f"{path}: the segment of utterance '{utt}' holds no samples")
    bad = int((~np.isfinite(samples)).sum())
    if bad:
        raise RecipeError(f"{path}: {bad} samples are not finite numbers (NaN or inf)")
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
    if samples.shape[1] > 1:
        log.info("%s: %d channels, downmixed to mono (their mean)", path, samples.shape[1])
    if rate != sample_rate:
        log.info("%s: %d Hz, resampled to the model's %d Hz", path, rate, sample_rate)
        mono = taf.resample(torch.from_numpy(mono), rate, sample_rate).numpy()
    where = {"recording": segment.recording, "start": segment.start} if segment is not None else {}
    return Recording(utt or path.stem, mono * 32768.0, str(path), speaker, **where)  # int16 scale, as Kaldi reads


def load_model(path: str | Path, device: str = "cpu") -> "TrainedModel":
    """The trained model of a model exp dir (<exp>/<recipe>/viterbi or .../ctc, whose stage 6 wrote bundle/), of
    a bundle dir itself, or of a recipe's exp dir (<exp>/<recipe>): the model its stage 5 chose on dev across both
    training phases (RESULT_FILE), whose default phone decoder is then the one chosen with it."""
    path = Path(path)
    if (path / RESULT_FILE).is_file() and not (path / "bundle.json").is_file():
        result = read_bundle_data(path / RESULT_FILE)
        model = result.get("model") if isinstance(result, dict) else None
        if not isinstance(model, str) or not model or "/" in model or model.startswith("."):
            raise RecipeError(f"{path / RESULT_FILE}: 'model' is {model!r}, expected the name of a model dir")
        path = path / model
    for candidate in (path, path / "bundle"):
        if (candidate / "bundle.json").is_file():
            return TrainedModel(candidate, device)
    raise RecipeError(f"{path}: no model bundle (bundle.json) here or in {path / 'bundle'}: run stage 6 of run.sh")


# -- a bundle's files: plain data, checked --------------------------------------------------------------------


def bundle_files(bundle_dir: Path) -> list[str]:
    """The files of a bundle that the loader reads besides bundle.json (paths relative to the bundle), which
    bundle.json's sha256 covers: the models, config.yaml, decoders.json, phone_map.tsv, lang/ and lm/."""
    names = [name for name in (*BUNDLE_TOP_FILES, PHONE_MAP_FILE) if (bundle_dir / name).is_file()]
    for folder in ("lang", "lm"):
        names += sorted(
            f"{folder}/{path.name}"
            for path in (bundle_dir / folder).glob("*")
            if path.is_file() and not path.name.endswith(".tmp")  # a killed atomic write's leftover
        )
    return names


def check_bundle_files(bundle_dir: Path, info: dict) -> None:
    """Every file of the bundle as bundle.json's sha256 recorded it when the bundle was made: none changed,
    missing or added since. A bundle made before the checksums were recorded loads with a warning."""
    recorded = info.get("sha256")
    if recorded is None:
        log.warning(
            "%s/bundle.json records no checksums (an older bundle): its files are not checked; %s", bundle_dir, REMAKE
        )
        return
    for name in sorted(set(bundle_files(bundle_dir)) | set(recorded)):
        path = bundle_dir / name
        if name not in recorded:
            raise RecipeError(f"{path}: added after the bundle was made (bundle.json records no checksum of it)")
        if not path.is_file():
            raise RecipeError(f"{path}: missing (bundle.json records its checksum); {REMAKE}")
        if file_digest(path) != recorded[name]:
            raise RecipeError(f"{path}: changed after the bundle was made (its sha256 is not bundle.json's); {REMAKE}")


def bundle_intact(bundle_dir: Path) -> bool:
    """Whether bundle.json records its files' sha256 and every file still has it: stage 6 remakes a bundle that
    fails this (one made before the checksums, or edited since) even when its settings and inputs are the same."""
    try:
        info = read_bundle_data(bundle_dir / "bundle.json")
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), dict):
            return False
        check_bundle_files(bundle_dir, info)
    except RecipeError:
        return False
    return True


def read_bundle_data(path: Path):
    """A bundle's JSON or YAML file as plain data: YAML through yaml.safe_load (no tags, no Python objects), and
    no key or string holding "${", which OmegaConf would resolve (${oc.env:...} reads the environment,
    ${oc.decode:...} turns a string into another value): a bundle is data, never code or environment."""
    if not path.is_file():
        raise RecipeError(f"{path}: missing; {REMAKE}")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix == ".yaml" else json.loads(text)
    except (yaml.YAMLError, ValueError) as err:
        raise RecipeError(f"{path}: not readable: {' '.join(str(err).split())}") from None
    _refuse_interpolation(data, path, "")
    return data


def _refuse_interpolation(data, path: Path, key: str) -> None:
    if isinstance(data, str) and "${" in data:
        raise RecipeError(
            f"{path}: {key or 'its content'} holds an interpolation ('${{...}}'): refused, a bundle is data"
        )
    if isinstance(data, dict):
        for name, value in data.items():
            where = f"{key}.{name}" if key else str(name)
            if "${" in str(name):
                raise RecipeError(
                    f"{path}: the key {where} holds an interpolation ('${{...}}'): refused, a bundle is data"
                )
            _refuse_interpolation(value, path, where)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _refuse_interpolation(value, path, f"{key}[{index}]")


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# What each key the loader reads must hold: a description (for the error) and its test.
_KINDS = {
    "an integer > 0": lambda v: _integer(v) and v > 0,
    "an integer >= 0": lambda v: _integer(v) and v >= 0,
    "an integer > 0 or null": lambda v: v is None or (_integer(v) and v > 0),
    "a number": _number,
    "a number > 0": lambda v: _number(v) and v > 0,
    "true or false": lambda v: isinstance(v, bool),
    "a mapping": lambda v: isinstance(v, dict),
    "a mapping or absent": lambda v: v is None or isinstance(v, dict),
    "a string": lambda v: isinstance(v, str),
    "viterbi or ctc": lambda v: v in ("viterbi", "ctc"),
    "a mapping of numbers, strings, true or false": lambda v: (
        isinstance(v, dict) and all(_number(x) or isinstance(x, str | bool) for x in v.values())
    ),
}
_ABSENT = object()
# bundle.json: sha256 and model_args are absent from bundles made before they were recorded.
BUNDLE_SCHEMA = {
    "kind": "viterbi or ctc",
    "sha256": "a mapping or absent",
    "model_args": "a mapping or absent",
    "alignment_score_floor": "a mapping or absent",  # (absent from bundles made before it was recorded)
}
# config.yaml: what features, decoders and alignment read (decode's tuning grids are decoders.json's `chosen`): the
# types here, the ranges and names as the recipe's config has them (phonerec.base.schema.check_values).
CONFIG_SCHEMA = {
    "corpus.sample_rate": "an integer > 0",
    "corpus.max_utterance_seconds": "a number > 0",
    "features.type": "a string",
    "features.kaldi": "a mapping of numbers, strings, true or false",
    "features.kaldi.frame_shift": "a number > 0",
    "features.kaldi.frame_length": "a number > 0",
    "features.kaldi.snip_edges": "true or false",
    "features.cmvn": "a string",
    "features.norm_vars": "true or false",
    "features.delta_order": "an integer >= 0",
    "features.delta_window": "an integer > 0",
    "hmm.states_per_phone": "an integer > 0",
    "hmm.optional_silence": "true or false",
    "decode.batch_frames": "an integer > 0",
    "decode.max_batch_utts": "an integer > 0",
    "decode.prior_scale": "a number",  # (>= 0: check_values)
    "decode.lm_order": "an integer > 0",
    "decode.ctc_beam.beam_size": "an integer > 0",
    "decode.ctc_beam.beam_size_token": "an integer > 0 or null",
    "decode.hybrid.beam": "a number > 0",
    "decode.hybrid.batch_frames": "an integer > 0",
    "decode.words.beam_size": "an integer > 0",
}
_DEFAULTS = {"corpus.max_utterance_seconds": MAX_UTTERANCE_SECONDS}  # absent from bundles made before it existed


def _check_schema(data, schema: dict[str, str], path: Path | str):
    """`data` with each key of `schema` (dotted: a.b) holding what its kind says; where a key of _DEFAULTS is
    absent, its default is filled in. A RecipeError names the file and the key."""
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: holds {type(data).__name__}, expected a mapping of keys")
    for key, kind in schema.items():
        *groups, leaf = key.split(".")
        node = data
        for depth, group in enumerate(groups):
            node = node.get(group) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise RecipeError(f"{path}: {'.'.join(groups[: depth + 1])} is no mapping of keys (it holds {key})")
        if leaf not in node and key in _DEFAULTS:
            node[leaf] = _DEFAULTS[key]
        value = node.get(leaf, _ABSENT)
        if value is _ABSENT and not kind.endswith("or absent"):
            raise RecipeError(f"{path}: no key {key} ({kind})")
        if value is not _ABSENT and not _KINDS[kind](value):
            raise RecipeError(f"{path}: {key} is {json.dumps(value, default=str)}, expected {kind}")
    return data


def _check_decoders(decoders, kind: str, bundle_dir: Path) -> dict:
    """decoders.json: at least one decoder, each a decoder there is for a model of this kind with its title,
    metric and the values chosen on dev (numbers); the default phone decoder one of them scored by PER, the
    default word decoder one scored by WER or null."""
    path = bundle_dir / "decoders.json"
    _check_schema(decoders, {"decoders": "a mapping"}, path)
    found = decoders["decoders"]
    if not found:
        raise RecipeError(f"{path}: decoders is empty: a bundle has at least its phone decoder; {REMAKE}")
    for name, entry in found.items():
        if name not in decoder_names(kind):
            raise RecipeError(
                f"{path}: decoders.{name}: no such decoder of a {kind} model ({', '.join(decoder_names(kind))})"
            )
        _check_schema(entry, {"title": "a string", "chosen": "a mapping"}, f"{path}: decoders.{name}")
        metric = decoder_class(kind, name).metric
        if entry.get("metric") != metric:
            raise RecipeError(
                f'{path}: decoders.{name}.metric is {json.dumps(entry.get("metric"), default=str)}, expected "{metric}"'
            )
        for key, value in entry["chosen"].items():
            if not _number(value):
                raise RecipeError(
                    f"{path}: decoders.{name}.chosen.{key} is {json.dumps(value, default=str)}, expected a number"
                )
    for key, metric in (("default_phones", "per"), ("default_words", "wer")):
        name = decoders.get(key, _ABSENT)
        if name is None and metric == "wer":
            continue
        if not isinstance(name, str) or name not in found or found[name]["metric"] != metric:
            names = [n for n, d in found.items() if d["metric"] == metric]
            what = "one of " + ", ".join(names) if names else "null" if metric == "wer" else "a phone decoder"
            shown = "absent" if name is _ABSENT else json.dumps(name, default=str)
            raise RecipeError(f"{path}: {key} is {shown}, expected {what}")
    return decoders


class TrainedModel:
    """A bundle loaded: the model (and a Viterbi model's alignment model), its lang dir, LMs, settings and
    decoders."""

    def __init__(self, bundle_dir: Path, device: str = "cpu"):
        self.dir = Path(bundle_dir)
        self.info = _check_schema(read_bundle_data(self.dir / "bundle.json"), BUNDLE_SCHEMA, self.dir / "bundle.json")
        check_bundle_files(self.dir, self.info)
        self.kind: str = self.info["kind"]
        config = _check_schema(read_bundle_data(self.dir / "config.yaml"), CONFIG_SCHEMA, self.dir / "config.yaml")
        if self.info.get("sample_rate", config["corpus"]["sample_rate"]) != config["corpus"]["sample_rate"]:
            raise RecipeError(f"{self.dir}/config.yaml: corpus.sample_rate is not bundle.json's sample_rate")
        self.decoders = _check_decoders(read_bundle_data(self.dir / "decoders.json"), self.kind, self.dir)
        # No string of config holds "${" (read_bundle_data), so OmegaConf has nothing to resolve in it.
        self.cfg: DictConfig = OmegaConf.create(config)
        check_values(self.cfg, f"{self.dir}/config.yaml")
        OmegaConf.update(self.cfg, "train.device", device, force_add=True)  # where decoders put the model
        self.device = resolve_device(device)
        self.sample_rate: int = self.cfg.corpus.sample_rate
        self.max_utterance_seconds: float = self.cfg.corpus.max_utterance_seconds
        self.lang_dir, self.lm_dir = self.dir / "lang", self.dir / "lm"
        self.id2phone = read_id2phone(self.lang_dir)
        self.phone2id = {p: i for i, p in self.id2phone.items()}
        self.lexicon = read_lexicon(self.lang_dir / "lexicon.txt")
        # hmm.pronunciations=variants (bundles made before it have no such key): words aligned through every
        # pronunciation, weighted by lang/lexiconp.txt's probabilities where the bundle has them
        self.variants = self.cfg.hmm.get("pronunciations", "first") == "variants"
        # The corpus's own phone labels (TIMIT's 61) folded to the model's, where the bundle has the table.
        self.corpus_phones: dict[str, str | None] | None = None
        if (self.dir / PHONE_MAP_FILE).is_file():
            table = self.dir / PHONE_MAP_FILE
            self.corpus_phones = read_phone_map(table, phone_map_columns(table)[0], self.cfg.score.fold_from)
        floor = self.info.get("alignment_score_floor")
        if floor is not None and not _number(floor.get("value")):
            raise RecipeError(
                f"{self.dir}/bundle.json: alignment_score_floor.value is {floor.get('value')!r}, not a number"
            )
        self.score_floor: dict | None = floor
        self.model, self.checkpoint = self._load_model_file(self.dir / "model.pt")
        self.model.to(self.device)
        align_file = self.dir / "align_model.pt"
        self.align_model, self.align_checkpoint = (
            self._load_model_file(align_file) if align_file.is_file() else (self.model, self.checkpoint)
        )
        self.align_model.to(self.device)
        # hmm.pronunciation_probs=estimated: the alignment model's own, in place of the lexicon's where it has them
        estimated = self.align_checkpoint.get("task", {}).get("pronunciation_probs")
        self.probabilities = read_pronunciation_probabilities(self.lang_dir, self.lexicon, estimated)
        self.silence_probabilities = read_silence_probabilities(self.lang_dir)
        for word, probs in (self.align_checkpoint.get("task", {}).get("silence_probs") or {}).items():
            for pron, values in probs.items():  # estimated with the model: in place of the lexicon's
                self.silence_probabilities[word, tuple(pron.split())] = tuple(values)

    def _load_model_file(self, path: Path):
        """A model file of the bundle: its kind and arguments those bundle.json records (where it records them,
        as bundles made since the checksums do), its weights of the shape its arguments say, and its outputs
        those of the lang dir (HMM states, or CTC's blank and phones)."""
        try:
            model, checkpoint = load_trained(path)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RecipeError(f"{path}: not a model this bundle can load: {first}") from None
        if checkpoint.get("kind") != self.kind:
            raise RecipeError(f"{path}: a {checkpoint.get('kind')} model, bundle.json says {self.kind}")
        args, recorded = checkpoint["model_args"], self.info.get("model_args")
        if recorded is not None and args != recorded:
            differ = ", ".join(
                f"{k} {args.get(k)} (bundle.json: {recorded.get(k)})"
                for k in sorted(args | recorded)
                if args.get(k) != recorded.get(k)
            )
            raise RecipeError(f"{path}: model arguments differ from bundle.json's: {differ}")
        if self.kind == "ctc":
            outputs = 1 + (args["num_outputs"] - 1) // args.get("pool_states", 1)  # pooled states: one per phone
            expected, what = len(self.id2phone), f"{self.lang_dir}/phones.txt has {len(self.id2phone)} (blank first)"
        else:
            expected = read_topology(self.lang_dir, self.cfg).num_states
            outputs, what = args["num_outputs"], f"{self.lang_dir}/states.txt has {expected} HMM states"
        if outputs != expected:
            raise RecipeError(f"{path}: {outputs} outputs, {what}: the model is not of this bundle")
        return model, checkpoint

    # -- features and posteriors ----------------------------------------------------------------------------

    def features(self, recordings: list[Recording]) -> list[torch.Tensor]:
        """The features training saw: static features, CMVN (per speaker where training normalised per speaker
        and the recording has one, else its own statistics), deltas."""
        fcfg = self.cfg.features
        statics = []
        for rec in recordings:
            try:
                statics.append(compute_features(rec.samples, self.sample_rate, fcfg).numpy())
            except RecipeError as err:
                raise RecipeError(f"{rec.path}: {err}") from None
        by_speaker = fcfg.cmvn == "speaker"
        keys = [("speaker", rec.speaker) if by_speaker and rec.speaker else ("utt", rec.utt) for rec in recordings]
        stats = {}
        for key, feats in zip(keys, statics, strict=True):
            stats[key] = stats.get(key, 0) + cmvn_stats(feats)
        loaded = []
        for rec, key, feats in zip(recordings, keys, statics, strict=True):
            where = f"{rec.path} (utterance '{rec.utt}')"
            loaded.append(features_at_load(feats, stats[key] if fcfg.cmvn != "none" else None, fcfg, where))
        return [torch.from_numpy(feats) for feats in loaded]

    def _posteriors(self, model, examples: list[Example]) -> list[torch.Tensor]:
        dcfg = self.cfg.decode
        with torch.no_grad():
            batches = utterance_posteriors(model, examples, dcfg.batch_frames, dcfg.max_batch_utts)
            found = {e.utt: lp.cpu() for e, lp in batches}
        return [found[e.utt] for e in examples]

    def _examples(self, recordings: list[Recording]) -> list[Example]:
        for rec in recordings:
            seconds = len(rec.samples) / self.sample_rate
            if seconds > self.max_utterance_seconds:
                warn_long_recording(str(rec.path), seconds, self.max_utterance_seconds)
        feats = self.features(recordings)
        if feats and feats[0].shape[1] != self.model.input_dim:
            raise RecipeError(
                f"{self.dir}/config.yaml: its features have {feats[0].shape[1]} dimensions, "
                f"{self.dir}/model.pt takes {self.model.input_dim}: the model is not of this bundle"
            )
        return [Example(r.utt, r.speaker or r.utt, f, [], None) for r, f in zip(recordings, feats, strict=True)]

    def _decoder(self, name: str, checkpoint: dict | None = None) -> Decoder:
        decoder = decoder_class(self.kind, name)
        return decoder(self.cfg, self.lang_dir, self.lm_dir, checkpoint or self.checkpoint)

    def log_likelihoods(self, recordings: list[Recording]) -> list[torch.Tensor]:
        """A Viterbi model's frame log-likelihoods, as a Kaldi decoder reads them (nnet3-compute's output):
        log-posteriors minus decode.prior_scale x the log state priors, one column per HMM state in
        lang/states.txt's order, at the model's frame rate. A CTC model's outputs are no HMM state scores: refused."""
        if self.kind != "viterbi":
            raise RecipeError(f"{self.dir}: a {self.kind} model; HMM state log-likelihoods come from a Viterbi model")
        examples = self._examples(recordings)
        priors = self.checkpoint["task"].get("log_priors")
        return [
            scaled_log_likelihoods(lp, priors, self.cfg.decode.prior_scale)
            for lp in self._posteriors(self.model, examples)
        ]

    # -- transcription ----------------------------------------------------------------------------------------

    def transcribe(
        self, recordings: list[Recording], phone_decoder: str | None = None, word_decoder: str | None = None
    ) -> dict[str, Transcription]:
        """Each recording decoded into phones and, where the model has a word decoder, words, each timed by
        aligning the hypothesis. The decoders: names of decoders.json; by default the phone decoder of the
        lowest dev PER and the word decoder of the lowest dev WER."""
        phone_decoder = phone_decoder or self.decoders["default_phones"]
        word_decoder = word_decoder or self.decoders["default_words"]
        examples = self._examples(recordings)
        posteriors = self._posteriors(self.model, examples)
        phones = self._hypotheses(phone_decoder, "per", examples, posteriors)
        # Its own hypotheses, timed: in the model's phones already (no folding, no silence added), and not checked
        # against the floor, which is for transcripts given to it.
        spelled = [
            (_phone_ids(h, self.phone2id, r.path), None, None, None) for r, h in zip(recordings, phones, strict=True)
        ]
        timed = self.align_spelled(recordings, spelled, examples, posteriors)
        words = {}
        if word_decoder is not None:
            hyps = self._hypotheses(word_decoder, "wer", examples, posteriors)
            words = self.align(recordings, hyps, True, examples, posteriors, check_scores=False)
        return {
            rec.utt: Transcription(
                timed[rec.utt].phones,
                self.decoders["decoders"][phone_decoder]["title"],
                words[rec.utt].words if words else None,
                self.decoders["decoders"][word_decoder]["title"] if words else None,
                timed[rec.utt].duration,
                timed[rec.utt].score,
                timed[rec.utt].gap,
            )
            for rec in recordings
        }

    def _hypotheses(self, name: str, metric: str, examples, posteriors) -> list[list[str]]:
        """Each example's phones (metric per) or words (wer) by the decoder `name` at the values chosen on dev."""
        entry = self.decoders["decoders"].get(name)
        if entry is None or entry["metric"] != metric:
            kinds = [n for n, d in self.decoders["decoders"].items() if d["metric"] == metric]
            what = "phone" if metric == "per" else "word"
            raise RecipeError(f"no {what} decoder '{name}' in {self.dir}/decoders.json (there are: {', '.join(kinds)})")
        hyps = self._decoder(name).decode(entry["chosen"], examples, posteriors)
        return [hyps[e.utt] for e in examples]

    # -- alignment --------------------------------------------------------------------------------------------

    def align(
        self,
        recordings: list[Recording],
        transcripts: list[list[str]],
        words: bool = True,
        examples: list[Example] | None = None,
        posteriors: list[torch.Tensor] | None = None,
        lexicon: Lexicon | None = None,
        unaligned: dict[str, str] | None = None,
        check_scores: bool = True,
    ) -> dict[str, Aligned]:
        """Each recording force-aligned with its transcript (a list of words, or a string of them separated by
        spaces): words (through the first pronunciation of each in `lexicon`, by default the model's) or phones.
        A word the lexicon lacks, a phone the model lacks, or a recording too short for its transcript is a
        RecipeError naming the recording, or with `unaligned` entered there with the reason. With `check_scores`,
        alignments scoring below the bundle's floor are warned about (check_scores)."""
        lexicon = self.lexicon if lexicon is None else lexicon
        transcripts = _word_lists(transcripts, len(recordings))
        spelled = [self._spell(t, words, r.path, lexicon) for r, t in zip(recordings, transcripts, strict=True)]
        aligned = self.align_spelled(recordings, spelled, examples, posteriors, unaligned)
        if check_scores:
            self.check_scores(aligned)
        return aligned

    def check_scores(self, aligned: dict[str, Aligned]) -> list[str]:
        """The utterances whose alignment lies further below the free path than the bundle's floor allows (the 1st
        percentile of dev's own transcripts' gaps, phonerec.pipeline.bundle_stage), warned about: a transcript that
        does not fit the recording aligns, but badly. Bundles made before the floor was recorded check nothing."""
        if self.score_floor is None:
            return []
        floor = self.score_floor["value"]
        low = {utt: a.gap for utt, a in aligned.items() if a.gap is not None and a.gap < floor}
        if low:
            named = ", ".join(f"{utt} {gap:.3f}" for utt, gap in list(low.items())[:10])
            more = f" and {len(low) - 10} more" if len(low) > 10 else ""
            log.warning(
                "%d of %d alignments lie further below the free path than %.3f per frame, the %s percentile of the "
                "model's (%s): %s%s; is the transcript right?",
                *(len(low), len(aligned), floor, _ordinal(self.score_floor["percentile"]), self.score_floor["of"]),
                *(named, more),
            )
        return sorted(low)

    def align_spelled(
        self,
        recordings: list[Recording],
        spelled: list[tuple[list[int], list[int] | None, list[str] | None]],
        examples: list[Example] | None = None,
        posteriors: list[torch.Tensor] | None = None,
        unaligned: dict[str, str] | None = None,
    ) -> dict[str, Aligned]:
        """`align` of transcripts already spelled: (phone ids, where words end in them, the words) each; a data
        dir gives its phones (text) and words (text.words) so. A recording that cannot be aligned is a RecipeError,
        or with `unaligned` left out and entered there with the reason (a whole corpus aligned)."""
        if examples is None:
            examples = self._examples(recordings)
        for example, (phones, ends, _, pronunciations) in zip(examples, spelled, strict=True):
            example.phones, example.word_ends, example.pronunciations = phones, ends, pronunciations
        if self.align_model is not self.model or posteriors is None:
            posteriors = self._posteriors(self.align_model, examples)
        aligner = self._decoder("greedy", self.align_checkpoint)
        nonempty = [k for k, e in enumerate(examples) if e.phones]
        found, scores, choices = aligner.scored_alignments(
            [examples[k] for k in nonempty], [posteriors[k] for k in nonempty]
        )
        aligned = {}
        for example, rec, lp, (phones, ends, word_list, _) in zip(
            examples, recordings, posteriors, spelled, strict=True
        ):
            duration = len(rec.samples) / self.sample_rate
            if not phones:
                aligned[example.utt] = Aligned([], [] if word_list is not None else None, duration)
                continue
            if example.utt not in found:
                need = ctc_min_frames(phones) if self.kind == "ctc" else len(phones) * self.cfg.hmm.states_per_phone
                reason = (
                    f"{len(lp)} frames ({duration:.2f} s) cannot hold the {len(phones)} phones of "
                    f"'{' '.join(word_list or [self.id2phone[p] for p in phones])}' (needs {need} frames)"
                )
                if unaligned is None:
                    raise RecipeError(f"{rec.path}: {reason}")
                unaligned[example.utt] = reason
                continue
            segments = found[example.utt]
            if example.utt in choices:  # the word ends of the pronunciations the path chose
                lengths = [
                    len(prons[k].phones) for prons, k in zip(example.pronunciations, choices[example.utt], strict=True)
                ]
                ends = [end - 1 for end in accumulate(lengths)]
            word_segments = None if word_list is None else _word_segments(segments, ends, word_list)
            aligned[example.utt] = Aligned(
                [seg for seg, _ in segments], word_segments, duration, *scores.get(example.utt, (None, None))
            )
        return aligned

    def spell_words(self, phones: list[str], words: list[str] | None, where: str):
        """A transcript given as phones and as words (a data dir's text and text.words): (phone ids, word ends,
        words, every pronunciation of each word or None), the word ends found through any of the lexicon's
        pronunciations; without words (None), the phones alone."""
        if words is None:
            return _phone_ids(phones, self.phone2id, where), None, None, None
        ends = word_ends(words, phones, self.lexicon)
        if ends is None:
            raise RecipeError(f"{where}: the phones '{' '.join(phones)}' do not spell the words '{' '.join(words)}'")
        variants = self._variants(words, self.lexicon, where, word_spellings(phones, ends))
        return _phone_ids(phones, self.phone2id, where), ends, words, variants

    def _spell(self, transcript: list[str], words: bool, where: str, lexicon: Lexicon) -> tuple:
        """(phone ids, word ends, the words, every pronunciation of each word or None) of a transcript of words
        (first pronunciations) or of phones."""
        if not words:
            return _phone_ids(self._model_phones(transcript, where), self.phone2id, where), None, None, None
        phones, ends = [], []
        for word in transcript:
            phones += _phone_ids(lexicon.pronunciations(word, where)[0], self.phone2id, where)
            ends.append(len(phones) - 1)
        return phones, ends, list(transcript), self._variants(transcript, lexicon, where)

    def _model_phones(self, phones: list[str], where: str) -> list[str]:
        """A phone transcript in the model's phones: labels of the corpus's own set that the model lacks (TIMIT's
        61: dcl, h#, ...) folded as training's were (the bundle's phone_map.tsv; equal neighbours merged, `q`
        dropped); and, where the model was trained on transcripts with silence at their edges and graphs without
        optional silence (hmm.optional_silence=false, TIMIT's h#), `sil` added at an edge that lacks it."""
        foreign = [p for p in phones if p not in self.phone2id]
        if foreign and self.corpus_phones is not None and all(p in self.corpus_phones for p in foreign):
            folded = [p if p in self.phone2id else self.corpus_phones[p] for p in phones]
            phones = [p for k, p in enumerate(folded) if p is not None and (k == 0 or p != folded[k - 1])]
            log.info("%s: the corpus's phones folded to the model's (%s): %s", where, PHONE_MAP_FILE, " ".join(phones))
        silence = read_silence_phones(self.lang_dir)[0]
        if phones and not self.cfg.hmm.optional_silence and silence in self.phone2id:
            start, end = ([] if phone == silence else [silence] for phone in (phones[0], phones[-1]))
            if start or end:
                phones = start + phones + end
                edges = " and ".join(e for e, added in (("start", start), ("end", end)) if added)
                log.info(
                    "%s: %s added at its %s, as the model's training transcripts have it (hmm.optional_silence=false)",
                    *(where, silence, edges),
                )
        return phones

    def _variants(self, words: list[str], lexicon: Lexicon, where: str, spelled=None):
        """With hmm.pronunciations=variants, every pronunciation of each word in `lexicon` (the bundle's weighted
        by its lexiconp.txt, another's by its own probabilities, max-normalised, where it has them), the spelled
        one first; None otherwise."""
        if not self.variants:
            return None
        if lexicon is self.lexicon:
            probabilities, silence = self.probabilities, self.silence_probabilities
        else:  # (its silence probabilities are not read: the transitions' P(silence))
            probabilities = max_normalised(lexicon.probabilities) or None
            silence = None
        for word in words:
            for pron in lexicon[word]:
                _phone_ids(pron, self.phone2id, where)  # a phone the model lacks, named
        return word_variants(words, lexicon, self.phone2id, probabilities, spelled, silence)


def _ordinal(n) -> str:
    return f"{n}{'st' if n == 1 else 'nd' if n == 2 else 'rd' if n == 3 else 'th'}"


def _word_lists(transcripts, count: int) -> list[list[str]]:
    """align's transcripts, one per recording, each a list of words or a string of them separated by spaces."""
    if isinstance(transcripts, str) or not isinstance(transcripts, Sequence):
        raise TypeError(
            f"transcripts: a list of one transcript per recording (a list of words or a string), got "
            f"{type(transcripts).__name__} {transcripts!r:.60}"
        )
    if len(transcripts) != count:
        raise ValueError(f"transcripts: {len(transcripts)} for {count} recordings; give one per recording")
    lists = [t.split() if isinstance(t, str) else t for t in transcripts]
    for k, words in enumerate(lists):
        if not isinstance(words, Sequence) or not all(isinstance(w, str) for w in words):
            raise TypeError(f"transcripts[{k}]: a list of words or a string of them, got {words!r:.60}")
    return [list(words) for words in lists]


def _phone_ids(phones: list[str], phone2id: dict[str, int], where: str) -> list[int]:
    unknown = sorted({p for p in phones if p not in phone2id or phone2id[p] == 0})
    if unknown:
        raise RecipeError(f"{where}: phones the model does not have: {', '.join(unknown)}")
    return [phone2id[p] for p in phones]


def _word_segments(segments: list[tuple[Segment, int | None]], ends: list[int], words: list[str]) -> list[Segment]:
    """Word segments from the phone segments of an alignment (each with the index of its transcript phone):
    a word spans its first phone's start to its last phone's end."""
    first_phone = [0] + [end + 1 for end in ends[:-1]]
    by_slot = {slot: seg for seg, slot in segments if slot is not None}
    return [
        Segment(by_slot[first].start, by_slot[last].end, word)
        for word, first, last in zip(words, first_phone, ends, strict=True)
    ]


# -- output: Kaldi CTM and Praat TextGrid -------------------------------------------------------------------------


def write_textgrid(path: Path, aligned: Aligned) -> None:
    """A Praat TextGrid (praatio, the long text format) with the interval tiers "words" and "phones"; the time
    between segments (silence between words) stays an empty interval."""
    _write_tiers(path, [("words", aligned.words or []), ("phones", aligned.phones)], aligned.duration)


def _write_tiers(path: Path, tiers: list[tuple[str, list[Segment]]], duration: float) -> None:
    """A TextGrid of interval tiers (name, segments) over [0, duration] (or to the last segment's end)."""
    from praatio import textgrid

    end = max([duration] + [seg.end for _, segments in tiers for seg in segments])
    grid = textgrid.Textgrid()
    for name, segments in tiers:
        entries = [
            (round(seg.start, 6), round(seg.end, 6), seg.label)
            for seg in sorted(segments, key=lambda seg: (seg.start, seg.end))
        ]
        grid.addTier(textgrid.IntervalTier(name, entries, 0.0, end))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    grid.save(str(tmp), format="long_textgrid", includeBlankSpaces=True)
    tmp.replace(path)


def write_alignments(
    out_dir: Path, aligned: dict[str, "Aligned | Transcription"], recordings: list[Recording] = ()
) -> list[str]:
    """out_dir/phones.ctm, words.ctm (where there are words) and textgrid/<utt>.TextGrid, in each utterance's
    timeline; where `recordings` has segments of longer recordings (a data dir's segments), also
    phones.recording.ctm and words.recording.ctm in the recordings' timeline (`<recording> 1 <start> <dur> <label>`,
    as Kaldi's steps/conf/convert_ctm.pl writes them); alignment_scores.tsv (each utterance's span and alignment
    score) where there are scores. Returns the names written, for the log."""
    words = {utt: a.words for utt, a in aligned.items() if a.words is not None}
    written = ["phones.ctm"]
    write_ctm(out_dir / "phones.ctm", {utt: a.phones for utt, a in aligned.items()})
    if words:
        write_ctm(out_dir / "words.ctm", words)
        written.append("words.ctm")
    for utt, a in aligned.items():
        write_textgrid(out_dir / "textgrid" / f"{utt}.TextGrid", a)
    written.append("textgrid/")
    if any(a.score is not None for a in aligned.values()):  # (hand labels have none)
        write_text_atomic(out_dir / "alignment_scores.tsv", _score_rows(aligned, {rec.utt: rec for rec in recordings}))
        written.append("alignment_scores.tsv")
    segments = {rec.utt: rec for rec in recordings if rec.recording is not None and rec.utt in aligned}
    if segments:
        for name, by_utt in (("phones", {utt: a.phones for utt, a in aligned.items()}), ("words", words)):
            if by_utt:
                write_ctm(out_dir / f"{name}.recording.ctm", _in_recordings(by_utt, segments))
                written.append(f"{name}.recording.ctm")
    return written


def _in_recordings(by_utt: dict[str, list[Segment]], segments: dict[str, Recording]) -> dict[str, list[Segment]]:
    """Segments of utterances moved into the timeline of the recordings they are segments of (a recording that is
    not a segment is a recording of its own, named by its utterance)."""
    by_recording = {}
    for utt, found in by_utt.items():
        if utt in segments:
            rec = segments[utt]
            shifted = [Segment(s.start + rec.start, s.end + rec.start, s.label) for s in found]
            by_recording.setdefault(rec.recording or rec.utt, []).extend(shifted)
    return by_recording


def write_corpus_alignments(
    out_dir: Path,
    aligned: dict[str, Aligned],
    recordings: list[Recording],
    layout: dict[str, str],
    unaligned: dict[str, str],
) -> None:
    """A corpus aligned, as MFA writes it: out_dir/textgrids/<path>.TextGrid for each recording (`layout`: recording
    -> its path under the corpus folder without the extension, else the recording id), with the tiers "words" and
    "phones", or "<speaker> - words" and "<speaker> - phones" for each speaker where a recording holds several
    utterances; phones.ctm and words.ctm in the recordings' timeline; unaligned.txt (`<utterance> <reason>`); and
    alignment_scores.tsv (each aligned utterance's span and log-likelihood per frame)."""
    by_utt = {rec.utt: rec for rec in recordings}
    by_recording: dict[str, list[Recording]] = {}
    for rec in recordings:
        if rec.utt in aligned:
            by_recording.setdefault(rec.recording or rec.utt, []).append(rec)
    for recording, recs in by_recording.items():
        speakers = sorted({r.speaker or "speaker" for r in recs})
        several = len(recs) > 1 or recs[0].recording is not None
        tiers = []
        for speaker in speakers:
            mine = [r for r in recs if (r.speaker or "speaker") == speaker]
            for name in ("words", "phones"):
                segments = [
                    Segment(s.start + r.start, s.end + r.start, s.label)
                    for r in mine
                    for s in (getattr(aligned[r.utt], name) or [])
                ]
                tiers.append((f"{speaker} - {name}" if several else name, segments))
        duration = sf.info(recs[0].path).duration if several else aligned[recs[0].utt].duration
        _write_tiers(out_dir / "textgrids" / f"{layout.get(recording, recording)}.TextGrid", tiers, duration)
    words = {utt: a.words for utt, a in aligned.items() if a.words is not None}
    write_ctm(out_dir / "phones.ctm", _in_recordings({u: a.phones for u, a in aligned.items()}, by_utt))
    write_ctm(out_dir / "words.ctm", _in_recordings(words, by_utt))
    write_text_atomic(out_dir / "unaligned.txt", "".join(f"{utt} {why}\n" for utt, why in sorted(unaligned.items())))
    write_text_atomic(out_dir / "alignment_scores.tsv", _score_rows(aligned, by_utt))


def _score_rows(aligned: dict[str, "Aligned | Transcription"], by_utt: dict[str, Recording]) -> str:
    """alignment_scores.tsv: each utterance's recording, speaker, span in it, alignment score and gap (Aligned),
    - where there is none."""
    rows = ["utterance\trecording\tspeaker\tbegin\tend\tlog_likelihood_per_frame\tgap_to_free_path_per_frame\n"]
    for utt in sorted(aligned):
        rec, found = by_utt.get(utt), aligned[utt]
        start = rec.start if rec is not None else 0.0
        score, gap = ("-" if x is None else f"{x:.4f}" for x in (found.score, getattr(found, "gap", None)))
        rows.append(
            f"{utt}\t{(rec and rec.recording) or utt}\t{(rec and rec.speaker) or '-'}\t{start:.4f}\t"
            f"{start + found.duration:.4f}\t{score}\t{gap}\n"
        )
    return "".join(rows)


# -- input: audio files, a wav.scp or a data dir --------------------------------------------------------------


def read_recordings(
    sample_rate: int, wavs: list[Path] = (), wav_scp: Path | None = None, data_dir: Path | None = None
) -> list[Recording]:
    """Recordings of audio files (each named by its file name without the extension), of a wav.scp, or of a data
    dir's wav.scp and segments (with its speakers, utt2spk, for per-speaker CMVN). Pipes in a wav.scp are refused,
    naming the line: they would run commands from a file (run.sh's stage 0 runs them with corpus.allow_pipes)."""
    entries: list[tuple[str, str, str | None, UtteranceAudio | None]] = []  # (utterance, path, speaker, segment)
    if data_dir is not None:
        if not (data_dir / "wav.scp").is_file():
            raise RecipeError(f"{data_dir / 'wav.scp'}: no such file")
        _refuse_pipes(data_dir / "wav.scp")
        speakers = read_table(data_dir / "utt2spk") if (data_dir / "utt2spk").is_file() else {}
        segmented = (data_dir / "segments").is_file()
        for utt, audio in read_utterance_audio(data_dir).items():
            entries.append((utt, audio.path, speakers.get(utt), audio if segmented else None))
    if wav_scp is not None:
        if not wav_scp.is_file():
            raise RecipeError(f"{wav_scp}: no such file")
        _refuse_pipes(wav_scp)
        entries += [(utt, path, None, None) for utt, path in read_table(wav_scp).items()]
    entries += [(Path(w).stem, str(w), None, None) for w in wavs]
    repeated = sorted(u for u, n in Counter(entry[0] for entry in entries).items() if n > 1)
    if repeated:
        raise RecipeError(f"recordings with the same name: {', '.join(repeated)} (utterance ids must be unique)")
    if not entries:
        raise RecipeError("no recordings: give audio files, --wav-scp or --data-dir")
    return [read_recording(path, sample_rate, utt, speaker, segment) for utt, path, speaker, segment in entries]


def _refuse_pipes(wav_scp: Path) -> None:
    with open(wav_scp, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.rstrip().endswith("|"):
                raise RecipeError(
                    f"{wav_scp}:{lineno}: a pipe (a command to run), which the model tools do not run: give audio "
                    "files (run.sh's stage 0 runs the pipes of a corpus with corpus.allow_pipes=true, into files)"
                )
