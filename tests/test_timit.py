"""TIMIT prep on fixture trees made here: the LDC layout (upper case, NIST SPHERE), the public sample's layout
(lower case, RIFF and NIST under .wav), phone folding, Kaldi's speaker lists, the sample download."""

import hashlib
import zipfile

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from phonerec.base.config import load_config, repo_path
from phonerec.base.errors import CorpusError
from phonerec.data.corpora.timit import fold_segments, read_phn, read_wrd
from phonerec.data.data_dir import read_table
from phonerec.hmm.align_eval import read_ctm
from phonerec.pipeline.prepare_stage import prepare_stage
from phonerec.scoring.error_rate import fold_phones, read_phone_map

PHONES = repo_path("local/timit/phones.tsv")
# (start, end, label) in samples at 16 kHz: q inside, closures, silence at both ends.
PHN = [
    (0, 1600, "h#"),
    (1600, 2400, "q"),
    (2400, 4000, "ih"),
    (4000, 4800, "tcl"),
    (4800, 5600, "t"),
    (5600, 6400, "pau"),
    (6400, 7200, "bcl"),
    (7200, 8000, "b"),
    (8000, 9600, "ao"),
    (9600, 11200, "h#"),
]
WRD = [(1600, 5600, "it"), (6400, 9600, "ball")]


def write_utterance(folder, name, nist: bool, upper: bool):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    samples = (rng.normal(0, 2000, 11200)).astype(np.int16)

    def path(ext):
        return folder / (f"{name}.{ext}".upper() if upper else f"{name}.{ext}")

    sf.write(str(path("wav")), samples, 16000, format="NIST" if nist else "WAV", subtype="PCM_16")
    path("phn").write_text("".join(f"{s} {e} {label}\n" for s, e, label in PHN))
    path("wrd").write_text("".join(f"{s} {e} {word}\n" for s, e, word in WRD))
    path("txt").write_text("0 11200 It ball.\n")


def make_ldc(root):
    """Upper-case LDC layout: train speakers, a dev-list speaker, a core-test speaker, one in neither list."""
    for part, dialect, speaker in (
        ("TRAIN", "DR1", "FCJF0"),
        ("TRAIN", "DR2", "MABC0"),
        ("TEST", "DR1", "FAKS0"),
        ("TEST", "DR3", "MDAB0"),
        ("TEST", "DR4", "MZZZ0"),
    ):
        for sentence in ("SA1", "SI648", "SX38"):
            write_utterance(root / "TIMIT" / part / dialect / speaker, sentence, nist=True, upper=True)
    return root


def make_sample(root):
    for speaker in ("dr1-fvmh0", "dr1-mcpm0", "dr6-fapb0", "dr7-fblv0"):
        for k, sentence in enumerate(("sa1", "si836", "sx116")):
            write_utterance(root / "timit" / speaker, sentence, nist=k == 1, upper=False)
    (root / "timit" / "README").write_text("TIMIT CORPUS SAMPLE\n")
    return root


def prepare(tmp_path, root, *overrides):
    cfg = load_config(
        [
            "recipe=timit_sample",
            f"corpus.root={root}",
            f"paths.data={tmp_path}/data",
            f"paths.downloads={tmp_path}/downloads",
            *overrides,
        ]
    )
    prepare_stage(cfg, tmp_path / "data", "timit")
    return tmp_path / "data"


def test_phone_folding_61_48_39():
    to48 = read_phone_map(PHONES, source="timit61", target="train48")
    to39 = read_phone_map(PHONES, source="timit61", target="score39")
    labels = [label for _, _, label in PHN]
    assert fold_phones(labels, to48) == ["sil", "ih", "cl", "t", "sil", "vcl", "b", "ao", "sil"]
    assert fold_phones(labels, to39) == ["sil", "ih", "sil", "t", "sil", "sil", "b", "aa", "sil"]
    assert len(to48) == 61 and to48["q"] is None and len(set(to48.values()) - {None}) == 48
    assert len(set(to39.values()) - {None}) == 39
    # 48 -> 39 from the training set, as scoring folds hypotheses: consistent for every 48-set phone.
    from48 = read_phone_map(PHONES, source="train48", target="score39")
    assert len(from48) == 48 and from48["vcl"] == "sil" and from48["cl"] == "sil" and from48["ao"] == "aa"


def test_fold_segments_deletes_q_and_merges_equal_neighbours():
    to39 = read_phone_map(PHONES, source="timit61", target="score39")
    segments = fold_segments(PHN, to39, 16000, "x.phn")
    # q's time goes to h# before it; tcl/t stay apart; pau, bcl fold to sil and merge.
    assert [(s.label, s.start, s.end) for s in segments] == [
        ("sil", 0.0, 0.15),
        ("ih", 0.15, 0.25),
        ("sil", 0.25, 0.3),
        ("t", 0.3, 0.35),
        ("sil", 0.35, 0.45),
        ("b", 0.45, 0.5),
        ("aa", 0.5, 0.6),
        ("sil", 0.6, 0.7),
    ]
    # A q at the utterance start gives its time to the segment after it.
    first = fold_segments([(0, 800, "q"), (800, 1600, "ih")], to39, 16000, "x.phn")
    assert [(s.label, s.start, s.end) for s in first] == [("ih", 0.0, 0.1)]


def test_speaker_lists_are_kaldis():
    lists = OmegaConf.load(repo_path("local/timit/speakers.yaml"))
    assert len(set(lists.dev)) == 50 and len(set(lists.core_test)) == 24
    assert not set(lists.dev) & set(lists.core_test)
    assert "faks0" in lists.dev and "mdab0" in lists.core_test


def test_ldc_layout_upper_case_nist(tmp_path):
    root = make_ldc(tmp_path / "ldc")
    data = prepare(tmp_path, root)
    speakers = {split: set(read_table(data / split / "utt2spk").values()) for split in ("train", "dev", "test")}
    assert speakers == {"train": {"fcjf0", "mabc0"}, "dev": {"faks0"}, "test": {"mdab0"}}
    text = read_table(data / "train" / "text")
    assert sorted(text) == ["fcjf0_si648", "fcjf0_sx38", "mabc0_si648", "mabc0_sx38"]  # no SA
    assert text["fcjf0_si648"] == "sil ih cl t sil vcl b ao sil"
    assert read_table(data / "train" / "text.words")["fcjf0_si648"] == "it ball"
    assert read_table(data / "train" / "wav.scp")["fcjf0_si648"].endswith("TIMIT/TRAIN/DR1/FCJF0/SI648.WAV")
    ctm = read_ctm(data / "train" / "phones.ctm")["fcjf0_si648"]
    assert [s.label for s in ctm] == text["fcjf0_si648"].split()
    assert ctm[1].start == pytest.approx(0.15) and ctm[-1].end == pytest.approx(0.7)
    phones = read_table(data / "lang" / "phones.txt")
    assert len(phones) == 1 + 48 and phones["<blk>"] == "0" and phones["sil"] == "1"

    data_sa = prepare(tmp_path / "with_sa", root, "corpus.include_sa=true")
    assert "fcjf0_sa1" in read_table(data_sa / "train" / "text")


def test_sample_layout_and_39_phone_training_set(tmp_path):
    root = make_sample(tmp_path / "sample")
    data = prepare(
        tmp_path,
        root,
        "corpus.sample_dev_speakers=[dr7-fblv0]",
        "corpus.sample_test_speakers=[fapb0]",
        "corpus.train_phones=score39",
    )
    assert set(read_table(data / "dev" / "utt2spk").values()) == {"fblv0"}
    assert set(read_table(data / "test" / "utt2spk").values()) == {"fapb0"}
    assert set(read_table(data / "train" / "utt2spk").values()) == {"fvmh0", "mcpm0"}
    assert read_table(data / "train" / "text")["fvmh0_si836"] == "sil ih sil t sil b aa sil"  # the NIST one
    assert len(read_table(data / "lang" / "phones.txt")) == 1 + 39


def test_no_timit_below_root_and_empty_split(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no TIMIT transcriptions"):
        prepare(tmp_path, tmp_path / "empty")
    root = make_sample(tmp_path / "sample")
    with pytest.raises(CorpusError, match="dev split is empty"):
        prepare(tmp_path, root, "corpus.sample_dev_speakers=[dr9-nobody0]")


@pytest.fixture
def served_zip(tmp_path, http_server):
    www, base = http_server
    make_sample(tmp_path / "zipme")
    with zipfile.ZipFile(www / "timit.zip", "w") as zf:
        for path in sorted((tmp_path / "zipme").rglob("*")):
            zf.write(path, path.relative_to(tmp_path / "zipme"))
    archive = (www / "timit.zip").read_bytes()
    return f"{base}/timit.zip", len(archive), hashlib.md5(archive).hexdigest()


def test_sample_download_checked_by_size_and_md5(tmp_path, served_zip):
    url, size, md5 = served_zip
    speakers = ["corpus.sample_dev_speakers=[dr7-fblv0]", "corpus.sample_test_speakers=[dr6-fapb0]"]
    data = prepare(
        tmp_path,
        "null",
        f"corpus.sample_url={url}",
        f"corpus.sample_size={size}",
        f"corpus.sample_md5={md5}",
        *speakers,
    )
    assert (tmp_path / "downloads" / "timit" / "timit_sample" / "timit" / "dr1-fvmh0").is_dir()
    assert len(read_table(data / "train" / "text")) == 4
    with pytest.raises(CorpusError, match="MD5"):
        prepare(
            tmp_path / "again",
            "null",
            f"corpus.sample_url={url}",
            f"corpus.sample_size={size}",
            "corpus.sample_md5=00000000000000000000000000000000",
            *speakers,
        )


def test_overlapping_words_of_a_wrd_file_split_at_the_middle_of_their_overlap(tmp_path):
    wrd = tmp_path / "sa1.wrd"
    wrd.write_text("3050 5723 She\n5723 10337 had\n9190 11517 your\n")
    words = read_wrd(wrd, 16000)
    assert [w.label for w in words] == ["she", "had", "your"]
    assert words[1].end == words[2].start == (9190 + 10337) / 2 / 16000
    assert words[0].end == words[1].start == 5723 / 16000


def test_linked_corpus_folders_are_followed_and_a_link_loop_ends(tmp_path):
    """Kaldi users link corpora: the root's TIMIT folder and a speaker folder are symbolic links, and one speaker
    folder links back up the tree."""
    real = make_ldc(tmp_path / "real")
    linked = tmp_path / "linked"
    (linked / "TIMIT" / "TRAIN" / "DR1").mkdir(parents=True)
    (linked / "TIMIT" / "TRAIN" / "DR1" / "FCJF0").symlink_to(real / "TIMIT" / "TRAIN" / "DR1" / "FCJF0")
    (linked / "TIMIT" / "TRAIN" / "DR2").symlink_to(real / "TIMIT" / "TRAIN" / "DR2")
    (linked / "TIMIT" / "TEST").symlink_to(real / "TIMIT" / "TEST")
    (linked / "TIMIT" / "TRAIN" / "DR1" / "UP").symlink_to(linked / "TIMIT")  # a loop
    data = prepare(tmp_path, linked)
    speakers = {split: set(read_table(data / split / "utt2spk").values()) for split in ("train", "dev", "test")}
    assert speakers == {"train": {"fcjf0", "mabc0"}, "dev": {"faks0"}, "test": {"mdab0"}}
    assert len(read_table(data / "train" / "text")) == 4  # each utterance once, the loop walked no further


def _rewrite_phn(path, rows):
    path.write_text("".join(f"{s} {e} {label}\n" for s, e, label in rows))


@pytest.mark.parametrize(
    "case, rows, match",
    [
        # ih and tcl swapped: read in file order this trained "sil ih t cl ..." as "sil cl ih t ...".
        (
            "order",
            PHN[:2] + [PHN[3], PHN[2]] + PHN[4:],
            r"si836\.phn:4: .* before the one of line 3 .* out of time order",
        ),
        (
            "overlap",
            PHN[:3] + [(3900, 4800, "tcl")] + PHN[4:],
            r"si836\.phn:4: .* inside the one of line 3 .* overlapping",
        ),
    ],
)
def test_phn_segments_out_of_order_or_overlapping_are_refused_naming_the_line(tmp_path, case, rows, match):
    root = make_sample(tmp_path / "sample")
    _rewrite_phn(root / "timit" / "dr1-fvmh0" / "si836.phn", rows)
    with pytest.raises(CorpusError, match=match):
        prepare(tmp_path, root)


def test_touching_segments_are_fine_and_the_real_sample_prepares(tmp_path):
    """Touching phone segments (one ends where the next starts) are every .phn's shape; words may overlap (the
    sample's sa1 "had your"). The public sample in ../shared (where present) trips none of the checks."""
    _rewrite_phn(tmp_path / "x.phn", PHN)
    assert read_phn(tmp_path / "x.phn") == PHN
    shared = repo_path("..") / "shared" / "corpora" / "timit_sample"
    if not shared.is_dir():
        pytest.skip(f"{shared}: not here")
    data = prepare(tmp_path, shared)
    assert sum(len(read_table(data / split / "text")) for split in ("train", "dev", "test")) == 112  # 140 less SA


def test_audio_without_a_phn_is_refused_naming_it(tmp_path):
    root = make_sample(tmp_path / "sample")
    (root / "timit" / "dr1-mcpm0" / "sx116.phn").unlink()  # the utterance was dropped without a word
    with pytest.raises(CorpusError, match=r"1 recordings have no \.phn .*dr1-mcpm0/sx116\.wav"):
        prepare(tmp_path, root)
    # An LDC copy with a RIFF conversion beside each SPHERE file (SA1.WAV.wav) is not short of transcriptions.
    ldc = make_ldc(tmp_path / "ldc")
    for wav in list(ldc.rglob("*.WAV")):
        (wav.parent / (wav.name + ".wav")).write_bytes(wav.read_bytes())
    data = prepare(tmp_path / "ldc_riff", ldc)
    assert len(read_table(data / "train" / "text")) == 4
