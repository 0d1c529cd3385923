"""Kaldi data dirs: write_data_dir, read_table, validate_data_dir, the audio header check, and the CLI step."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, project_env, write_wav

from phonerec.base.errors import DataDirError
from phonerec.data.audio import check_audio_file, read_audio
from phonerec.data.data_dir import Utterance, read_table, validate_data_dir, write_data_dir

PHONES = ["a", "b", "k", "t"]
# utterance id -> (speaker, phones); ids start with their speaker id. Line numbers below follow this order.
UTTS = {
    "alice_01": ("alice", ["a", "b"]),
    "alice_02": ("alice", ["k", "a", "t"]),
    "bob_01": ("bob", ["t", "a"]),
    "bob_02": ("bob", ["b", "a", "k"]),
    "bob_03": ("bob", ["a"]),
}


@dataclass
class Dirs:
    data: Path
    lang: Path
    wavs: dict[str, Path]


@pytest.fixture
def dirs(tmp_path) -> Dirs:
    wavs = {utt: write_wav(tmp_path / "wav" / f"{utt}.wav", seconds=0.1, seed=i) for i, utt in enumerate(UTTS)}
    # Given out of order: write_data_dir sorts.
    utterances = [Utterance(utt, spk, str(wavs[utt]), phones) for utt, (spk, phones) in reversed(UTTS.items())]
    write_data_dir(tmp_path / "data", utterances)
    lang = tmp_path / "lang"
    lang.mkdir()
    (lang / "phones.txt").write_text("<blk> 0\nsil 1\n" + "".join(f"{p} {i}\n" for i, p in enumerate(PHONES, 2)))
    return Dirs(tmp_path / "data", lang, wavs)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_lines(path: Path, rows: list[str]) -> None:
    path.write_text("".join(row + "\n" for row in rows))


def set_value(path: Path, key: str, value: str) -> None:
    """Replace the value on `key`'s line, keeping the line where it is."""
    rows = lines(path)
    index = [row.split()[0] for row in rows].index(key)
    rows[index] = f"{key} {value}".rstrip()
    write_lines(path, rows)


def validation_error(d: Dirs, lang: Path | None = None) -> str:
    with pytest.raises(DataDirError) as info:
        validate_data_dir(d.data, lang)
    return str(info.value)


def truncate(path: Path, keep_bytes: int) -> None:
    path.write_bytes(path.read_bytes()[:keep_bytes])


def test_written_dir_is_valid_and_sorted(dirs):
    assert validate_data_dir(dirs.data, dirs.lang) == len(UTTS)
    assert validate_data_dir(dirs.data) == len(UTTS)
    for name in ("wav.scp", "text", "utt2spk"):
        assert [row.split()[0] for row in lines(dirs.data / name)] == list(UTTS)
    assert read_table(dirs.data / "text") == {utt: " ".join(phones) for utt, (_, phones) in UTTS.items()}
    assert read_table(dirs.data / "utt2spk") == {utt: spk for utt, (spk, _) in UTTS.items()}
    assert read_table(dirs.data / "wav.scp") == {utt: str(path) for utt, path in dirs.wavs.items()}
    assert {spk: utts.split() for spk, utts in read_table(dirs.data / "spk2utt").items()} == {
        "alice": ["alice_01", "alice_02"],
        "bob": ["bob_01", "bob_02", "bob_03"],
    }
    assert not (dirs.data / "text.words").exists()


def test_write_data_dir_rejects_duplicate_ids(tmp_path):
    utt = Utterance("alice_01", "alice", "x.wav", ["a"])
    with pytest.raises(DataDirError, match="duplicate"):
        write_data_dir(tmp_path / "data", [utt, utt])


def test_sort_order_is_c_locale(tmp_path):
    # In the C locale upper case sorts before lower case: 'Zed' < 'alice'; a dictionary order puts alice first.
    utterances = [
        Utterance("alice_01", "alice", str(write_wav(tmp_path / "a.wav")), ["a"]),
        Utterance("Zed_01", "Zed", str(write_wav(tmp_path / "z.wav")), ["b"]),
    ]
    write_data_dir(tmp_path / "data", utterances)
    assert [row.split()[0] for row in lines(tmp_path / "data" / "text")] == ["Zed_01", "alice_01"]
    assert validate_data_dir(tmp_path / "data") == 2

    write_lines(tmp_path / "data" / "text", ["alice_01 a", "Zed_01 b"])
    with pytest.raises(DataDirError) as info:
        validate_data_dir(tmp_path / "data")
    assert f"{tmp_path / 'data' / 'text'}:2: not sorted (LC_ALL=C): 'Zed_01' after 'alice_01'" in str(info.value)


# Each case breaks the valid dir; the error must name file:line, the offending id and what is wrong.
def swap_text_lines_2_3(d):
    rows = lines(d.data / "text")
    rows[1], rows[2] = rows[2], rows[1]
    write_lines(d.data / "text", rows)


def duplicate_utt2spk_line_2(d):
    rows = lines(d.data / "utt2spk")
    write_lines(d.data / "utt2spk", rows[:2] + [rows[1]] + rows[2:])


def drop_bob_03_from_spk2utt(d):
    set_value(d.data / "spk2utt", "bob", "bob_01 bob_02")


def drop_alice_from_spk2utt(d):
    write_lines(d.data / "spk2utt", lines(d.data / "spk2utt")[1:])


def swap_speakers_in_utt2spk(d):
    # Still sorted by utterance, but alice_* now belong to bob and bob_* to alice: not sorted by speaker.
    write_lines(d.data / "utt2spk", [f"{utt} {'bob' if spk == 'alice' else 'alice'}" for utt, (spk, _) in UTTS.items()])
    write_lines(d.data / "spk2utt", ["alice bob_01 bob_02 bob_03", "bob alice_01 alice_02"])


def extra_utt_in_text(d):
    write_lines(d.data / "text", lines(d.data / "text") + ["bob_04 a b"])


def delete_wav_of_bob_02(d):
    d.wavs["bob_02"].unlink()


def garbage_wav_for_alice_01(d):
    d.wavs["alice_01"].write_bytes(b"this is not audio at all " * 20)


def zero_sample_wav_for_bob_01(d):
    sf.write(str(d.wavs["bob_01"]), np.zeros(0, dtype=np.int16), 8000, subtype="PCM_16")


def empty_transcript_for_alice_02(d):
    set_value(d.data / "text", "alice_02", "")


def unknown_phone_for_alice_02(d):
    set_value(d.data / "text", "alice_02", "k zz t")


def pipe_for_bob_01(d):
    set_value(d.data / "wav.scp", "bob_01", f"sox {d.wavs['bob_01']} -t wav - |")


BAD_CASES = [
    (swap_text_lines_2_3, "text:3", ["not sorted (LC_ALL=C): 'alice_02' after 'bob_01'"]),
    (duplicate_utt2spk_line_2, "utt2spk:3", ["duplicate id 'alice_02' (first on line 2)"]),
    (drop_bob_03_from_spk2utt, "spk2utt:2", ["speaker 'bob' lists 2 utterances that differ from utt2spk's 3"]),
    (drop_alice_from_spk2utt, "utt2spk:1", ["speaker 'alice' is missing from spk2utt"]),
    (swap_speakers_in_utt2spk, "utt2spk:3", ["speaker 'alice' after 'bob'", "must start with their speaker id"]),
    (extra_utt_in_text, "text:6", ["utterance 'bob_04' is not in utt2spk"]),
    (delete_wav_of_bob_02, "wav.scp:4", ["'bob_02'", "bob_02.wav: no such file"]),
    (garbage_wav_for_alice_01, "wav.scp:1", ["'alice_01'", "alice_01.wav: unreadable"]),
    (zero_sample_wav_for_bob_01, "wav.scp:3", ["'bob_01'", "bob_01.wav: no audio samples"]),
    (empty_transcript_for_alice_02, "text:2", ["'alice_02' has no value"]),
    (unknown_phone_for_alice_02, "text:2", ["'alice_02': phone 'zz' is not in", "phones.txt"]),
    (pipe_for_bob_01, "wav.scp:3", ["'bob_01': a pipe (a command to run)", "corpus.allow_pipes=true"]),
]


@pytest.mark.parametrize("break_dir, where, fragments", BAD_CASES, ids=[case[0].__name__ for case in BAD_CASES])
def test_bad_dir_names_file_line_and_id(dirs, break_dir, where, fragments):
    break_dir(dirs)
    message = validation_error(dirs, dirs.lang)
    # One reported problem, "<data dir>/<file>:<line>: ...", holds all the fragments.
    problems = [line.strip() for line in message.splitlines() if line.strip().startswith(f"{dirs.data / where}: ")]
    assert any(all(fragment in problem for fragment in fragments) for problem in problems), message


def test_unknown_phone_is_not_checked_without_lang_dir(dirs):
    unknown_phone_for_alice_02(dirs)
    assert validate_data_dir(dirs.data, None) == len(UTTS)


def test_audio_is_not_checked_with_check_audio_false(dirs):
    delete_wav_of_bob_02(dirs)
    assert validate_data_dir(dirs.data, dirs.lang, check_audio=False) == len(UTTS)


def test_truncated_riff_wav_is_reported(dirs):
    wav = dirs.wavs["bob_02"]
    full_size = wav.stat().st_size
    truncate(wav, full_size // 2)
    # soundfile reads the truncated file without complaint: the reason for the header check.
    samples, _ = sf.read(str(wav), dtype="int16")
    assert 0 < len(samples) < (full_size - 44) // 2

    problem = check_audio_file(wav)
    assert problem is not None and problem.startswith("truncated")
    message = validation_error(dirs)
    assert f"{dirs.data / 'wav.scp'}:4: 'bob_02': {wav}: truncated" in message


def test_truncated_nist_sphere_is_reported(dirs):
    sph = dirs.wavs["bob_01"].with_suffix(".sph")
    sf.write(str(sph), np.arange(800, dtype=np.int16), 8000, format="NIST", subtype="PCM_16")
    assert sph.read_bytes().startswith(b"NIST_1A")
    set_value(dirs.data / "wav.scp", "bob_01", str(sph))
    assert validate_data_dir(dirs.data) == len(UTTS)

    truncate(sph, sph.stat().st_size - 100)
    samples, _ = sf.read(str(sph), dtype="int16")  # soundfile again reads what is there
    assert 0 < len(samples) < 800
    message = validation_error(dirs)
    assert f"{dirs.data / 'wav.scp'}:3: 'bob_01': {sph}: truncated" in message


def test_check_audio_file_accepts_complete_riff_and_nist(tmp_path):
    data = (1000 * np.sin(np.arange(1600) / 5)).astype(np.int16)
    sf.write(str(tmp_path / "a.wav"), data, 16000, subtype="PCM_16")
    sf.write(str(tmp_path / "a.sph"), data, 16000, format="NIST", subtype="PCM_16")
    assert check_audio_file(tmp_path / "a.wav") is None
    assert check_audio_file(tmp_path / "a.sph") is None
    assert check_audio_file(str(tmp_path / "missing.wav")) == "no such file"


def test_read_audio_reads_nist_with_wav_extension(tmp_path):
    data = np.arange(-400, 400, dtype=np.int16)
    nist_as_wav = tmp_path / "really_nist.wav"
    sf.write(str(nist_as_wav), data, 16000, format="NIST", subtype="PCM_16")
    assert nist_as_wav.read_bytes().startswith(b"NIST_1A")
    assert check_audio_file(nist_as_wav) is None
    samples, rate = read_audio(nist_as_wav)
    assert rate == 16000
    np.testing.assert_array_equal(samples, data)


def test_read_audio_returns_int16_mono_and_rate(tmp_path):
    path = write_wav(tmp_path / "a.wav", seconds=0.25, rate=8000)
    samples, rate = read_audio(path)
    assert rate == 8000
    assert samples.dtype == np.int16 and samples.shape == (2000,)
    np.testing.assert_array_equal(samples, sf.read(str(path), dtype="int16")[0])


def test_read_audio_rejects_stereo(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.zeros((100, 2), dtype=np.int16), 8000, subtype="PCM_16")
    with pytest.raises(ValueError, match="2 channels, expected mono"):
        read_audio(path)


# Features: validate_data_dir only checks that each feats.scp offset lies inside its ark file, so a stand-in ark
# of the right size will do.
ARK_SIZE = 1000


def add_features(d: Dirs) -> Path:
    ark = d.data / "data" / "feats.ark"
    ark.parent.mkdir()
    ark.write_bytes(bytes(ARK_SIZE))
    write_lines(d.data / "feats.scp", [f"{utt} {ark}:{10 + 100 * i}" for i, utt in enumerate(UTTS)])
    write_lines(d.data / "utt2num_frames", [f"{utt} {8 + i}" for i, utt in enumerate(UTTS)])
    return ark


def test_features_valid(dirs):
    add_features(dirs)
    assert validate_data_dir(dirs.data, dirs.lang) == len(UTTS)


@pytest.mark.parametrize("offset", [ARK_SIZE, ARK_SIZE + 500])
def test_feats_offset_past_end_of_ark(dirs, offset):
    ark = add_features(dirs)
    set_value(dirs.data / "feats.scp", "bob_02", f"{ark}:{offset}")
    message = validation_error(dirs, dirs.lang)
    assert f"{dirs.data / 'feats.scp'}:4: 'bob_02': {ark}:{offset} is not inside an existing ark file" in message


def test_feats_without_utt2num_frames(dirs):
    add_features(dirs)
    (dirs.data / "utt2num_frames").unlink()
    message = validation_error(dirs, dirs.lang)
    assert f"{dirs.data / 'utt2num_frames'}: missing (feats.scp needs it)" in message


def run_step(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "steps" / "validate_data_dir.py"), *map(str, args)],
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_good_and_bad_dir(dirs):
    good = run_step(dirs.data, "--lang", dirs.lang)
    assert good.returncode == 0, good.stderr
    assert f"{dirs.data}: valid, {len(UTTS)} utterances" in good.stdout

    duplicate_utt2spk_line_2(dirs)
    bad = run_step(dirs.data, "--lang", dirs.lang)
    assert bad.returncode == 1
    assert "valid," not in bad.stdout
    assert f"{dirs.data / 'utt2spk'}:3: duplicate id 'alice_02'" in bad.stderr
