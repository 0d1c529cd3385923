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
"""

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf
from omegaconf import DictConfig, OmegaConf

from phonerec.data.audio import check_audio_file
from phonerec.data.data_dir import read_table
from phonerec.data.dataset import Example, word_ends
from phonerec.data.lang import read_lexicon
from phonerec.decoding.decoders import Decoder, decoder_class
from phonerec.decoding.hybrid import scaled_log_likelihoods
from phonerec.features import cmvn_stats, compute_features, features_at_load
from phonerec.hmm.align_eval import Segment, write_ctm
from phonerec.model.posteriors import utterance_posteriors
from phonerec.pipeline.errors import RecipeError
from phonerec.pipeline.recipe import read_id2phone
from phonerec.training.checkpoints import load_model as load_trained
from phonerec.training.ctc import ctc_min_frames
from phonerec.training.device import resolve_device

log = logging.getLogger(__name__)


@dataclass
class Recording:
    utt: str
    samples: np.ndarray  # mono, int16-scaled float32, at the model's sample rate
    path: str
    speaker: str | None = None  # for per-speaker CMVN; None: the recording's own statistics


@dataclass
class Transcription:
    """A recording decoded: its phones and words (None without a word decoder) in time, and the decoders."""

    phones: list[Segment]
    phone_decoder: str
    words: list[Segment] | None
    word_decoder: str | None
    duration: float  # seconds of audio


@dataclass
class Aligned:
    """A recording's phones and words in time (words None where the model or transcript has none)."""

    phones: list[Segment]
    words: list[Segment] | None
    duration: float  # seconds of audio


def read_recording(path: str | Path, sample_rate: int, utt: str | None = None, speaker: str | None = None):
    """A Recording of an audio file at `sample_rate`: downmixed and resampled where needed (logged). A file
    that is not audio, holds no samples or holds non-finite ones is a RecipeError naming it."""
    path = Path(path)
    problem = check_audio_file(path)
    if problem:
        raise RecipeError(f"{path}: not a usable audio file: {problem}")
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    bad = int((~np.isfinite(samples)).sum())
    if bad:
        raise RecipeError(f"{path}: {bad} samples are not finite numbers (NaN or inf)")
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
    if samples.shape[1] > 1:
        log.info("%s: %d channels, downmixed to mono (their mean)", path, samples.shape[1])
    if rate != sample_rate:
        log.info("%s: %d Hz, resampled to the model's %d Hz", path, rate, sample_rate)
        mono = taf.resample(torch.from_numpy(mono), rate, sample_rate).numpy()
    return Recording(utt or path.stem, mono * 32768.0, str(path), speaker)  # int16 scale, as Kaldi reads audio


def load_model(path: str | Path, device: str = "cpu") -> "TrainedModel":
    """The trained model of a model exp dir (<exp>/<recipe>/viterbi or .../ctc, whose stage 6 wrote bundle/) or
    of a bundle dir itself."""
    path = Path(path)
    for candidate in (path, path / "bundle"):
        if (candidate / "bundle.json").is_file():
            return TrainedModel(candidate, device)
    raise RecipeError(f"{path}: no model bundle (bundle.json) here or in {path / 'bundle'}: run stage 6 of run.sh")


class TrainedModel:
    """A bundle loaded: the model (and a Viterbi model's alignment model), its lang dir, LMs, settings and
    decoders."""

    def __init__(self, bundle_dir: Path, device: str = "cpu"):
        self.dir = Path(bundle_dir)
        self.info = json.loads((self.dir / "bundle.json").read_text())
        self.decoders = json.loads((self.dir / "decoders.json").read_text())
        self.cfg: DictConfig = OmegaConf.load(self.dir / "config.yaml")
        OmegaConf.update(self.cfg, "train.device", device, force_add=True)  # where decoders put the model
        self.device = resolve_device(device)
        self.model, self.checkpoint = load_trained(self.dir / "model.pt")
        self.model.to(self.device)
        self.kind: str = self.checkpoint["kind"]
        self.sample_rate: int = self.cfg.corpus.sample_rate
        align_file = self.dir / "align_model.pt"
        self.align_model, self.align_checkpoint = (
            load_trained(align_file) if align_file.is_file() else (self.model, self.checkpoint)
        )
        self.align_model.to(self.device)
        self.lang_dir, self.lm_dir = self.dir / "lang", self.dir / "lm"
        self.id2phone = read_id2phone(self.lang_dir)
        self.phone2id = {p: i for i, p in self.id2phone.items()}
        self.lexicon = read_lexicon(self.lang_dir / "lexicon.txt")

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
        return [
            torch.from_numpy(features_at_load(feats, stats[key] if fcfg.cmvn != "none" else None, fcfg))
            for key, feats in zip(keys, statics, strict=True)
        ]

    def _posteriors(self, model, examples: list[Example]) -> list[torch.Tensor]:
        dcfg = self.cfg.decode
        with torch.no_grad():
            batches = utterance_posteriors(model, examples, dcfg.batch_frames, dcfg.max_batch_utts)
            found = {e.utt: lp.cpu() for e, lp in batches}
        return [found[e.utt] for e in examples]

    def _examples(self, recordings: list[Recording]) -> list[Example]:
        feats = self.features(recordings)
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
        timed = self.align(recordings, phones, words=False, examples=examples, posteriors=posteriors)
        words = {}
        if word_decoder is not None:
            hyps = self._hypotheses(word_decoder, "wer", examples, posteriors)
            words = self.align(recordings, hyps, words=True, examples=examples, posteriors=posteriors)
        return {
            rec.utt: Transcription(
                timed[rec.utt].phones,
                self.decoders["decoders"][phone_decoder]["title"],
                words[rec.utt].words if words else None,
                self.decoders["decoders"][word_decoder]["title"] if words else None,
                timed[rec.utt].duration,
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
    ) -> dict[str, Aligned]:
        """Each recording force-aligned with its transcript: words (through the lexicon's first pronunciation of
        each) or phones. A word the lexicon lacks, a phone the model lacks, or a recording too short for its
        transcript is a RecipeError naming the recording."""
        spelled = [self._spell(t, words, r.path) for r, t in zip(recordings, transcripts, strict=True)]
        return self.align_spelled(recordings, spelled, examples, posteriors)

    def align_spelled(
        self,
        recordings: list[Recording],
        spelled: list[tuple[list[int], list[int] | None, list[str] | None]],
        examples: list[Example] | None = None,
        posteriors: list[torch.Tensor] | None = None,
    ) -> dict[str, Aligned]:
        """`align` of transcripts already spelled: (phone ids, where words end in them, the words) each; a data
        dir gives its phones (text) and words (text.words) so."""
        if examples is None:
            examples = self._examples(recordings)
        for example, (phones, ends, _) in zip(examples, spelled, strict=True):
            example.phones, example.word_ends = phones, ends
        if self.align_model is not self.model or posteriors is None:
            posteriors = self._posteriors(self.align_model, examples)
        aligner = self._decoder("greedy", self.align_checkpoint)
        nonempty = [k for k, e in enumerate(examples) if e.phones]
        found = aligner.aligned_segments([examples[k] for k in nonempty], [posteriors[k] for k in nonempty])
        aligned = {}
        for example, rec, lp, (phones, ends, word_list) in zip(examples, recordings, posteriors, spelled, strict=True):
            duration = len(rec.samples) / self.sample_rate
            if not phones:
                aligned[example.utt] = Aligned([], [] if word_list is not None else None, duration)
                continue
            if example.utt not in found:
                need = ctc_min_frames(phones) if self.kind == "ctc" else len(phones) * self.cfg.hmm.states_per_phone
                raise RecipeError(
                    f"{rec.path}: {len(lp)} frames ({duration:.2f} s) cannot hold the {len(phones)} phones of "
                    f"'{' '.join(word_list or [self.id2phone[p] for p in phones])}' (needs {need} frames)"
                )
            segments = found[example.utt]
            word_segments = None if word_list is None else _word_segments(segments, ends, word_list)
            aligned[example.utt] = Aligned([seg for seg, _ in segments], word_segments, duration)
        return aligned

    def spell_words(self, phones: list[str], words: list[str] | None, where: str):
        """A transcript given as phones and as words (a data dir's text and text.words): (phone ids, word ends,
        words), the word ends found through any of the lexicon's pronunciations; without words (None), the
        phones alone."""
        if words is None:
            return _phone_ids(phones, self.phone2id, where), None, None
        ends = word_ends(words, phones, self.lexicon)
        if ends is None:
            raise RecipeError(f"{where}: the phones '{' '.join(phones)}' do not spell the words '{' '.join(words)}'")
        return _phone_ids(phones, self.phone2id, where), ends, words

    def _spell(self, transcript: list[str], words: bool, where: str) -> tuple[list[int], list[int] | None, list | None]:
        """(phone ids, word ends, the words) of a transcript of words (first pronunciations) or of phones."""
        if not words:
            return _phone_ids(transcript, self.phone2id, where), None, None
        phones, ends = [], []
        for word in transcript:
            if word not in self.lexicon:
                raise RecipeError(f"{where}: the word '{word}' is not in the lexicon ({self.lang_dir}/lexicon.txt)")
            phones += _phone_ids(self.lexicon[word][0], self.phone2id, where)
            ends.append(len(phones) - 1)
        return phones, ends, list(transcript)


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
    from praatio import textgrid

    end = max([aligned.duration] + [seg.end for seg in aligned.phones])
    grid = textgrid.Textgrid()
    for name, segments in (("words", aligned.words or []), ("phones", aligned.phones)):
        entries = [(round(seg.start, 6), round(seg.end, 6), seg.label) for seg in segments]
        grid.addTier(textgrid.IntervalTier(name, entries, 0.0, end))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    grid.save(str(tmp), format="long_textgrid", includeBlankSpaces=True)
    tmp.replace(path)


def write_alignments(out_dir: Path, aligned: dict[str, "Aligned | Transcription"]) -> None:
    """out_dir/phones.ctm, words.ctm (where there are words) and textgrid/<utt>.TextGrid."""
    write_ctm(out_dir / "phones.ctm", {utt: a.phones for utt, a in aligned.items()})
    if any(a.words is not None for a in aligned.values()):
        write_ctm(out_dir / "words.ctm", {utt: a.words for utt, a in aligned.items() if a.words is not None})
    for utt, a in aligned.items():
        write_textgrid(out_dir / "textgrid" / f"{utt}.TextGrid", a)


# -- input: audio files, a wav.scp or a data dir --------------------------------------------------------------


def read_recordings(
    sample_rate: int, wavs: list[Path] = (), wav_scp: Path | None = None, data_dir: Path | None = None
) -> list[Recording]:
    """Recordings of audio files (each named by its file name without the extension), of a wav.scp, or of a data
    dir's wav.scp (with its speakers, utt2spk, for per-speaker CMVN)."""
    entries: list[tuple[str, str, str | None]] = []  # (utterance, path, speaker)
    if data_dir is not None:
        wav_scp = data_dir / "wav.scp"
        speakers = read_table(data_dir / "utt2spk") if (data_dir / "utt2spk").is_file() else {}
    else:
        speakers = {}
    if wav_scp is not None:
        if not wav_scp.is_file():
            raise RecipeError(f"{wav_scp}: no such file")
        entries += [(utt, path, speakers.get(utt)) for utt, path in read_table(wav_scp).items()]
    entries += [(Path(w).stem, str(w), None) for w in wavs]
    repeated = sorted(u for u, n in Counter(utt for utt, _, _ in entries).items() if n > 1)
    if repeated:
        raise RecipeError(f"recordings with the same name: {', '.join(repeated)} (utterance ids must be unique)")
    if not entries:
        raise RecipeError("no recordings: give audio files, --wav-scp or --data-dir")
    return [read_recording(path, sample_rate, utt, speaker) for utt, path, speaker in entries]
