"""Free Spoken Digit Dataset (FSDD) v1.0.10: obtain, verify, split, and write Kaldi data dirs.

Layout of a copy: <root>/recordings/{digit}_{speaker}_{take}.wav, 8 kHz mono int16. The release has
3,000 recordings of 6 speakers; every recording is checked against the release's sha256 manifest.
Utterance ids are `<speaker>_<digit>_<take:02d>` (isolated) or `<speaker>_<nnnn>_<digits>` (connected).
"""

import logging
import re
import tarfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf
from omegaconf import DictConfig

from phonerec.base.config import repo_path
from phonerec.base.errors import CorpusError
from phonerec.base.files import atomic_path, file_digest
from phonerec.base.ownership import make_dir, remove_tree
from phonerec.base.schema import SPLITS
from phonerec.data.audio import read_audio
from phonerec.data.corpora import corpus_paths
from phonerec.data.data_dir import Utterance, validate_data_dir, write_data_dir
from phonerec.data.download import download
from phonerec.data.lang import Lexicon, prepare_lang

log = logging.getLogger(__name__)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RECORDING = re.compile(r"^recordings/(\d)_([A-Za-z]+)_(\d+)\.wav$")


@dataclass(frozen=True)
class Recording:
    digit: int
    speaker: str
    take: int
    path: Path


def read_manifest(path: Path) -> dict[str, str]:
    """relative path -> sha256, from `sha256sum` output."""
    manifest = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 2 or not RECORDING.match(parts[1].lstrip("*")):
                raise CorpusError(f"{path}:{lineno}: expected '<sha256>  recordings/<d>_<speaker>_<take>.wav'")
            manifest[parts[1].lstrip("*")] = parts[0]
    return manifest


def _parse(relpath: str, root: Path) -> Recording:
    digit, speaker, take = RECORDING.match(relpath).groups()
    return Recording(int(digit), speaker, int(take), root / relpath)


def verify_copy(root: Path, manifest: dict[str, str], complete: bool) -> list[Recording]:
    """Check each recording of `root` against the manifest; `complete` demands every one of them."""
    recordings_dir = root / "recordings"
    if not recordings_dir.is_dir():
        raise CorpusError(
            f"{root}: no recordings/ folder; expected an FSDD copy, <root>/recordings/<d>_<speaker>_<take>.wav"
        )
    found = sorted(f"recordings/{p.name}" for p in recordings_dir.glob("*.wav"))
    unknown = [p for p in found if p not in manifest]
    if unknown:
        log.warning(
            "%s: %d recordings are not in the v1.0.10 manifest and are left out: %s", root, len(unknown), unknown[:5]
        )
    bad = [p for p in found if p in manifest and file_digest(root / p, "sha256") != manifest[p]]
    if bad:
        raise CorpusError(
            f"{root}: {len(bad)} recordings differ from the v1.0.10 release (sha256): {', '.join(bad[:10])}"
        )
    present = [p for p in found if p in manifest]
    if not present:
        raise CorpusError(f"{root}/recordings: none of the release's recordings")

    all_speakers = sorted({_parse(p, root).speaker for p in manifest})
    speakers = sorted({_parse(p, root).speaker for p in present})
    missing_speakers = [s for s in all_speakers if s not in speakers]
    if complete and len(present) != len(manifest):
        raise CorpusError(
            f"{root}: {len(manifest) - len(present)} of the release's {len(manifest)} recordings are missing"
        )
    log.info(
        "%s: %d of %d recordings verified; speakers present: %s; missing: %s",
        root,
        len(present),
        len(manifest),
        " ".join(speakers),
        " ".join(missing_speakers) or "none",
    )
    per_speaker = len(manifest) // len(all_speakers)
    for speaker in speakers:
        count = sum(1 for p in present if _parse(p, root).speaker == speaker)
        if count != per_speaker:
            log.warning("%s: speaker %s has %d of %d recordings", root, speaker, count, per_speaker)
    return [_parse(p, root) for p in present]


def obtain_corpus(ccfg: DictConfig, downloads: Path) -> list[Recording]:
    """The verified recordings of an existing copy (corpus.root) or of the downloaded release."""
    manifest = read_manifest(repo_path(ccfg.manifest))
    if ccfg.root is not None:
        root = Path(ccfg.root).resolve()
        if not root.is_dir():
            raise CorpusError(f"corpus.root={ccfg.root}: no such directory")
        return verify_copy(root, manifest, complete=False)

    root = downloads / ccfg.archive_dir
    if not root.is_dir():
        archive = downloads / Path(ccfg.url).name
        rejected = _rejected(archive)
        if rejected.is_file():  # the same URL would serve it again: not downloaded anew
            why = rejected.with_name(rejected.name + ".why").read_text().strip()
            raise CorpusError(
                f"{rejected}: this download was refused before ({why}); inspect it, and delete it to download again, "
                "or give an existing copy: corpus.root=<dir holding recordings/>"
            )
        try:
            download(ccfg.url, archive)
        except CorpusError as err:
            raise CorpusError(
                f"{err}\nEither let this machine reach {ccfg.url}, or give an existing copy of the corpus: "
                f"corpus.root=<dir holding recordings/> (on the command line or in conf/local/default.yaml)"
            ) from err
        _unpack(archive, downloads, ccfg.archive_dir)
    return verify_copy(root, manifest, complete=True)


def _rejected(archive: Path) -> Path:
    return archive.with_name(archive.name + ".rejected")


def _unsafe_member(member: tarfile.TarInfo, folder: str) -> str | None:
    """What is wrong with an archive member for the release, or None: the release holds `folder`/ alone, of plain
    files and folders."""
    name = PurePosixPath(member.name)
    if name.is_absolute():
        return f"member '{member.name}' has an absolute path"
    if ".." in name.parts:
        return f"member '{member.name}' climbs out of the archive with '..'"
    if name.parts[0] != folder:
        return f"member '{member.name}' lies outside the release's folder {folder}/"
    if not (member.isfile() or member.isdir()):
        return f"member '{member.name}' is a link or special file, which the release does not have"
    return None


def _unpack(archive: Path, downloads: Path, folder: str) -> None:
    """Unpack into a scratch folder, then rename: a kill never leaves a half-unpacked copy in place. A truncated
    archive is deleted (a rerun downloads it anew); one with members no release has (absolute paths, '..', links,
    files outside its folder) is kept as <archive>.rejected with the reason beside it, for inspection."""
    scratch = downloads / f".unpack-{folder}"
    remove_tree(scratch)  # a killed unpack's
    make_dir(scratch)
    log.info("unpacking %s", archive)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()  # reads the whole archive: a truncated one fails here
            problems = [problem for m in members if (problem := _unsafe_member(m, folder))]
            if problems:
                rejected = _rejected(archive)
                archive.replace(rejected)
                why = f"{problems[0]}" + (f", and {len(problems) - 1} more" if len(problems) > 1 else "")
                rejected.with_name(rejected.name + ".why").write_text(why + "\n")
                raise CorpusError(
                    f"{archive}: not the FSDD release: {why}. Nothing was unpacked; kept as {rejected} for "
                    "inspection (a rerun will not download it again while it is there)"
                )
            tar.extractall(scratch, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        # The archive has no published digest: a transfer cut short without a length shows up only here.
        archive.unlink()
        raise CorpusError(f"{archive}: not a complete archive ({err}); deleted it, run again to download anew") from err
    if not (scratch / folder).is_dir():
        raise CorpusError(f"{archive}: unpacked no {folder}/ folder; is corpus.url the v1.0.10 release?")
    (scratch / folder).replace(downloads / folder)
    remove_tree(scratch)


def split_recordings(recordings: list[Recording], ccfg: DictConfig) -> dict[str, list[Recording]]:
    if ccfg.split == "takes":
        test, dev = set(ccfg.test_takes), set(ccfg.dev_takes)
        split_of = {r: "test" if r.take in test else "dev" if r.take in dev else "train" for r in recordings}
    else:  # "speakers" (schema.FSDD_SPLITS, checked with the config)
        speaker_split = _split_speakers(sorted({r.speaker for r in recordings}), ccfg)
        split_of = {r: speaker_split[r.speaker] for r in recordings if r.speaker in speaker_split}
    splits = {name: sorted((r for r in split_of if split_of[r] == name), key=lambda r: r.path.name) for name in SPLITS}
    for name, recs in splits.items():
        if not recs:
            raise CorpusError(f"the {name} split is empty (corpus.split={ccfg.split}); check the speaker or take lists")
        log.info("%s: %d recordings of %s", name, len(recs), " ".join(sorted({r.speaker for r in recs})))
    return splits


def _split_speakers(present: list[str], ccfg: DictConfig) -> dict[str, str]:
    lists = {"dev": ccfg.dev_speakers, "test": ccfg.test_speakers, "train": ccfg.train_speakers}
    speaker_split = {}
    for split, listed in lists.items():
        if listed is None:
            continue
        for speaker in listed:
            if speaker in speaker_split:
                raise CorpusError(f"speaker {speaker} is in both the {speaker_split[speaker]} and the {split} list")
            if speaker not in present:
                log.warning("corpus.%s_speakers: speaker %s is not in this copy of the corpus", split, speaker)
                continue
            speaker_split[speaker] = split
    if ccfg.train_speakers is None:
        speaker_split.update({s: "train" for s in present if s not in speaker_split})
    if ccfg.held_out_speaker is not None:
        speaker_split = _fold(speaker_split, ccfg.held_out_speaker)
    left_out = [s for s in present if s not in speaker_split]
    if left_out:
        log.info("speakers in no list, left out: %s", " ".join(left_out))
    return speaker_split


def _fold(speaker_split: dict[str, str], held_out: str) -> dict[str, str]:
    """A leave-one-speaker-out fold of a speaker split (corpus.held_out_speaker, conf/sweep/loso.yaml): the held-out
    training speaker is dev, the split's dev speakers are test, its test speakers are in no split."""
    training = sorted(s for s, split in speaker_split.items() if split == "train")
    if held_out not in training:
        raise CorpusError(
            f"corpus.held_out_speaker={held_out} is not a training speaker of this split ({' '.join(training)})"
        )
    if len(training) < 2:
        raise CorpusError(f"the split has one training speaker ({held_out}); leaving one out needs at least 2")
    fold = {s: "test" for s, split in speaker_split.items() if split == "dev"}
    fold.update({s: "train" for s in training if s != held_out})
    fold[held_out] = "dev"
    return fold


def _pronunciation(lexicon: Lexicon, r: Recording) -> list[str]:
    # The first of several pronunciations goes into `text`; the word comes from the recording's name.
    return lexicon.pronunciations(DIGIT_WORDS[r.digit], str(r.path))[0]


def isolated_utterances(recordings: list[Recording], lexicon) -> list[Utterance]:
    return [
        Utterance(
            utt_id=f"{r.speaker}_{r.digit}_{r.take:02d}",
            speaker=r.speaker,
            wav=str(r.path),
            phones=_pronunciation(lexicon, r),
            words=[DIGIT_WORDS[r.digit]],
        )
        for r in recordings
    ]


def connected_utterances(
    recordings: list[Recording], split: str, ccfg: DictConfig, wav_dir: Path, lexicon
) -> list[Utterance]:
    """TIDIGITS-like utterances: each speaker's recordings, shuffled, concatenated 1 to 7 at a time with
    pauses of low-level Gaussian noise (not digital zeros). Every recording is used exactly once."""
    conf = ccfg.connected
    noise_rms = 32768.0 * 10 ** (conf.noise_dbfs / 20)
    by_speaker = defaultdict(list)
    for r in recordings:
        by_speaker[r.speaker].append(r)
    utterances = []
    for speaker, recs in sorted(by_speaker.items()):
        # Seeded per split and speaker: the same utterances whichever other speakers a copy holds.
        rng = np.random.default_rng([conf.seed, zlib.crc32(f"{split}/{speaker}".encode())])
        order = rng.permutation(len(recs))
        pos, index = 0, 0
        while pos < len(recs):
            count = int(rng.integers(conf.min_digits, conf.max_digits + 1))
            group = [recs[i] for i in order[pos : pos + count]]
            pos += count
            if len(group) < conf.min_digits:
                log.info("%s/%s: %d recordings left over, fewer than min_digits", split, speaker, len(group))
                break
            index += 1
            pieces = [_noise(rng, conf.edge_seconds, noise_rms, ccfg.sample_rate)]
            for k, rec in enumerate(group):
                samples, rate = read_audio(rec.path)
                if rate != ccfg.sample_rate:
                    raise CorpusError(f"{rec.path}: {rate} Hz, expected {ccfg.sample_rate}")
                if k:
                    pieces.append(_noise(rng, conf.pause_seconds, noise_rms, rate))
                pieces.append(samples)
            pieces.append(_noise(rng, conf.edge_seconds, noise_rms, ccfg.sample_rate))
            digits = "".join(str(r.digit) for r in group)
            utt_id = f"{speaker}_{index:04d}_{digits}"
            wav = wav_dir / f"{utt_id}.wav"
            _write_wav(wav, np.concatenate(pieces), ccfg.sample_rate)
            words = [DIGIT_WORDS[r.digit] for r in group]
            phones = [p for r in group for p in _pronunciation(lexicon, r)]
            utterances.append(Utterance(utt_id, speaker, str(wav.resolve()), phones, words))
    return utterances


def _noise(rng: np.random.Generator, seconds_range, rms: float, rate: int) -> np.ndarray:
    n = int(rng.uniform(*seconds_range) * rate)
    return np.clip(np.round(rng.normal(0.0, rms, n)), -32768, 32767).astype(np.int16)


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with atomic_path(path) as tmp:
        sf.write(str(tmp), samples, rate, subtype="PCM_16", format="WAV")


def sources(cfg: DictConfig) -> list:
    """What the data dirs are made from besides the settings (stage 0's digest): the copy's folder, the lexicon's
    and the manifest's content."""
    _, root = corpus_paths(cfg, cfg.corpus.archive_dir)
    return [str(root), file_digest(repo_path(cfg.corpus.lexicon)), file_digest(repo_path(cfg.corpus.manifest))]


def prepare(cfg: DictConfig, data_dir: Path) -> None:
    """The corpus (downloaded, or the copy at corpus.root) -> data_dir/{train,dev,test} and data_dir/lang."""
    ccfg = cfg.corpus
    downloads, _ = corpus_paths(cfg, ccfg.archive_dir)
    lexicon_path = repo_path(ccfg.lexicon)
    recordings = obtain_corpus(ccfg, downloads)
    lang_dir = data_dir / "lang"
    lexicon = prepare_lang(lexicon_path, lang_dir, cfg.hmm.states_per_phone)
    remove_tree(data_dir / "wav", made_in=data_dir)  # connected-digit audio of earlier settings
    if ccfg.connected.enabled:
        make_dir(data_dir / "wav")
    for split, recs in split_recordings(recordings, ccfg).items():
        if ccfg.connected.enabled:
            utterances = connected_utterances(recs, split, ccfg, data_dir / "wav" / split, lexicon)
        else:
            utterances = isolated_utterances(recs, lexicon)
        write_data_dir(data_dir / split, utterances)
        count = validate_data_dir(data_dir / split, lang_dir)
        log.info("%s: %d utterances", data_dir / split, count)
