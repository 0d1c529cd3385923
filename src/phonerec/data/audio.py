"""Audio I/O with soundfile (RIFF and NIST SPHERE alike, whatever the extension says), and a header
check that catches truncated files, which soundfile itself reads without complaint."""

import re
from pathlib import Path

import numpy as np
import soundfile as sf


def read_audio(path: str | Path, start: float = 0.0, end: float | None = None) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the sample rate, of the whole file or of the span start-end seconds (end None: to the
    file's end; an end past it is cut there), the samples taken as Kaldi's extract-segments takes them (start and
    end rounded to the nearest sample). Kaldi's features expect int16-scaled values. A float file with non-finite
    samples (which the conversion to int16 would turn into silence) and a file of zeros alone are errors: either
    would be trained on as a labelled recording."""
    if Path(path).is_dir():  # soundfile would say "Format not recognised"
        raise ValueError(f"{path}: is a directory")
    info = sf.info(str(path))
    first = round(start * info.samplerate)
    last = info.frames if end is None else min(round(end * info.samplerate), info.frames)
    if first >= last:
        raise ValueError(f"{path}: the span {start:g}-{end if end is not None else 'end'} s holds no samples")
    span = {"start": first, "stop": last}
    if info.subtype in ("FLOAT", "DOUBLE"):
        floats, _ = sf.read(str(path), dtype="float64", always_2d=True, **span)
        bad = int((~np.isfinite(floats)).sum())
        if bad:
            raise ValueError(f"{path}: {bad} of {floats.size} samples are not finite numbers (NaN or inf)")
    samples, rate = sf.read(str(path), dtype="int16", always_2d=True, **span)
    if samples.shape[1] != 1:
        raise ValueError(f"{path}: {samples.shape[1]} channels, expected mono")
    if not samples.any():
        raise ValueError(f"{path}: every sample is zero (a silent or blank recording)")
    return samples[:, 0], rate


def _riff_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        f.seek(12)
        pos = 12
        while pos + 8 <= size:
            chunk_id = f.read(4)
            chunk_size = int.from_bytes(f.read(4), "little")
            if chunk_id == b"data":
                available = size - pos - 8
                if chunk_size > available:
                    return f"truncated: header says {chunk_size} bytes of audio data, the file holds {available}"
                if chunk_size == 0:
                    return "no audio samples"
                return None
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are word-aligned
            f.seek(pos)
    return "no data chunk in the RIFF header"


def _nist_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        f.readline()  # NIST_1A
        header_size = int(f.readline().strip())
        f.seek(0)
        header = f.read(header_size).decode("latin-1")
    fields = dict(re.findall(r"^(\w+) -\w+ (\S+)", header, flags=re.MULTILINE))
    if "shorten" in fields.get("sample_coding", ""):
        return None  # compressed: sizes say nothing, libsndfile's read decides
    try:
        expected = header_size + int(fields["sample_count"]) * int(fields.get("sample_n_bytes", 2)) * int(
            fields.get("channel_count", 1)
        )
    except (KeyError, ValueError):
        return "NIST header without a usable sample_count"
    if size < expected:
        return (
            f"truncated: header says {expected - header_size} bytes of audio data, the file holds {size - header_size}"
        )
    if int(fields["sample_count"]) == 0:
        return "no audio samples"
    return None


def check_audio_file(path: str | Path) -> str | None:
    """None when the file is readable and complete, else what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        return "is a directory"
    if not path.is_file():
        return "no such file"
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(8)
    try:
        if magic[:4] == b"RIFF":
            problem = _riff_problem(path, size)
        elif magic[:7] == b"NIST_1A":
            problem = _nist_problem(path, size)
        else:
            problem = None
        if problem:
            return problem
        info = sf.info(str(path))
    except (OSError, ValueError, RuntimeError, sf.LibsndfileError) as err:
        return f"unreadable: {err}"
    if info.frames == 0:
        return "no audio samples"
    return None
