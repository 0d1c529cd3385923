"""Kaldi data dirs: writing them, reading their tables, and validating the contract.

A data dir holds, one `<id> <value>` line each, sorted and unique under LC_ALL=C:
  wav.scp     utterance -> audio file (plain paths; a pipe `cmd ... |` only where the caller allows it), or with
              segments, recording -> audio file
  segments    optional: utterance -> `<recording> <start> <end>`, in seconds (end -1: the recording's end), as
              Kaldi's extract-segments reads it; every reader of audio takes an utterance's samples through
              read_utterance_audio
  text        utterance -> phone sequence: without silence for the digit corpora (alignment graphs add it,
              optional), with it for TIMIT, whose transcripts hold their pauses
  text.words  utterance -> word transcript (optional)
  utt2spk     utterance -> speaker; utterance ids start with their speaker id
  spk2utt     speaker -> its utterances
  phones.ctm  hand-labelled phone segments (TIMIT), for alignment accuracy
  words.ctm   hand-labelled word segments (TIMIT's .WRD), for the word tier of alignments (steps/align.py); no
              stage before alignment reads it, so stage 1 leaves it behind
and after feature extraction feats.scp, utt2num_frames and cmvn.scp.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from phonerec.base.errors import DataDirError
from phonerec.base.files import write_text_atomic
from phonerec.data.audio import check_audio_file

log = logging.getLogger(__name__)

REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
MAX_REPORTED_PROBLEMS = 20

# The files of a data dir that later stages read: stage 1 carries them into the feature dir.
DATA_FILES = ("wav.scp", "segments", "text", "text.words", "utt2spk", "spk2utt", "spk2gender", "phones.ctm")
# Kaldi's extract-segments: a segment may end up to this far past its recording's end (cut there); shorter ones are
# an error here, where it skips them.
MAX_SEGMENT_OVERSHOOT = 0.5
MIN_SEGMENT_SECONDS = 0.1  # extract-segments' --min-segment-length


@dataclass
class Utterance:
    utt_id: str
    speaker: str
    wav: str
    phones: list[str]
    words: list[str] = field(default_factory=list)
    recording: str | None = None  # a segment of the recording `wav` with this id (the data dir's segments), or None
    start: float = 0.0  # the segment, in seconds of the recording
    end: float | None = None  # None: the recording's end


@dataclass(frozen=True)
class UtteranceAudio:
    """Where an utterance's samples are: its recording (a file, or a pipe where allowed) and the span of it."""

    path: str
    recording: str
    start: float = 0.0
    end: float | None = None  # None: the recording's end

    @property
    def is_pipe(self) -> bool:
        return self.path.endswith("|")


def seconds_text(seconds: float | None) -> str:
    """A time of segments: at most 6 decimals (a sample at 1 MHz), no trailing zeros; None is Kaldi's -1."""
    return "-1" if seconds is None else f"{seconds:.6f}".rstrip("0").rstrip(".")


def write_table(path: Path, rows: dict[str, str]) -> None:
    """Write `<key> <value>` lines in C-locale order, atomically (a kill leaves the old file or the new)."""
    # Python orders str by code point, which is the byte order of UTF-8: the same as LC_ALL=C sort.
    write_text_atomic(path, "".join(f"{key} {rows[key]}\n" for key in sorted(rows)))


def read_table(path: Path) -> dict[str, str]:
    """`<key> <value>` lines as a dict; for files that were validated (see validate_data_dir)."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition(" ")
            rows[key] = value.strip()
    return rows


def write_data_dir(out_dir: Path, utterances: list[Utterance]) -> None:
    ids = [u.utt_id for u in utterances]
    if len(set(ids)) != len(ids):
        raise DataDirError(f"{out_dir}: duplicate utterance ids")
    spk2utt = defaultdict(list)
    for u in sorted(utterances, key=lambda u: u.utt_id):
        spk2utt[u.speaker].append(u.utt_id)
    if any(u.recording is not None for u in utterances):  # a segments file: then every utterance has a segment
        recordings = {u.recording or u.utt_id: u.wav for u in utterances}
        write_table(out_dir / "wav.scp", recordings)
        write_table(
            out_dir / "segments",
            {u.utt_id: f"{u.recording or u.utt_id} {seconds_text(u.start)} {seconds_text(u.end)}" for u in utterances},
        )
    else:
        (out_dir / "segments").unlink(missing_ok=True)
        write_table(out_dir / "wav.scp", {u.utt_id: u.wav for u in utterances})
    write_table(out_dir / "text", {u.utt_id: " ".join(u.phones) for u in utterances})
    write_table(out_dir / "utt2spk", {u.utt_id: u.speaker for u in utterances})
    write_table(out_dir / "spk2utt", {spk: " ".join(utts) for spk, utts in spk2utt.items()})
    if any(u.words for u in utterances):
        write_table(out_dir / "text.words", {u.utt_id: " ".join(u.words) for u in utterances})


class Problems:
    """Every problem of a set of files found, then reported together, at most MAX_REPORTED_PROBLEMS of them:
    `invalid <subject> (N problems):` and a `file:line: what` line each, raised as `error`."""

    def __init__(self, subject: str, error: type[Exception] = DataDirError):
        self.subject, self.error = subject, error
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_REPORTED_PROBLEMS]
        more = len(self.items) - len(shown)
        tail = f"\n  ... and {more} more" if more else ""
        raise self.error(f"invalid {self.subject} ({len(self.items)} problems):\n  " + "\n  ".join(shown) + tail)


def _read_checked(path: Path, problems: Problems, need_value: bool = True) -> dict[str, tuple[int, str]]:
    """id -> (line number, value), reporting unsorted, duplicate, empty and id-only lines."""
    rows: dict[str, tuple[int, str]] = {}
    prev = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            parts = line.strip().split(maxsplit=1)
            if not parts:
                problems.add(where, "empty line")
                continue
            key = parts[0]
            value = parts[1] if len(parts) > 1 else ""
            if key in rows:
                problems.add(where, f"duplicate id '{key}' (first on line {rows[key][0]})")
                continue
            if prev is not None and key < prev:
                problems.add(where, f"not sorted (LC_ALL=C): '{key}' after '{prev}'")
            if need_value and not value:
                problems.add(where, f"'{key}' has no value")
            rows[key] = (lineno, value)
            prev = key
    return rows


def read_utterance_audio(data_dir: Path) -> dict[str, UtteranceAudio]:
    """utterance -> its audio, of a data dir's wav.scp and, where it has one, segments (a validated data dir)."""
    data_dir = Path(data_dir)
    wav_scp = read_table(data_dir / "wav.scp")
    if not (data_dir / "segments").is_file():
        return {utt: UtteranceAudio(path, utt) for utt, path in wav_scp.items()}
    audio = {}
    for utt, value in read_table(data_dir / "segments").items():
        recording, start, end = value.split()
        audio[utt] = UtteranceAudio(wav_scp[recording], recording, float(start), None if end == "-1" else float(end))
    return audio


def read_symbol_table(path: Path) -> dict[str, int]:
    return {sym: int(i) for sym, i in read_table(path).items()}


def validate_data_dir(
    data_dir: Path, lang_dir: Path | None = None, check_audio: bool = True, allow_pipes: bool = False
) -> int:
    """Check a data dir; raise DataDirError naming each bad file:line, else return the utterance count.

    lang_dir: every phone in `text` must be in its phones.txt. check_audio: every wav.scp entry must be
    a complete, readable audio file (the header's data size is checked against the file size), and every segment
    inside its recording. allow_pipes: wav.scp may hold pipes (`cmd ... |`), which are then not checked (that would
    run them); otherwise each is an error naming its line."""
    data_dir = Path(data_dir)
    problems = Problems(f"data dir {data_dir}")
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: no such data dir")
    missing = [name for name in REQUIRED_FILES if not (data_dir / name).is_file()]
    if missing:
        hint = " (utils/utt2spk_to_spk2utt.pl makes spk2utt of utt2spk)" if missing == ["spk2utt"] else ""
        raise DataDirError(f"{data_dir}: missing {', '.join(missing)}{hint}")

    tables = {name: _read_checked(data_dir / name, problems) for name in REQUIRED_FILES}
    wav_scp, text, utt2spk, spk2utt = (tables[n] for n in REQUIRED_FILES)
    if not utt2spk:
        problems.add(str(data_dir / "utt2spk"), "no utterances")

    # The same utterances everywhere: in segments, or else in wav.scp.
    segments, spans = _check_segments(data_dir, wav_scp, problems) if (data_dir / "segments").is_file() else (None, {})
    keyed_by_utterance = {"text": text, "segments" if segments is not None else "wav.scp": segments or wav_scp}
    for name, table in keyed_by_utterance.items():
        for utt in utt2spk.keys() - table.keys():
            problems.add(f"{data_dir / 'utt2spk'}:{utt2spk[utt][0]}", f"utterance '{utt}' is not in {name}")
        for utt in table.keys() - utt2spk.keys():
            problems.add(f"{data_dir / name}:{table[utt][0]}", f"utterance '{utt}' is not in utt2spk")

    # utt2spk sorted by utterance must also be sorted by speaker (speaker-prefixed ids), and agree with spk2utt.
    expected_spk2utt = defaultdict(list)
    prev_spk = None
    for utt, (lineno, spk) in utt2spk.items():
        if prev_spk is not None and spk < prev_spk:
            problems.add(
                f"{data_dir / 'utt2spk'}:{lineno}",
                f"speaker '{spk}' after '{prev_spk}': utterance ids must start with their speaker id",
            )
        prev_spk = spk
        expected_spk2utt[spk].append(utt)
    for spk, (lineno, utts) in spk2utt.items():
        if utts.split() != expected_spk2utt.get(spk, []):
            problems.add(
                f"{data_dir / 'spk2utt'}:{lineno}",
                f"speaker '{spk}' lists {len(utts.split())} utterances that differ from utt2spk's "
                f"{len(expected_spk2utt.get(spk, []))}",
            )
    for spk in expected_spk2utt.keys() - spk2utt.keys():
        first_line = utt2spk[expected_spk2utt[spk][0]][0]
        problems.add(f"{data_dir / 'utt2spk'}:{first_line}", f"speaker '{spk}' is missing from spk2utt")

    if lang_dir is not None:
        phones = read_symbol_table(Path(lang_dir) / "phones.txt")
        for utt, (lineno, value) in text.items():
            for phone in value.split():
                if phone not in phones:
                    problems.add(
                        f"{data_dir / 'text'}:{lineno}",
                        f"'{utt}': phone '{phone}' is not in {Path(lang_dir) / 'phones.txt'}",
                    )

    if (data_dir / "text.words").is_file():
        words = _read_checked(data_dir / "text.words", problems)
        if words.keys() != utt2spk.keys():
            problems.add(str(data_dir / "text.words"), "utterances differ from utt2spk")
    if (data_dir / "spk2gender").is_file():
        for spk, (lineno, gender) in _read_checked(data_dir / "spk2gender", problems).items():
            if gender not in ("m", "f"):
                problems.add(
                    f"{data_dir / 'spk2gender'}:{lineno}", f"speaker '{spk}': gender '{gender}', expected m or f"
                )

    for rec, (lineno, value) in wav_scp.items():
        where = f"{data_dir / 'wav.scp'}:{lineno}"
        if value.endswith("|"):
            if not allow_pipes:
                problems.add(
                    where,
                    f"'{rec}': a pipe (a command to run); they run only with corpus.allow_pipes=true, as they "
                    "execute commands from a file: check them first, or give audio files",
                )
            continue
        if not check_audio:
            continue
        problem = check_audio_file(value)
        if problem:
            problems.add(where, f"'{rec}': {value}: {problem}")
        elif rec in spans:
            _check_spans(data_dir, rec, value, spans[rec], problems)

    _validate_features(data_dir, utt2spk, problems)
    problems.raise_if_any()
    return len(utt2spk)


def _check_segments(data_dir: Path, wav_scp: dict, problems: Problems) -> tuple[dict, dict]:
    """segments' lines, each `<recording> <start> <end>` of a recording in wav.scp, start >= 0 and end > start (or
    -1); and recording -> its segments' (utterance, line, start, end)."""
    segments = _read_checked(data_dir / "segments", problems)
    spans = defaultdict(list)
    for utt, (lineno, value) in segments.items():
        where, fields = f"{data_dir / 'segments'}:{lineno}", value.split()
        if len(fields) != 3:
            problems.add(where, f"'{utt}': expected <recording> <start> <end>, got '{value}'")
            continue
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            problems.add(where, f"'{utt}': start and end must be seconds, got '{fields[1]} {fields[2]}'")
            continue
        if fields[0] not in wav_scp:
            problems.add(where, f"'{utt}': recording '{fields[0]}' is not in wav.scp")
        elif start < 0 or (end != -1 and end - start < MIN_SEGMENT_SECONDS):
            problems.add(
                where,
                f"'{utt}': segment {fields[1]}-{fields[2]} s: expected 0 <= start and end - start >= "
                f"{MIN_SEGMENT_SECONDS} s (or end -1, the recording's end)",
            )
        else:
            spans[fields[0]].append((utt, lineno, start, end))
    return segments, spans


def _check_spans(data_dir: Path, recording: str, path: str, spans: list, problems: Problems) -> None:
    """The recording's segments start inside it and end at most MAX_SEGMENT_OVERSHOOT past its end."""
    info = sf.info(path)
    length = info.frames / info.samplerate
    for utt, lineno, start, end in spans:
        if start >= length or end > length + MAX_SEGMENT_OVERSHOOT:
            problems.add(
                f"{data_dir / 'segments'}:{lineno}",
                f"'{utt}': segment {start:g}-{end:g} s is past the end of '{recording}' ({length:.2f} s, {path})",
            )


def _validate_features(data_dir: Path, utt2spk: dict, problems: Problems) -> None:
    feats_scp = data_dir / "feats.scp"
    if not feats_scp.is_file():
        return
    feats = _read_checked(feats_scp, problems)
    if feats.keys() != utt2spk.keys():
        problems.add(str(feats_scp), f"{len(feats)} utterances, utt2spk has {len(utt2spk)}")
    for utt, (lineno, value) in feats.items():
        ark, _, offset = value.rpartition(":")
        if not Path(ark).is_file() or not offset.isdigit() or int(offset) >= Path(ark).stat().st_size:
            problems.add(f"{feats_scp}:{lineno}", f"'{utt}': {value} is not inside an existing ark file")
    num_frames_file = data_dir / "utt2num_frames"
    if not num_frames_file.is_file():
        problems.add(str(num_frames_file), "missing (feats.scp needs it)")
    else:
        num_frames = _read_checked(num_frames_file, problems)
        for utt, (lineno, value) in num_frames.items():
            if not value.isdigit() or int(value) == 0:
                problems.add(f"{num_frames_file}:{lineno}", f"'{utt}': bad frame count '{value}'")
        if num_frames.keys() != feats.keys():
            problems.add(str(num_frames_file), "utterances differ from feats.scp")
    cmvn_scp = data_dir / "cmvn.scp"
    if cmvn_scp.is_file():
        cmvn_keys = _read_checked(cmvn_scp, problems).keys()
        speakers = set(v for _, v in utt2spk.values())
        if cmvn_keys != speakers and cmvn_keys != utt2spk.keys():
            problems.add(str(cmvn_scp), "keys are neither the speakers nor the utterances of utt2spk")
