"""FSDD data prep on fake corpus trees made here: verification, splits, lexicon, connected digits, download."""

import io
import logging
import re
import tarfile

import numpy as np
import pytest
import soundfile as sf
from conftest import make_fsdd_copy

from phonerec.base.config import load_config
from phonerec.base.errors import CorpusError, RecipeError
from phonerec.data.corpora.fsdd import DIGIT_WORDS
from phonerec.data.data_dir import read_table, validate_data_dir
from phonerec.data.lang import read_lexicon, read_phones
from phonerec.pipeline.prepare_stage import prepare_stage


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "fsdd_copy"
    manifest = make_fsdd_copy(root, speakers=("george", "lucas", "nicolas", "theo"), takes=range(3))
    return root, manifest


def prepare(tmp_path, root, manifest, *overrides):
    cfg = load_config(
        [
            f"corpus.root={root}",
            f"corpus.manifest={manifest}",
            f"paths.data={tmp_path}/data",
            f"paths.downloads={tmp_path}/downloads",
            *overrides,
        ]
    )
    prepare_stage(cfg, tmp_path / "data", "fsdd")
    return tmp_path / "data"


def snapshot(root):
    return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*"))


def test_speaker_independent_split_and_lang(tmp_path, corpus):
    root, manifest = corpus
    before = snapshot(root)
    data = prepare(tmp_path, root, manifest)
    assert snapshot(root) == before  # the corpus root is only read
    speakers = {split: set(read_table(data / split / "utt2spk").values()) for split in ("train", "dev", "test")}
    assert speakers == {"train": {"george", "lucas"}, "dev": {"theo"}, "test": {"nicolas"}}
    for split in ("train", "dev", "test"):
        validate_data_dir(data / split, data / "lang")
    text = read_table(data / "train" / "text")
    words = read_table(data / "train" / "text.words")
    assert len(text) == 2 * 10 * 3
    assert text["george_7_02"] == "s eh v ah n" and words["george_7_02"] == "seven"
    assert read_table(data / "train" / "wav.scp")["george_7_02"] == str(root / "recordings" / "7_george_2.wav")
    phones = read_phones(data / "lang")
    assert phones["<blk>"] == 0 and phones["sil"] == 1
    assert list(phones)[2:] == sorted(set(phones) - {"<blk>", "sil"}) and phones["ah"] == 2
    assert "sil" not in " ".join(text.values()).split()


def test_rerun_is_skipped(tmp_path, corpus, caplog):
    root, manifest = corpus
    data = prepare(tmp_path, root, manifest)
    mtime = (data / "train" / "text").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        prepare(tmp_path, root, manifest)
    assert "already done" in caplog.text
    assert (data / "train" / "text").stat().st_mtime_ns == mtime


def test_missing_listed_speaker_warns(tmp_path, corpus, caplog):
    root, manifest = corpus
    with caplog.at_level(logging.WARNING):
        data = prepare(tmp_path, root, manifest, "corpus.dev_speakers=[theo,jackson]")
    assert "jackson is not in this copy" in caplog.text
    assert set(read_table(data / "dev" / "utt2spk").values()) == {"theo"}


def test_explicit_train_list_leaves_others_out(tmp_path, corpus):
    root, manifest = corpus
    data = prepare(tmp_path, root, manifest, "corpus.train_speakers=[lucas]")
    assert set(read_table(data / "train" / "utt2spk").values()) == {"lucas"}


def test_empty_split_is_an_error(tmp_path, corpus):
    root, manifest = corpus
    with pytest.raises(CorpusError, match="test split is empty"):
        prepare(tmp_path, root, manifest, "corpus.test_speakers=[jackson]")


def test_speaker_in_two_lists_is_an_error(tmp_path, corpus):
    root, manifest = corpus
    with pytest.raises(CorpusError, match="theo is in both"):
        prepare(tmp_path, root, manifest, "corpus.test_speakers=[theo]")


def test_a_held_out_speaker_fold(tmp_path, corpus):
    """corpus.held_out_speaker (the leave-one-speaker-out sweep): that training speaker is dev, the dev speakers are
    test, the test speakers in no split."""
    root, manifest = corpus
    data = prepare(tmp_path, root, manifest, "corpus.held_out_speaker=lucas")
    speakers = {split: set(read_table(data / split / "utt2spk").values()) for split in ("train", "dev", "test")}
    assert speakers == {"train": {"george"}, "dev": {"lucas"}, "test": {"theo"}}
    with pytest.raises(CorpusError, match="held_out_speaker=theo is not a training speaker of this split"):
        prepare(tmp_path / "2", root, manifest, "corpus.held_out_speaker=theo")
    with pytest.raises(CorpusError, match="leaving one out needs at least 2"):
        prepare(tmp_path / "3", root, manifest, "corpus.held_out_speaker=lucas", "corpus.train_speakers=[lucas]")
    with pytest.raises(RecipeError, match="needs a corpus split by speakers"):
        load_config([f"corpus.root={root}", "corpus.held_out_speaker=lucas", "corpus.split=takes"])


def test_the_corpus_own_split_by_takes(tmp_path, corpus):
    root, manifest = corpus
    data = prepare(tmp_path, root, manifest, "corpus.split=takes", "corpus.test_takes=[0]", "corpus.dev_takes=[1]")
    for split, take in (("test", "00"), ("dev", "01"), ("train", "02")):
        utts = read_table(data / split / "utt2spk")
        assert len(utts) == 4 * 10 and all(u.endswith(take) for u in utts)


def test_modified_recording_is_named(tmp_path, corpus):
    root, manifest = corpus
    wav = root / "recordings" / "3_lucas_1.wav"
    wav.write_bytes(wav.read_bytes()[:-2] + b"\x01\x02")
    with pytest.raises(CorpusError, match="recordings/3_lucas_1.wav"):
        prepare(tmp_path, root, manifest)


def test_missing_root_and_no_recordings_folder(tmp_path, corpus):
    _, manifest = corpus
    with pytest.raises(CorpusError, match="no such directory"):
        prepare(tmp_path, tmp_path / "nowhere", manifest)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no recordings/ folder"):
        prepare(tmp_path, tmp_path / "empty", manifest)


def test_connected_digits(tmp_path, corpus):
    root, manifest = corpus
    data = prepare(tmp_path, root, manifest, "corpus.connected.enabled=true")
    lexicon = read_lexicon(data / "lang" / "lexicon.txt")
    used = []
    for split in ("train", "dev", "test"):
        validate_data_dir(data / split, data / "lang")
        words = read_table(data / split / "text.words")
        text = read_table(data / split / "text")
        wav_scp = read_table(data / split / "wav.scp")
        for utt, transcript in words.items():
            speaker, _, digits = utt.split("_")
            assert 1 <= len(transcript.split()) <= 7
            assert len(digits) == len(transcript.split())
            assert transcript.split() == [DIGIT_WORDS[int(d)] for d in digits]
            assert text[utt].split() == [p for w in transcript.split() for p in lexicon[w][0]]
            samples, rate = sf.read(wav_scp[utt], dtype="int16")
            assert rate == 8000
            # The pauses hold low-level noise, never a run of digital zeros.
            assert np.count_nonzero(samples == 0) < 0.05 * samples.size
            assert 0 < np.abs(samples[:400]).max() < 200  # the leading pause is quiet but not silent
            used += [(speaker, d) for d in digits]
    # Every recording is used once: per speaker, each digit as often as there are takes.
    assert len(used) == 4 * 10 * 3
    assert all(used.count((s, d)) == 3 for s in ("george", "lucas", "nicolas", "theo") for d in "0123456789")

    first = {p.name: p.read_bytes() for p in (data / "wav").rglob("*.wav")}
    (data / ".done.prepare").unlink()
    prepare(tmp_path, root, manifest, "corpus.connected.enabled=true")
    assert {p.name: p.read_bytes() for p in (data / "wav").rglob("*.wav")} == first  # seeded: reproducible


def make_release_archive(tmp_path, archive, takes):
    """A fake v1.0.10 release archive (free-spoken-digit-dataset-1.0.10/recordings/...); returns its manifest."""
    release = tmp_path / "release" / "free-spoken-digit-dataset-1.0.10"
    manifest = make_fsdd_copy(release, speakers=("george", "nicolas", "theo"), takes=takes)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(release, arcname=release.name)
    return manifest


def test_download_unpacks_and_verifies_a_complete_release(tmp_path, http_server):
    www, base = http_server
    manifest = make_release_archive(tmp_path, www / "v1.0.10.tar.gz", takes=range(2))
    data = prepare(tmp_path, "null", manifest, f"corpus.url={base}/v1.0.10.tar.gz")
    copy = tmp_path / "downloads" / "fsdd" / "free-spoken-digit-dataset-1.0.10"
    assert read_table(data / "train" / "wav.scp")["george_5_01"] == str(copy / "recordings" / "5_george_1.wav")
    assert not (tmp_path / "downloads" / "fsdd" / "v1.0.10.tar.gz.part").exists()

    # A download must be complete: a release missing a recording is refused.
    (copy / "recordings" / "5_george_1.wav").unlink()
    (data / ".done.prepare").unlink()
    with pytest.raises(CorpusError, match="1 of the release's 60 recordings are missing"):
        prepare(tmp_path, "null", manifest, f"corpus.url={base}/v1.0.10.tar.gz")


def test_offline_without_root_names_both_options(tmp_path, corpus):
    _, manifest = corpus
    with pytest.raises(CorpusError) as err:
        prepare(tmp_path, "null", manifest, "corpus.url=http://127.0.0.1:9/v1.0.10.tar.gz")
    assert "http://127.0.0.1:9/v1.0.10.tar.gz" in str(err.value) and "corpus.root=" in str(err.value)


def test_truncated_archive_is_deleted_with_a_clear_error(tmp_path, http_server):
    www, base = http_server
    manifest = make_release_archive(tmp_path, tmp_path / "full.tar.gz", takes=range(1))
    (www / "v1.0.10.tar.gz").write_bytes((tmp_path / "full.tar.gz").read_bytes()[:5000])
    with pytest.raises(CorpusError, match="not a complete archive"):
        prepare(tmp_path, "null", manifest, f"corpus.url={base}/v1.0.10.tar.gz")
    assert not (tmp_path / "downloads" / "fsdd" / "v1.0.10.tar.gz").exists()


@pytest.mark.parametrize(
    "member, problem",
    [
        ("/tmp/evil.sh", "member '/tmp/evil.sh' has an absolute path"),
        ("free-spoken-digit-dataset-1.0.10/../../evil.sh", "climbs out of the archive with '..'"),
        ("other/evil.sh", "member 'other/evil.sh' lies outside the release's folder"),
    ],
)
def test_an_archive_with_a_hostile_member_is_kept_aside_and_not_downloaded_again(
    tmp_path, http_server, member, problem
):
    www, base = http_server
    archive = www / "v1.0.10.tar.gz"
    manifest = make_release_archive(tmp_path, tmp_path / "good.tar.gz", takes=range(1))
    with tarfile.open(tmp_path / "good.tar.gz") as good, tarfile.open(archive, "w:gz") as bad:
        for m in good.getmembers():
            bad.addfile(m, good.extractfile(m) if m.isfile() else None)
        evil = tarfile.TarInfo(member)
        evil.size = 4
        bad.addfile(evil, io.BytesIO(b"boo\n"))
    downloads = tmp_path / "downloads" / "fsdd"
    with pytest.raises(CorpusError, match=rf"not the FSDD release: .*{re.escape(problem)}.*kept as .*\.rejected"):
        prepare(tmp_path, "null", manifest, f"corpus.url={base}/v1.0.10.tar.gz")
    assert (downloads / "v1.0.10.tar.gz.rejected").is_file() and not (downloads / "v1.0.10.tar.gz").exists()
    assert not (downloads / "free-spoken-digit-dataset-1.0.10").exists() and not (tmp_path / "evil.sh").exists()
    archive.unlink()  # a rerun does not download it again: it says why it was refused
    with pytest.raises(CorpusError, match=rf"refused before \(.*{re.escape(problem)}"):
        prepare(tmp_path, "null", manifest, f"corpus.url={base}/v1.0.10.tar.gz")
