"""TIDIGITS data prep on fake LDC trees made here (NIST SPHERE at 20 kHz): ids, transcripts, groups, the dev
split, upper-case names, errors, the done marker, and features from the 20 kHz audio."""

import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, project_env

from phonerec.base.config import load_config
from phonerec.base.errors import CorpusError, RecipeError
from phonerec.data.data_dir import read_table, validate_data_dir
from phonerec.data.lang import read_phones
from phonerec.pipeline.features_stage import make_features
from phonerec.pipeline.prepare_stage import prepare_stage

RATE = 20000
# part -> group -> speaker -> file stems. Train: 3 men, 2 women, 2 boys; test: a man, a woman, a girl.
TREE = {
    "train": {
        "man": {"ae": ["1a", "o7z2b", "z9a"], "aj": ["3b", "45a"], "al": ["8o6a"]},
        "woman": {"ac": ["2a", "zob"], "ag": ["9b", "1z3a"]},
        "boy": {"bd": ["5a", "66b"], "be": ["7b"]},
    },
    "test": {
        "man": {"ah": ["7a", "12b"]},
        "woman": {"ai": ["oa", "z4b"]},
        "girl": {"gc": ["3a"]},
    },
}
LEXICON = {
    "one": "w ah n",
    "two": "t uw",
    "three": "th r iy",
    "four": "f ao r",
    "five": "f ay v",
    "six": "s ih k s",
    "seven": "s eh v ah n",
    "eight": "ey t",
    "nine": "n ay n",
    "oh": "ow",
    "zero": "z ih r ow",
}


def write_nist(path, seconds, freq, seed, rate=RATE):
    """A short tone with a little noise, int16 NIST SPHERE (as LDC ships TIDIGITS), whatever the extension."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    samples = (8000 * np.sin(2 * np.pi * freq * t) + rng.normal(0, 300, t.size)).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, format="NIST", subtype="PCM_16")


def make_tidigits(root, upper=False):
    """root/tidigits/{train,test}/<group>/<speaker>/<stem>.wav; upper=True: TIDIGITS/TRAIN/MAN/AE/O7Z2B.WAV."""
    case = str.upper if upper else str
    n = 0
    for part, groups in TREE.items():
        for group, speakers in groups.items():
            for speaker, stems in speakers.items():
                for stem in stems:
                    n += 1
                    path = root / case("tidigits") / case(part) / case(group) / case(speaker) / case(f"{stem}.wav")
                    write_nist(path, seconds=0.1 + 0.01 * len(stem), freq=200 + 20 * n, seed=n)
    return root


def expected_ids(part, groups, speakers=None):
    return {
        f"{group}_{spk}_{stem}": f"{group}_{spk}"
        for group, spks in TREE[part].items()
        if group in groups
        for spk, stems in spks.items()
        if speakers is None or f"{group}_{spk}" in speakers
        for stem in stems
    }


@pytest.fixture
def root(tmp_path):
    return make_tidigits(tmp_path / "ldc")


def config(tmp_path, root, *overrides):
    return load_config(["recipe=tidigits", f"corpus.root={root}", f"paths.data={tmp_path}/data", "nj=1", *overrides])


def prepare(tmp_path, root, *overrides):
    prepare_stage(config(tmp_path, root, *overrides), tmp_path / "data", "tidigits")
    return tmp_path / "data"


def snapshot(root):
    return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*"))


def test_adult_data_dirs_lang_and_transcripts(tmp_path, root):
    before = snapshot(root)
    data = prepare(tmp_path, root)
    assert snapshot(root) == before  # the corpus root is only read

    adults = ("man", "woman")
    dev = {"man_ae", "woman_ac"}  # the first training speaker of each group (dev_every=10)
    train_all = expected_ids("train", adults)
    expected = {
        "train": {u: s for u, s in train_all.items() if s not in dev},
        "dev": {u: s for u, s in train_all.items() if s in dev},
        "test": expected_ids("test", adults),
    }
    for split in ("train", "dev", "test"):
        assert validate_data_dir(data / split, data / "lang") == len(expected[split])
        assert read_table(data / split / "utt2spk") == expected[split]  # no boy or girl anywhere
        spk2utt = {spk: utts.split() for spk, utts in read_table(data / split / "spk2utt").items()}
        assert spk2utt == {s: sorted(u for u in expected[split] if expected[split][u] == s) for s in spk2utt}
        text, words = read_table(data / split / "text"), read_table(data / split / "text.words")
        for utt, transcript in words.items():
            assert text[utt].split() == [p for w in transcript.split() for p in LEXICON[w].split()]
    assert sorted(expected["train"].values())[0] == "man_aj" and "man_al_8o6a" in expected["train"]

    words, text = read_table(data / "dev" / "text.words"), read_table(data / "dev" / "text")
    assert words["man_ae_o7z2b"] == "oh seven zero two"
    assert text["man_ae_o7z2b"] == "ow s eh v ah n z ih r ow t uw"
    assert words["woman_ac_zob"] == "zero oh" and words["man_ae_1a"] == "one"
    assert read_table(data / "test" / "text.words")["woman_ai_z4b"] == "zero four"
    wav_scp = read_table(data / "dev" / "wav.scp")
    assert wav_scp["man_ae_o7z2b"] == str(root / "tidigits" / "train" / "man" / "ae" / "o7z2b.wav")

    phones = read_phones(data / "lang")
    assert list(phones) == ["<blk>", "sil", *"ah ao ay eh ey f ih iy k n ow r s t th uw v w z".split()]
    assert list(phones.values()) == list(range(len(phones)))
    assert (data / "lang" / "lexicon.txt").read_text() == (REPO / "local/digits/lexicon.txt").read_text()
    assert (data / "config.yaml").is_file() and (data / "prepare.seconds").is_file()


def test_first_pronunciation_goes_into_text(tmp_path, root):
    lexicon = tmp_path / "lexicon.txt"
    extra = "zero z iy r ow\n"  # a second pronunciation, after the shared lexicon's own
    lexicon.write_text((REPO / "local/digits/lexicon.txt").read_text() + extra)
    data = prepare(tmp_path, root, f"corpus.lexicon={lexicon}")
    assert read_table(data / "dev" / "text")["woman_ac_zob"] == "z ih r ow ow"
    assert (data / "lang" / "lexicon.txt").read_text().endswith(extra)
    lexicon.write_text("".join(f"{w} {p}\n" for w, p in LEXICON.items() if w != "oh"))
    (data / ".done.prepare").unlink()
    with pytest.raises(CorpusError, match="no pronunciation for oh"):
        prepare(tmp_path, root, f"corpus.lexicon={lexicon}")


def test_children_with_every_group(tmp_path, root):
    data = prepare(tmp_path, root, "corpus.groups=[man,woman,boy,girl]")
    speakers = {split: set(read_table(data / split / "utt2spk").values()) for split in ("train", "dev", "test")}
    assert speakers == {
        "train": {"man_aj", "man_al", "woman_ag", "boy_be"},
        "dev": {"man_ae", "woman_ac", "boy_bd"},
        "test": {"man_ah", "woman_ai", "girl_gc"},
    }
    assert read_table(data / "train" / "text.words")["boy_be_7b"] == "seven"
    for split in ("train", "dev", "test"):
        validate_data_dir(data / split, data / "lang")


@pytest.mark.parametrize(
    "overrides, dev",
    [
        (["corpus.dev_every=2"], {"man_ae", "man_al", "woman_ac"}),  # sorted ae aj al -> ae al; ac ag -> ac
        (["corpus.dev_every=1"], None),  # every training speaker: train is empty
        (["corpus.dev_speakers=[man_aj,Woman_AG,man_zz]"], {"man_aj", "woman_ag"}),
    ],
)
def test_dev_split(tmp_path, root, caplog, overrides, dev):
    if dev is None:
        with pytest.raises(CorpusError, match="the train split is empty"):
            prepare(tmp_path, root, *overrides)
        return
    with caplog.at_level(logging.WARNING):
        data = prepare(tmp_path, root, *overrides)
    assert set(read_table(data / "dev" / "utt2spk").values()) == dev
    train = set(read_table(data / "train" / "utt2spk").values())
    assert train == {"man_ae", "man_aj", "man_al", "woman_ac", "woman_ag"} - dev
    assert ("man_zz is not a training speaker" in caplog.text) == ("man_zz" in overrides[0])


def test_dev_list_errors(tmp_path, root):
    with pytest.raises(CorpusError, match="man_ah is a speaker of the test part"):
        prepare(tmp_path, root, "corpus.dev_speakers=[man_ah]")
    with pytest.raises(CorpusError, match="the dev split is empty"):
        prepare(tmp_path, root, "corpus.dev_speakers=[]")
    with pytest.raises(CorpusError, match="corpus.groups"):
        prepare(tmp_path, root, "corpus.groups=[men]")


def test_upper_case_layout(tmp_path, root):
    lower = prepare(tmp_path / "lower", root)
    upper_root = make_tidigits(tmp_path / "LDC93S10", upper=True)
    upper = prepare(tmp_path / "upper", upper_root)
    for split in ("train", "dev", "test"):
        validate_data_dir(upper / split, upper / "lang")
        for name in ("text", "text.words", "utt2spk", "spk2utt"):
            assert (upper / split / name).read_text() == (lower / split / name).read_text()
    wav = read_table(upper / "dev" / "wav.scp")["man_ae_o7z2b"]
    assert wav == str(upper_root / "TIDIGITS" / "TRAIN" / "MAN" / "AE" / "O7Z2B.WAV")


@pytest.mark.parametrize("name", ["1c.wav", "0a.wav", "12.wav", "readme.txt"])
def test_bad_file_name_is_named(tmp_path, root, name):
    write_nist(root / "tidigits" / "test" / "woman" / "ai" / name, 0.1, 300, 0)
    with pytest.raises(CorpusError, match=f"woman/ai/{name}: not a TIDIGITS recording name"):
        prepare(tmp_path, root)
    assert not (tmp_path / "data" / ".done.prepare").exists()


def test_bad_roots(tmp_path, root, monkeypatch):
    with pytest.raises(CorpusError, match="no such directory"):
        prepare(tmp_path, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no tidigits/ folder in it"):
        prepare(tmp_path, tmp_path / "empty")
    with pytest.raises(CorpusError, match="looks like the tidigits folder itself"):
        prepare(tmp_path, root / "tidigits")
    with pytest.raises(CorpusError, match="corpus.root is not set"):
        prepare_stage(load_config(["recipe=tidigits", f"paths.data={tmp_path}/data"]), tmp_path / "data", "tidigits")

    real_iterdir = pathlib.Path.iterdir

    def iterdir(self):
        if self.name == "test":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    with pytest.raises(CorpusError, match="cannot be read.*Permission denied"):
        prepare(tmp_path, root)


def test_wrong_sample_rate_is_named(tmp_path, root):
    write_nist(root / "tidigits" / "train" / "man" / "aj" / "3b.wav", 0.1, 300, 0, rate=16000)
    with pytest.raises(CorpusError, match=r"man/aj/3b.wav \(16000 Hz\)"):
        prepare(tmp_path, root)


def test_rerun_is_skipped_and_settings_redo(tmp_path, root, caplog):
    data = prepare(tmp_path, root)
    mtime = (data / "train" / "text").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        prepare(tmp_path, root)
    assert "already done" in caplog.text
    assert (data / "train" / "text").stat().st_mtime_ns == mtime
    prepare(tmp_path, root, "corpus.groups=[man,woman,boy]")  # another setting: done again
    assert "boy_be" in set(read_table(data / "train" / "utt2spk").values())


def test_entry_point_and_features_of_20khz_nist(tmp_path, root):
    before = snapshot(root)
    data = tmp_path / "data"
    # The step as run.sh runs it: local/<corpus.name>/prepare_data.py.
    result = subprocess.run(
        [sys.executable, "local/tidigits/prepare_data.py", str(data), "recipe=tidigits", f"corpus.root={root}"],
        cwd=REPO,
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (data / ".done.prepare").is_file()

    cfg = config(tmp_path, root)
    assert cfg.corpus.sample_rate == RATE and cfg.features.name == "mfcc"
    feat_dir = data / "mfcc" / "test"
    make_features(data / "test", feat_dir, cfg)
    validate_data_dir(feat_dir, check_audio=False)
    frames = {u: int(n) for u, n in read_table(feat_dir / "utt2num_frames").items()}
    # 25 ms windows every 10 ms at 20 kHz: 500 and 200 samples (snip_edges).
    wav_scp = read_table(data / "test" / "wav.scp")
    assert frames == {u: 1 + (sf.info(p).frames - 500) // 200 for u, p in wav_scp.items()}
    assert set(frames) == {"man_ah_7a", "man_ah_12b", "woman_ai_oa", "woman_ai_z4b"}
    with pytest.raises(RecipeError, match="at 20000 Hz, the corpus at 16000 Hz"):
        make_features(data / "test", tmp_path / "mfcc16k", config(tmp_path, root, "corpus.sample_rate=16000"))
    assert snapshot(root) == before
