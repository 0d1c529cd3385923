"""Speed perturbation of a training data dir, as Kaldi's utils/data/perturb_data_dir_speed_3way.sh does it: the
original utterances plus a copy at each factor, whose utterance and speaker ids get the prefix `sp<factor>-`.

A copy at factor f is the recording played f times as fast (sox's `speed f`: tempo and pitch change together):
its samples resampled from f x the sample rate to the sample rate (torchaudio.functional.resample), so it lasts
1/f as long. Kaldi pipes sox into the features; here the copies are written as WAV files under <out_dir>/wav,
because wav.scp holds plain files; a copy of a segment (the data dir's segments) is of the segment alone, a file
and segment of its own. Transcripts are the original's; hand-labelled segments (phones.ctm) are
scaled by 1/f. Nothing is aligned here: each copy is an utterance of its own to the flat start and to every
re-alignment."""

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from tqdm import tqdm

from phonerec.base.errors import RecipeError
from phonerec.base.files import atomic_path
from phonerec.base.ownership import make_dir, remove_tree
from phonerec.data.audio import read_audio
from phonerec.data.data_dir import Utterance, read_table, read_utterance_audio, validate_data_dir, write_data_dir
from phonerec.hmm.align_eval import Segment, read_ctm, write_ctm

log = logging.getLogger(__name__)
# The files of the training dir that the copies are made from (and segments, where it has them: reads()).
READS = ("wav.scp", "utt2spk", "text", "text.words", "phones.ctm")


def reads(data_dir: Path) -> tuple[str, ...]:
    """The files of data_dir that its copies are made from."""
    return READS + ("segments",) if (Path(data_dir) / "segments").is_file() else READS


def prefix(factor: float) -> str:
    """Kaldi's id prefix of a copy: sp0.9-, sp1.1-."""
    return f"sp{factor:g}-"


def perturb_samples(samples: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """int16 samples played `factor` times as fast, at the same sample rate."""
    ratio = Fraction(factor).limit_denominator(1000) * rate  # the rate the samples are taken to be at
    if ratio.denominator != 1:
        raise RecipeError(f"speed factor {factor}: {rate} Hz x {factor} is not a whole sample rate")
    waveform = torch.from_numpy(samples.astype(np.float32))
    out = AF.resample(waveform, int(ratio), rate)
    return np.clip(np.round(out.numpy()), -32768, 32767).astype(np.int16)


def perturb_data_dir(data_dir: Path, out_dir: Path, factors: list[float]) -> None:
    """data_dir (a prepared training dir) -> out_dir: its utterances and a copy at each factor."""
    audio = read_utterance_audio(data_dir)
    utt2spk, text = (read_table(data_dir / name) for name in ("utt2spk", "text"))
    words = read_table(data_dir / "text.words") if (data_dir / "text.words").is_file() else {}
    ctm = read_ctm(data_dir / "phones.ctm") if (data_dir / "phones.ctm").is_file() else None
    segmented = (data_dir / "segments").is_file()
    utterances = [
        Utterance(
            u,
            utt2spk[u],
            a.path,
            text[u].split(),
            words.get(u, "").split(),
            *((a.recording, a.start, a.end) if segmented else ()),
        )
        for u, a in audio.items()
    ]
    out_ctm = dict(ctm) if ctm is not None else None
    remove_tree(out_dir / "wav", made_in=out_dir)  # copies of other factors or inputs
    make_dir(out_dir / "wav")
    with tqdm(total=len(audio) * len(factors), unit="utt", desc="speed perturbation") as bar:
        for original in list(utterances):
            utt = original.utt_id
            try:
                samples, rate = read_audio(original.wav, original.start, original.end)
            except Exception as err:
                raise RecipeError(f"{data_dir}/wav.scp: utterance '{utt}': cannot read {original.wav}: {err}") from err
            for factor in factors:
                p = prefix(factor)
                wav = (out_dir / "wav" / f"{p}{utt}.wav").resolve()
                with atomic_path(wav) as tmp:
                    sf.write(str(tmp), perturb_samples(samples, rate, factor), rate, subtype="PCM_16", format="WAV")
                utterances.append(Utterance(p + utt, p + original.speaker, str(wav), original.phones, original.words))
                if ctm is not None and utt in ctm:
                    out_ctm[p + utt] = [Segment(s.start / factor, s.end / factor, s.label) for s in ctm[utt]]
                bar.update()
    write_data_dir(out_dir, utterances)
    if out_ctm is not None:
        write_ctm(out_dir / "phones.ctm", out_ctm)
    count = validate_data_dir(out_dir)
    log.info("%s: %d utterances (%d and a copy at each speed of %s)", out_dir, count, len(audio), factors)
