"""Stage 1: Kaldi-compatible features of a data dir into ark/scp files and per-speaker CMVN statistics, split over
nj worker processes (the per-recording computation and the load-time pipeline: phonerec.data.features)."""

import filecmp
import logging
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from phonerec.base.config import save_config, settings_hash
from phonerec.base.errors import RecipeError
from phonerec.base.files import contents_sha256, copy_atomic
from phonerec.data.audio import read_audio
from phonerec.data.data_dir import (
    DATA_FILES,
    UtteranceAudio,
    read_table,
    read_utterance_audio,
    validate_data_dir,
    write_table,
)
from phonerec.data.features import cmvn_stats, compute_features, warn_long_recording
from phonerec.data.lang import LANG_FILES
from phonerec.pipeline.markers import StageRun, is_done, mark_done
from phonerec.pipeline.stage_keys import FEATURES

log = logging.getLogger(__name__)


@dataclass
class ExtractJob:
    index: int
    utts: list[tuple[str, UtteranceAudio]]  # (utterance id, where its samples are)
    ark: Path
    scp: Path
    sample_rate: int
    fcfg: dict
    max_seconds: float  # corpus.max_utterance_seconds: a longer utterance is warned about


_report_progress = None  # set in each worker: counts finished utterances for the parent's progress bar


def _init_worker(counter) -> None:
    global _report_progress
    torch.set_num_threads(1)

    def report(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    _report_progress = report


def _run_job(job: ExtractJob) -> tuple[float, list[tuple[str, float]]]:
    """Write one job's ark and scp; return the seconds of audio it held and its utterances longer than
    job.max_seconds (with their lengths), for the parent process to warn about."""
    fcfg = OmegaConf.create(job.fcfg)
    seconds, long = 0.0, []
    with kaldiio.WriteHelper(f"ark,scp:{job.ark},{job.scp}") as writer:
        for utt, audio in job.utts:
            path = audio.path if audio.recording == utt else f"{audio.path} (segment of '{audio.recording}')"
            try:
                samples, rate = read_audio(audio.path, audio.start, audio.end)
            except Exception as err:
                raise RecipeError(f"utterance '{utt}': cannot read {path}: {err}") from err
            if rate != job.sample_rate:
                raise RecipeError(f"utterance '{utt}': {path} is at {rate} Hz, the corpus at {job.sample_rate} Hz")
            try:
                feats = compute_features(samples, rate, fcfg)
            except RecipeError as err:
                raise RecipeError(f"utterance '{utt}': {path}: {err}") from None
            writer(utt, feats.numpy())
            seconds += len(samples) / rate
            if len(samples) / rate > job.max_seconds:
                long.append((utt, len(samples) / rate))
            _report_progress(1)
    return seconds, long


def _run_jobs(jobs: list[ExtractJob], nj: int, total_utts: int, on_job_done) -> float:
    """Run the jobs on nj processes; `on_job_done(job)` runs in this process as each one finishes, so a
    failure or kill loses only the jobs still running. Returns the seconds of audio processed."""

    def finished(job: ExtractJob, result: tuple[float, list[tuple[str, float]]]) -> float:
        seconds, long = result
        for utt, length in long:
            warn_long_recording(f"utterance '{utt}'", length, job.max_seconds)
        on_job_done(job)
        return seconds

    # fork, as torch DataLoader workers on Linux: a spawned worker would spend ~2 s importing torch again.
    ctx = mp.get_context("fork")
    counter = ctx.Value("i", 0)
    seconds = 0.0
    with tqdm(total=total_utts, unit="utt", desc="features") as bar:
        if nj == 1:
            _init_worker(counter)
            for job in jobs:
                seconds += finished(job, _run_job(job))
                bar.update(counter.value - bar.n)
            return seconds
        error = None
        with ProcessPoolExecutor(nj, mp_context=ctx, initializer=_init_worker, initargs=(counter,)) as pool:
            futures = {pool.submit(_run_job, job): job for job in jobs}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5)
                bar.update(counter.value - bar.n)
                for future in done:
                    if future.cancelled():
                        continue
                    if future.exception() is None:
                        seconds += finished(futures[future], future.result())
                    elif error is None:
                        error = future.exception()
                        for other in pending:
                            other.cancel()  # those not started yet; running ones finish and are kept
        if error is not None:
            raise error
    return seconds


def make_features(data_dir: Path, feat_dir: Path, cfg: DictConfig, lang_dir: Path | None = None) -> None:
    """Extract features for `data_dir` into `feat_dir`: a copy of the data dir (DATA_FILES, checked against
    lang_dir) with feats.scp, cmvn.scp and utt2num_frames. The stage's digest covers the content of the copied
    files, so an edited transcript is copied (and checked) again; the extraction jobs' digest covers only
    what the features depend on (audio list, speakers, settings), so that copy redoes no extraction."""
    cfg = FEATURES.view(cfg)
    validate_data_dir(data_dir, lang_dir)
    digest = FEATURES.digest(cfg, contents_sha256(data_dir, _audio_files(data_dir)))
    lang = contents_sha256(lang_dir, LANG_FILES) if lang_dir is not None else None
    stage = StageRun(feat_dir, "features", FEATURES.digest(cfg, digest, contents_sha256(data_dir, DATA_FILES), lang))
    if stage.done and _copies_match(data_dir, feat_dir):
        return
    with stage:
        _extract(data_dir, feat_dir, lang_dir, cfg, digest)


def _audio_files(data_dir: Path) -> tuple[str, ...]:
    """The files that say which samples each utterance's features are of, and its speaker (for CMVN)."""
    return ("wav.scp", "utt2spk", "segments") if (data_dir / "segments").is_file() else ("wav.scp", "utt2spk")


def _copies_match(data_dir: Path, feat_dir: Path) -> bool:
    """Whether each data-dir file in feat_dir is still what stage 1 copied from data_dir (someone may have
    edited the copy); a difference is logged, and the stage runs again."""
    for name in DATA_FILES:
        source, copy = data_dir / name, feat_dir / name
        if source.is_file() != copy.is_file() or source.is_file() and not filecmp.cmp(source, copy, shallow=False):
            log.warning("%s differs from its source %s: copying the data dir again", copy, source)
            return False
    return True


def _extract(data_dir: Path, feat_dir: Path, lang_dir: Path | None, cfg: DictConfig, digest: str) -> None:
    fcfg, nj = cfg.features, cfg.nj
    audio = read_utterance_audio(data_dir)
    utts = list(audio.items())
    nj = max(1, min(nj, len(utts)))
    ark_dir = (feat_dir / "ark").resolve()
    ark_dir.mkdir(parents=True, exist_ok=True)
    jobs, pending = [], []
    for j in range(nj):
        job = ExtractJob(
            index=j + 1,
            utts=utts[j * len(utts) // nj : (j + 1) * len(utts) // nj],
            ark=ark_dir / f"raw_{fcfg.name}.{j + 1}.ark",
            scp=ark_dir / f"raw_{fcfg.name}.{j + 1}.scp",
            sample_rate=cfg.corpus.sample_rate,
            fcfg=OmegaConf.to_container(fcfg, resolve=True),
            max_seconds=cfg.corpus.max_utterance_seconds,
        )
        jobs.append(job)
        # A job is finished when its marker holds this digest; anything else of it is redone whole.
        if not is_done(ark_dir, f"job{job.index}", settings_hash(digest, nj, job.index)):
            pending.append(job)
    todo = sum(len(job.utts) for job in pending)
    log.info("%s -> %s: %d utterances, %d of %d jobs to run", data_dir, feat_dir, len(utts), len(pending), nj)

    def job_done(job: ExtractJob) -> None:
        mark_done(ark_dir, f"job{job.index}", settings_hash(digest, nj, job.index))

    start = time.perf_counter()
    audio_seconds = _run_jobs(pending, nj, todo, job_done) if pending else 0.0
    elapsed = time.perf_counter() - start
    if pending:
        log.info(
            "extracted %d utterances, %.1f s of audio, in %.1f s wall time: %.0fx real time (RTF %.4f)",
            todo,
            audio_seconds,
            elapsed,
            audio_seconds / elapsed,
            elapsed / max(audio_seconds, 1e-9),
        )

    # Merge only now: feats.scp appears whole or not at all.
    feats_scp = {}
    for job in jobs:
        feats_scp.update(read_table(job.scp))
    if feats_scp.keys() != audio.keys():
        raise RecipeError(f"{ark_dir}: job outputs hold {len(feats_scp)} of {len(audio)} utterances")
    for name in DATA_FILES:
        (feat_dir / name).unlink(missing_ok=True)
        if (data_dir / name).is_file():
            copy_atomic(data_dir / name, feat_dir / name)
    write_frames_and_cmvn(feat_dir, [job.scp for job in jobs], fcfg.cmvn)
    write_table(feat_dir / "feats.scp", feats_scp)
    validate_data_dir(feat_dir, lang_dir, check_audio=False)
    save_config(cfg, feat_dir / "config.yaml")


def write_frames_and_cmvn(feat_dir: Path, job_scps: list[Path], level: str) -> None:
    """One pass over the jobs' features: utt2num_frames, and cmvn.scp at the given level."""
    if level not in ("speaker", "utterance", "none"):
        raise RecipeError(f"features.cmvn={level}: expected speaker, utterance or none")
    utt2spk = read_table(feat_dir / "utt2spk")
    num_frames: dict[str, str] = {}
    stats: dict[str, np.ndarray] = {}
    for scp in job_scps:
        for utt, feats in kaldiio.load_scp_sequential(str(scp)):
            if not np.isfinite(feats).all():  # it would spoil its speaker's statistics, and every utterance's after
                raise RecipeError(f"{scp}: utterance '{utt}': its features hold NaN or inf values")
            num_frames[utt] = str(feats.shape[0])
            key = utt2spk[utt] if level == "speaker" else utt
            stats[key] = stats.get(key, 0) + cmvn_stats(feats)
    write_table(feat_dir / "utt2num_frames", num_frames)
    cmvn_scp = feat_dir / "cmvn.scp"
    cmvn_scp.unlink(missing_ok=True)
    if level == "none":
        return
    ark = (feat_dir / "ark" / "cmvn.ark").resolve()
    tmp_scp = feat_dir / "cmvn.scp.tmp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{tmp_scp}") as writer:
        for key in sorted(stats):
            writer(key, stats[key])
    tmp_scp.replace(cmvn_scp)
