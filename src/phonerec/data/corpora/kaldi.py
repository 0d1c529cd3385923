"""A corpus of the user's own in Kaldi's form (corpus=kaldi): data dirs and a dict dir, as Kaldi recipes make them.

corpus.train_dir, and where the user has them corpus.dev_dir and corpus.test_dir: data dirs with
  wav.scp     `<recording> <audio file>` (or `<recording> <command> |`, run only with corpus.allow_pipes=true)
  text        `<utterance> <word>...`
  utt2spk     `<utterance> <speaker>`, and spk2utt (utils/utt2spk_to_spk2utt.pl makes it)
  segments    optional: `<utterance> <recording> <start> <end>` in seconds
  spk2gender  optional: `<speaker> m|f`
checked as Kaldi's utils/validate_data_dir.sh checks them; and corpus.dict_dir, a dict dir (phonerec.data.dict_dir).
They are only read: the recipe's own copies go to <paths.data>/{train,dev,test}, with `text` as phones (each word's
first pronunciation; pronunciation variants are a later issue), text.words the words, and the lang dir from the
dict dir: its optional silence is the graphs' optional silence, its other silence phones (spn, nsn, ...) are trained
as ordinary phones, and the recipe (score.ignore_phones=null) leaves all of them out of PER.

Before anything is written, `check_corpus` runs every check of steps/validate_corpus.py (as `mfa validate`): the
data dirs and the dict dir, every recording read (unreadable, empty or all-zero audio, its sample rate), words out
of the lexicon (oovs_found.txt, utterance_oovs.txt; corpus.oov), utterances too short for their phones, speakers
with few utterances. Recordings given as pipes, or at another rate than corpus.sample_rate (resampled, unless
corpus.resample=false), are written once as WAV files under <paths.data>/wav/<split>/, so that every later reader
of audio reads plain files. Without corpus.dev_dir, a seeded share of the training speakers (corpus.dev_share,
corpus.dev_seed) is held out for dev; without corpus.test_dir there is no test split (decoding and scoring use dev).
"""

import io
import logging
import random
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from omegaconf import DictConfig
from tqdm import tqdm

from phonerec.base.config import repo_path
from phonerec.base.errors import CorpusError, DataDirError, DictDirError, RecipeError
from phonerec.base.files import atomic_path, contents_sha256, file_digest
from phonerec.base.ownership import make_dir, remove_tree
from phonerec.base.schema import corpus_splits
from phonerec.data.audio import read_audio
from phonerec.data.data_dir import (
    Utterance,
    UtteranceAudio,
    read_table,
    read_utterance_audio,
    validate_data_dir,
    write_data_dir,
    write_table,
)
from phonerec.data.dict_dir import SILPROB_FILE, DictDir, read_dict_dir
from phonerec.data.lang import prepare_lang
from phonerec.data.oovs import handle_oovs
from phonerec.hmm.fullsum import ctc_min_frames

log = logging.getLogger(__name__)

DATA_DIR_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "segments", "spk2gender")
DICT_DIR_FILES = ("silence_phones.txt", "optional_silence.txt", "nonsilence_phones.txt", "lexicon.txt", "lexiconp.txt")
# Per-speaker CMVN statistics of fewer utterances than this are noisy: such speakers are warned about.
FEW_UTTERANCES = 3
SHOWN = 10  # utterances or speakers named in a warning


def _first_few(names: list[str]) -> str:
    """The first SHOWN names, comma-separated, and ` ...` when there are more."""
    return ", ".join(names[:SHOWN]) + (" ..." if len(names) > SHOWN else "")


def user_dirs(ccfg: DictConfig) -> dict[str, Path]:
    """split -> the user's data dir for it (train always; dev and test where given)."""
    given = {"train": ccfg.train_dir, "dev": ccfg.dev_dir, "test": ccfg.test_dir}
    return {split: repo_path(path) for split, path in given.items() if path is not None}


def sources(cfg: DictConfig) -> list:
    """What the data dirs are made from besides the settings (stage 0's digest): the user's dirs and the content of
    their text files (audio files are not hashed, as for the other corpora)."""
    dirs = {split: str(path) for split, path in user_dirs(cfg.corpus).items()}
    dict_dir = repo_path(cfg.corpus.dict_dir)
    return [
        dirs,
        {split: contents_sha256(path, DATA_DIR_FILES) for split, path in user_dirs(cfg.corpus).items()},
        str(dict_dir),
        contents_sha256(dict_dir, DICT_DIR_FILES),
        # only where there is one (the digests of corpora without it stay those of before)
        *([file_digest(dict_dir / SILPROB_FILE)] if (dict_dir / SILPROB_FILE).is_file() else []),
    ]


@dataclass
class CorpusCheck:
    """What check_corpus found: `errors` stop training, `warnings` do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dict_dir: DictDir | None = None
    transcripts: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # split -> utterance -> words
    speakers: dict[str, dict[str, str]] = field(default_factory=dict)  # split -> utterance -> speaker
    audio: dict[str, dict[str, UtteranceAudio]] = field(default_factory=dict)  # split -> utterance -> its audio
    seconds: dict[str, float] = field(default_factory=dict)  # utterance -> its length
    rewrite: dict[tuple[str, str], str] = field(default_factory=dict)  # (split, recording) -> why it is copied
    kept: dict[str, list[str]] = field(default_factory=dict)  # utterance -> its words as trained (corpus.oov)
    report_files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        utts = sum(len(t) for t in self.transcripts.values())
        speakers = len({s for split in self.speakers.values() for s in split.values()})
        hours = sum(self.seconds.values()) / 3600
        splits = ", ".join(f"{split} {len(t)}" for split, t in self.transcripts.items())
        return (
            f"{utts} utterances ({splits}) of {speakers} speakers, {hours:.2f} h of audio read; "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
        )


def check_corpus(cfg: DictConfig, report_dir: Path) -> CorpusCheck:
    """Every check of the corpus, its problems collected (not raised); report files (OOVs) written to report_dir.
    wav.scp pipes are run to read their audio where corpus.allow_pipes allows them (else they are errors)."""
    ccfg = cfg.corpus
    check = CorpusCheck()
    try:
        check.dict_dir = read_dict_dir(repo_path(ccfg.dict_dir))
    except DictDirError as err:
        check.errors.append(str(err))
    for split, path in user_dirs(ccfg).items():
        try:
            validate_data_dir(path, check_audio=True, allow_pipes=ccfg.allow_pipes)
        except DataDirError as err:
            check.errors.append(str(err))
            continue
        check.transcripts[split] = {u: w.split() for u, w in read_table(path / "text").items()}
        check.speakers[split] = read_table(path / "utt2spk")
        check.audio[split] = read_utterance_audio(path)
    _check_ids_across_splits(check)
    if check.dict_dir is not None and check.transcripts:
        _check_oovs(check, ccfg, report_dir)
    _check_recordings(check, ccfg)
    if check.dict_dir is not None:
        _check_lengths(check, cfg)
    _check_speakers(check)
    return check


def _check_ids_across_splits(check: CorpusCheck) -> None:
    seen: dict[str, str] = {}
    for split, transcripts in check.transcripts.items():
        both = [utt for utt in transcripts if utt in seen]
        if both:
            check.errors.append(f"utterances in both the {seen[both[0]]} and the {split} data dir: {_first_few(both)}")
        seen.update(dict.fromkeys(transcripts, split))


def _check_oovs(check: CorpusCheck, ccfg: DictConfig, report_dir: Path) -> None:
    transcripts = {u: w for split in check.transcripts.values() for u, w in split.items()}
    try:
        check.kept = handle_oovs(transcripts, check.dict_dir.lexicon, ccfg.oov, ccfg.oov_word, report_dir)
    except RecipeError as err:
        check.errors.append(str(err))
    check.report_files += [report_dir / "oovs_found.txt", report_dir / "utterance_oovs.txt"]


def recording_audio(path: str, allow_pipes: bool) -> tuple[np.ndarray, int]:
    """A whole recording's int16 samples and rate: an audio file, or the WAV output of a wav.scp pipe."""
    if not path.endswith("|"):
        return read_audio(path)
    if not allow_pipes:
        raise ValueError("a pipe, which runs only with corpus.allow_pipes=true")
    command = path[:-1].strip()
    done = subprocess.run(command, shell=True, capture_output=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise ValueError(f"the command failed (exit {done.returncode}): {' / '.join(tail) or 'no message'}")
    try:
        samples, rate = sf.read(io.BytesIO(done.stdout), dtype="int16", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"its output is no audio soundfile reads ({err}); the command must write WAV") from None
    if samples.shape[1] != 1:
        raise ValueError(f"{samples.shape[1]} channels, expected mono")
    return samples[:, 0], rate


def _check_recordings(check: CorpusCheck, ccfg: DictConfig) -> None:
    """Each recording read once: its utterances' spans non-empty and not all zero, their lengths noted; pipes and
    recordings at another sample rate marked for a WAV copy (or refused, corpus.resample=false)."""
    for split, audio in check.audio.items():
        by_recording = defaultdict(list)
        for utt, a in audio.items():
            by_recording[(a.recording, a.path)].append((utt, a))
        for (recording, path), utts in by_recording.items():
            try:
                samples, rate = recording_audio(path, ccfg.allow_pipes)
            except (OSError, ValueError, RuntimeError, sf.LibsndfileError) as err:
                check.errors.append(f"{split} recording '{recording}' ({path}): {err}")
                continue
            why = ["a pipe run"] if path.endswith("|") else []
            if rate != ccfg.sample_rate:
                if not ccfg.resample:
                    check.errors.append(
                        f"{split} recording '{recording}' ({path}): {rate} Hz, not corpus.sample_rate="
                        f"{ccfg.sample_rate} (corpus.resample=false refuses it)"
                    )
                    continue
                why.append(f"resampled from {rate} Hz")
            if why:
                check.rewrite[(split, recording)] = ", ".join(why)
            for utt, a in utts:
                first = round(a.start * rate)
                last = len(samples) if a.end is None else min(round(a.end * rate), len(samples))
                span = samples[first:last]
                if not len(span) or not span.any():
                    what = "no samples" if not len(span) else "only zero samples (a silent or blank recording)"
                    check.errors.append(f"{split} utterance '{utt}' ({path}): {what}")
                check.seconds[utt] = len(span) / rate


def _check_lengths(check: CorpusCheck, cfg: DictConfig) -> None:
    """Utterances with fewer frames (after model.subsample) than their phones need (the Viterbi model one frame per
    HMM state, CTC one per phone and one more between repeats; training skips them), and utterances longer than
    corpus.max_utterance_seconds: warnings."""
    lexicon = check.dict_dir.lexicon
    kcfg = cfg.features.kaldi
    short = []
    for transcripts in check.transcripts.values():
        for utt, words in transcripts.items():
            if utt not in check.seconds or any(w not in lexicon for w in words):
                continue
            phones = [p for w in words for p in lexicon[w][0]]
            samples_ms = check.seconds[utt] * 1000
            frames = (
                0 if samples_ms < kcfg.frame_length else 1 + int((samples_ms - kcfg.frame_length) // kcfg.frame_shift)
            )
            frames //= cfg.model.subsample
            need = max(len(phones) * cfg.hmm.states_per_phone, ctc_min_frames(phones) if "ctc" in cfg.models else 0)
            if frames < need:
                short.append(f"{utt} ({frames} frames, {need} needed)")
    long = sorted(utt for utt, seconds in check.seconds.items() if seconds > cfg.corpus.max_utterance_seconds)
    if long:
        check.warnings.append(
            f"{len(long)} utterances are longer than corpus.max_utterance_seconds={cfg.corpus.max_utterance_seconds:g} "
            "(training on long utterances is slow and their alignment drifts): give the recordings segments, e.g. "
            "with MFA's or Kaldi's segmentation tools: " + _first_few(long)
        )
    if short:
        check.warnings.append(
            f"{len(short)} utterances are too short for their phones, and training skips them: " + _first_few(short)
        )


def _check_speakers(check: CorpusCheck) -> None:
    counts = Counter(spk for split in check.speakers.values() for spk in split.values())
    few = sorted(spk for spk, n in counts.items() if n < FEW_UTTERANCES)
    if few:
        check.warnings.append(
            f"{len(few)} speakers have fewer than {FEW_UTTERANCES} utterances (their CMVN statistics are noisy): "
            + _first_few(few)
        )


def raise_if_failed(check: CorpusCheck) -> None:
    for warning in check.warnings:
        log.warning("%s", warning)
    if check.errors:
        raise CorpusError(
            f"the corpus has {len(check.errors)} problems that would stop training (steps/validate_corpus.py lists "
            "them too):\n" + "\n".join(check.errors)
        )


def dev_speakers(speakers: list[str], share: float, seed: int) -> list[str]:
    """The training speakers held out for dev when the user gives no dev dir: round(share x their number), at least
    one, drawn with `seed` from the sorted speakers."""
    if len(speakers) < 2:
        raise CorpusError(
            f"the training data dir has {len(speakers)} speaker(s): no dev speaker can be held out of it; give a dev "
            "data dir as corpus.dev_dir"
        )
    count = min(len(speakers) - 1, max(1, round(share * len(speakers))))
    return sorted(random.Random(seed).sample(sorted(speakers), count))


def prepare(cfg: DictConfig, data_dir: Path) -> None:
    """The user's data dirs and dict dir -> data_dir/{train,dev[,test]} and data_dir/lang."""
    ccfg = cfg.corpus
    check = check_corpus(cfg, data_dir)
    log.info("corpus check: %s", check.summary())
    raise_if_failed(check)
    dict_dir = check.dict_dir
    kept = check.kept

    splits = {split: list(check.transcripts[split]) for split in check.transcripts}
    if "dev" not in splits:
        train_speakers = sorted(set(check.speakers["train"].values()))
        held_out = set(dev_speakers(train_speakers, ccfg.dev_share, ccfg.dev_seed))
        log.info(
            "no dev data dir: %d of %d training speakers held out for dev (corpus.dev_share=%g, dev_seed=%d): %s",
            *(len(held_out), len(train_speakers), ccfg.dev_share, ccfg.dev_seed, " ".join(sorted(held_out))),
        )
        splits["dev"] = [u for u in splits["train"] if check.speakers["train"][u] in held_out]
        splits["train"] = [u for u in splits["train"] if check.speakers["train"][u] not in held_out]
        check.audio["dev"], check.speakers["dev"] = check.audio["train"], check.speakers["train"]
    if "test" not in splits:
        log.info("no test data dir (corpus.test_dir=null): decoding and scoring use dev")
        remove_tree(data_dir / "test", made_in=data_dir)  # of earlier settings: stage 8 would align it

    lang_dir = data_dir / "lang"
    silence = [dict_dir.optional_silence, *(p for p in dict_dir.silence_phones if p != dict_dir.optional_silence)]
    lexicon = prepare_lang(
        dict_dir.lexicon,
        lang_dir,
        cfg.hmm.states_per_phone,
        silence_phones=silence,
        phones=dict_dir.silence_phones + dict_dir.nonsilence_phones,
        probabilities=dict_dir.probabilities,
        silence_probabilities=dict_dir.silence_probabilities,
    )
    paths = _write_audio_copies(check, data_dir / "wav", ccfg.sample_rate)
    for split in corpus_splits(cfg):
        source_split = "train" if split == "dev" and ccfg.dev_dir is None else split
        utterances = []
        for utt in splits[split]:
            if utt not in kept:
                continue
            a = check.audio[split][utt]
            words = kept[utt]
            segment = (a.recording, a.start, a.end) if (user_dirs(ccfg)[source_split] / "segments").is_file() else ()
            utterances.append(
                Utterance(
                    utt,
                    check.speakers[split][utt],
                    paths.get((source_split, a.recording), a.path),
                    [p for w in words for p in lexicon[w][0]],  # the first pronunciation of each word
                    words,
                    *segment,
                )
            )
        if not utterances:
            raise CorpusError(f"the {split} split holds no utterances (after corpus.oov={ccfg.oov})")
        write_data_dir(data_dir / split, utterances)
        _copy_genders(user_dirs(ccfg)[source_split], data_dir / split, {u.speaker for u in utterances})
        count = validate_data_dir(data_dir / split, lang_dir)
        log.info("%s: %d utterances of %d speakers", data_dir / split, count, len({u.speaker for u in utterances}))


def _write_audio_copies(check: CorpusCheck, wav_dir: Path, sample_rate: int) -> dict[tuple[str, str], str]:
    """The recordings marked in check.rewrite (pipes run, other sample rates resampled) as 16-bit WAV files at
    sample_rate under wav_dir/<split>/; (split, recording) -> the copy's path."""
    remove_tree(wav_dir, made_in=wav_dir.parent)  # copies of earlier settings
    if not check.rewrite:
        return {}
    make_dir(wav_dir)
    paths = {}
    sources = {split: {a.recording: a.path for a in audio.values()} for split, audio in check.audio.items()}
    for split, recording in tqdm(sorted(check.rewrite), unit="recording", desc="WAV copies"):
        samples, rate = recording_audio(sources[split][recording], allow_pipes=True)
        if rate != sample_rate:
            waveform = torch.from_numpy(samples.astype(np.float32))
            resampled = AF.resample(waveform, rate, sample_rate).numpy()
            samples = np.clip(np.round(resampled), -32768, 32767).astype(np.int16)
        path = (wav_dir / split / f"{recording}.wav").resolve()
        with atomic_path(path) as tmp:
            sf.write(str(tmp), samples, sample_rate, subtype="PCM_16", format="WAV")
        paths[(split, recording)] = str(path)
    reasons = Counter(check.rewrite.values())
    log.info(
        "%d recordings written as WAV files under %s (%s)",
        *(len(paths), wav_dir, "; ".join(f"{n}: {why}" for why, n in sorted(reasons.items()))),
    )
    return paths


def _copy_genders(source_dir: Path, out_dir: Path, speakers: set[str]) -> None:
    """The user's spk2gender, of the speakers of out_dir."""
    if (source_dir / "spk2gender").is_file():
        genders = read_table(source_dir / "spk2gender")
        write_table(out_dir / "spk2gender", {spk: g for spk, g in genders.items() if spk in speakers})
    else:
        (out_dir / "spk2gender").unlink(missing_ok=True)
