"""recipe=kaldi: a corpus of one's own as Kaldi data dirs and a dict dir, on the example that
local/make_example_corpora.py makes from the shared FSDD (plain and segmented): stage 0 and its checks, OOVs each
way, pipes, other sample rates, splits, features of segments, CTMs in the recordings' timeline, and
steps/validate_corpus.py's report and exit code."""

import logging
import shutil
import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ONE_POINT_GRIDS, REPO, SHARED_FSDD, run_sh, tiny_run

from phonerec.base.config import load_config
from phonerec.base.errors import CorpusError, RecipeError
from phonerec.base.schema import corpus_splits
from phonerec.data.corpora.kaldi import check_corpus
from phonerec.data.data_dir import read_table, read_utterance_audio
from phonerec.data.lang import ignored_in_scoring, read_phones, read_silence_phones
from phonerec.hmm.align_eval import Segment
from phonerec.inference import Aligned, read_recordings, write_alignments
from phonerec.pipeline.features_stage import make_features
from phonerec.pipeline.prepare_stage import prepare_stage

pytestmark = pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs the shared FSDD copy")
SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example corpora of the whole shared FSDD: <out>/fsdd (with dict/) and <out>/fsdd_segmented."""
    out = tmp_path_factory.mktemp("example") / "corpora"
    subprocess.run(
        [sys.executable, "local/make_example_corpora.py", str(out), f"corpus.root={SHARED_FSDD}"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return out


def small_copy(example, out, form="fsdd", per_speaker=4, splits=SPLITS):
    """The first `per_speaker` utterances of each speaker of the example's splits, as data dirs under out, and a
    copy of its dict dir (out/dict)."""
    for split in splits:
        source, target = example / form / split, out / split
        target.mkdir(parents=True)
        utt2spk = read_table(source / "utt2spk")
        kept, count = [], {}
        for utt, spk in utt2spk.items():
            count[spk] = count.get(spk, 0) + 1
            if count[spk] <= per_speaker:
                kept.append(utt)
        segments = read_table(source / "segments") if (source / "segments").is_file() else None
        recordings = {segments[u].split()[0] for u in kept} if segments else set(kept)
        for name, keys in (("wav.scp", recordings), ("text", kept), ("utt2spk", kept)):
            table = read_table(source / name)
            (target / name).write_text("".join(f"{k} {table[k]}\n" for k in sorted(keys)))
        if segments:
            (target / "segments").write_text("".join(f"{u} {segments[u]}\n" for u in sorted(kept)))
        spk2utt = {}
        for utt in sorted(kept):
            spk2utt.setdefault(utt2spk[utt], []).append(utt)
        (target / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))
    shutil.copytree(example / "fsdd" / "dict", out / "dict")
    return out


def overrides(corpus, name="mine", *more, splits=SPLITS):
    dirs = [f"corpus.{split}_dir={corpus / split}" for split in splits]
    return [
        "recipe=kaldi",
        f"corpus.name={name}",
        *dirs,
        f"corpus.dict_dir={corpus / 'dict'}",
        "corpus.sample_rate=8000",
        *more,
    ]


def prepare(tmp_path, corpus, *more, splits=SPLITS):
    cfg = load_config(overrides(corpus, "mine", *more, splits=splits))
    data = tmp_path / "data"
    prepare_stage(cfg, data, "kaldi")
    return cfg, data


def test_plain_data_dirs_give_the_built_in_recipes_data_and_lang(tmp_path, example):
    cfg, data = prepare(tmp_path, example / "fsdd")
    built_in = tmp_path / "built_in"
    prepare_stage(load_config([f"corpus.root={SHARED_FSDD}"]), built_in, "fsdd")
    for name in ("phones.txt", "words.txt", "lexicon.txt", "silence_phones.txt", "states.txt"):
        assert (data / "lang" / name).read_text() == (built_in / "lang" / name).read_text(), name
    for split in SPLITS:
        for name in ("wav.scp", "text", "text.words", "utt2spk", "spk2utt"):
            assert (data / split / name).read_text() == (built_in / split / name).read_text(), (split, name)
    # The user's dirs are only read.
    assert sorted(p.name for p in (example / "fsdd" / "train").iterdir()) == ["spk2utt", "text", "utt2spk", "wav.scp"]


def test_segments_give_the_features_of_the_plain_recordings(tmp_path, example):
    features = {}
    for form in ("fsdd", "fsdd_segmented"):
        corpus = small_copy(example, tmp_path / form / "corpus", form, splits=("train",))
        cfg, data = prepare(tmp_path / form, corpus, "corpus.dev_share=0.3", splits=("train",))
        assert (data / "train" / "segments").is_file() == (form == "fsdd_segmented")
        make_features(data / "train", data / "mfcc" / "train", cfg, data / "lang")
        features[form] = dict(kaldiio.load_scp(str(data / "mfcc" / "train" / "feats.scp")))
    plain, segmented = features["fsdd"], features["fsdd_segmented"]
    assert plain.keys() == segmented.keys() and len(plain) >= 4
    assert all(np.array_equal(plain[u], segmented[u]) for u in plain)


def test_without_dev_and_test_dirs_a_seeded_share_of_speakers_is_dev_and_there_is_no_test(tmp_path, example):
    corpus = small_copy(example, tmp_path / "corpus", splits=("train",))
    cfg, data = prepare(tmp_path, corpus, splits=("train",))
    assert corpus_splits(cfg) == ("train", "dev") and list(cfg.decode.splits) == ["dev"]
    assert not (data / "test").exists()
    dev = set(read_table(data / "dev" / "utt2spk").values())
    train = set(read_table(data / "train" / "utt2spk").values())
    assert len(dev) == 1 and not dev & train and len(train) == 2  # of the 3 training speakers
    again = prepare(tmp_path / "again", corpus, splits=("train",))[1]
    assert read_table(again / "dev" / "utt2spk") == read_table(data / "dev" / "utt2spk")  # seeded
    other = prepare(tmp_path / "other", corpus, "corpus.dev_seed=3", splits=("train",))[1]
    assert set(read_table(other / "dev" / "utt2spk").values()) != dev


def test_oovs_refused_skipped_or_mapped_and_reported(tmp_path, example):
    corpus = small_copy(example, tmp_path / "corpus")
    text = read_table(corpus / "train" / "text")
    first, second = sorted(text)[:2]
    text[first] = "seven eleven"
    text[second] = "eleven twelve eleven"
    (corpus / "train" / "text").write_text("".join(f"{u} {w}\n" for u, w in sorted(text.items())))

    with pytest.raises(CorpusError, match=r"4 words of 2 utterances .* eleven \(3\), twelve \(1\)"):
        prepare(tmp_path / "error", corpus)
    reports = tmp_path / "error" / "data"
    assert (reports / "oovs_found.txt").read_text() == "eleven 3\ntwelve 1\n"
    assert (reports / "utterance_oovs.txt").read_text() == f"{first} eleven\n{second} eleven twelve eleven\n"
    assert not (reports / "train").exists()  # nothing prepared

    _, data = prepare(tmp_path / "skip", corpus, "corpus.oov=skip")
    kept = read_table(data / "train" / "text.words")
    assert first not in kept and second not in kept and len(kept) == len(text) - 2

    with pytest.raises(CorpusError, match="corpus.oov_word=<unk>, which the lexicon lacks"):
        prepare(tmp_path / "unk_missing", corpus, "corpus.oov=unk")
    with open(corpus / "dict" / "lexicon.txt", "a") as f:
        f.write("<unk> spn\n")
    (corpus / "dict" / "silence_phones.txt").write_text("sil\nspn\n")
    cfg, data = prepare(tmp_path / "unk", corpus, "corpus.oov=unk")
    assert read_table(data / "train" / "text.words")[first] == "seven <unk>"
    assert read_table(data / "train" / "text")[first] == "s eh v ah n spn"
    # spn is trained as a phone of its own and, with the optional silence, left out of PER.
    assert "spn" in read_phones(data / "lang") and read_silence_phones(data / "lang") == ["sil", "spn"]
    assert ignored_in_scoring(cfg, data / "lang") == {"sil", "spn"}


def test_pipes_run_only_when_allowed_and_become_wav_files(tmp_path, example):
    corpus = small_copy(example, tmp_path / "corpus", per_speaker=2)
    wav_scp = read_table(corpus / "dev" / "wav.scp")
    utt = sorted(wav_scp)[1]
    original = wav_scp[utt]
    wav_scp[utt] = f"cat {original} |"
    (corpus / "dev" / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(wav_scp.items())))

    with pytest.raises(CorpusError, match=rf"dev/wav.scp:2: '{utt}': a pipe .*corpus.allow_pipes=true"):
        prepare(tmp_path / "refused", corpus)
    _, data = prepare(tmp_path / "allowed", corpus, "corpus.allow_pipes=true")
    copy = read_table(data / "dev" / "wav.scp")[utt]
    assert copy == str(data / "wav" / "dev" / f"{utt}.wav")
    assert np.array_equal(sf.read(copy, dtype="int16")[0], sf.read(original, dtype="int16")[0])

    wav_scp[utt] = "false |"
    (corpus / "dev" / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(wav_scp.items())))
    with pytest.raises(CorpusError, match=rf"dev recording '{utt}' \(false \|\): the command failed \(exit 1\)"):
        prepare(tmp_path / "failing", corpus, "corpus.allow_pipes=true")


def test_recordings_at_another_rate_are_resampled_or_refused(tmp_path, example, caplog):
    caplog.set_level(logging.INFO)
    corpus = small_copy(example, tmp_path / "corpus", per_speaker=2)
    wav_scp = read_table(corpus / "test" / "wav.scp")
    utt = sorted(wav_scp)[0]
    samples, rate = sf.read(wav_scp[utt], dtype="int16")
    louder = tmp_path / "16k.wav"
    sf.write(str(louder), np.repeat(samples, 2), rate * 2, subtype="PCM_16")
    wav_scp[utt] = str(louder)
    (corpus / "test" / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(wav_scp.items())))

    with pytest.raises(CorpusError, match=rf"test recording '{utt}' .*16000 Hz, not corpus.sample_rate=8000"):
        prepare(tmp_path / "refused", corpus, "corpus.resample=false")
    _, data = prepare(tmp_path / "resampled", corpus)
    copy = read_utterance_audio(data / "test")[utt].path
    assert sf.info(copy).samplerate == 8000 and "1: resampled from 16000 Hz" in caplog.text


def test_bad_dict_dir_and_bad_segments_are_named_before_anything_is_written(tmp_path, example):
    corpus = small_copy(example, tmp_path / "corpus", "fsdd_segmented", per_speaker=2)
    (corpus / "dict" / "nonsilence_phones.txt").write_text("ah\nao\n")  # most phones unlisted
    segments = read_table(corpus / "train" / "segments")
    utt = sorted(segments)[0]
    recording = segments[utt].split()[0]
    segments[utt] = f"{recording} 0.5 0.45"
    (corpus / "train" / "segments").write_text("".join(f"{u} {v}\n" for u, v in sorted(segments.items())))
    with pytest.raises(CorpusError) as err:
        prepare(tmp_path, corpus)
    message = str(err.value)
    assert "lexicon.txt:1: phone 'ey' is in neither silence_phones.txt nor nonsilence_phones.txt" in message
    assert f"train/segments:1: '{utt}': segment 0.5-0.45 s" in message
    assert not (tmp_path / "data" / "train").exists()


def test_validate_corpus_exits_non_zero_on_an_oov_and_zero_once_the_lexicon_has_it(tmp_path, example):
    corpus = small_copy(example, tmp_path / "corpus", per_speaker=2)
    text = read_table(corpus / "train" / "text")
    utt = sorted(text)[0]
    text[utt] = "oh seven"  # `oh` is not in FSDD's words
    lexicon = (corpus / "dict" / "lexicon.txt").read_text()
    (corpus / "dict" / "lexicon.txt").write_text(
        "".join(line + "\n" for line in lexicon.splitlines() if line[:3] != "oh ")
    )
    (corpus / "train" / "text").write_text("".join(f"{u} {w}\n" for u, w in sorted(text.items())))
    command = [sys.executable, "steps/validate_corpus.py", str(tmp_path / "report"), *overrides(corpus)]

    failed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 1
    report = (tmp_path / "report" / "validation.txt").read_text()
    assert (
        "1 errors" in report and "ERROR: 1 words of 1 utterances (1 distinct) are not in the lexicon: oh (1)" in report
    )
    assert (tmp_path / "report" / "utterance_oovs.txt").read_text() == f"{utt} oh\n"

    (corpus / "dict" / "lexicon.txt").write_text(lexicon)
    passed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert passed.returncode == 0, passed.stderr
    assert "0 errors" in (tmp_path / "report" / "validation.txt").read_text()
    assert (tmp_path / "report" / "oovs_found.txt").read_text() == ""


def test_the_model_tools_read_segments_and_write_ctms_in_the_recordings_timeline(tmp_path, example):
    corpus = small_copy(example, tmp_path / "corpus", "fsdd_segmented", per_speaker=3, splits=("dev",))
    recordings = read_recordings(8000, data_dir=corpus / "dev")
    segments = read_table(corpus / "dev" / "segments")
    assert [r.utt for r in recordings] == sorted(segments)
    for rec in recordings:
        recording, start, end = segments[rec.utt].split()
        samples, rate = sf.read(read_table(corpus / "dev" / "wav.scp")[recording], dtype="int16")
        span = samples[round(float(start) * rate) : round(float(end) * rate)]
        assert rec.recording == recording and rec.start == float(start) and rec.speaker == "theo"
        assert np.array_equal(rec.samples, span.astype(np.float32))
    aligned = {r.utt: Aligned([Segment(0.0, 0.1, "sil"), Segment(0.1, 0.3, "ow")], None, 0.4) for r in recordings}
    write_alignments(tmp_path / "out", aligned, recordings)
    lines = (tmp_path / "out" / "phones.recording.ctm").read_text().splitlines()
    second = recordings[1]  # the recording's second utterance, 0.25 s of silence after the first
    ctm = [line.split() for line in lines]
    assert [second.recording, "1", f"{second.start + 0.1:.4f}"] in [fields[:3] for fields in ctm]
    assert len(lines) == 2 * len(recordings) and not (tmp_path / "out" / "words.recording.ctm").exists()
    assert (tmp_path / "out" / "phones.ctm").read_text().splitlines()[1] == f"{recordings[0].utt} 1 0.1000 0.2000 ow"

    (corpus / "dev" / "wav.scp").write_text("theo_dev000 sph2pipe -f wav x.sph |\n")
    with pytest.raises(RecipeError, match=r"dev/wav.scp:1: a pipe \(a command to run\), which the model tools"):
        read_recordings(8000, data_dir=corpus / "dev")


@pytest.mark.slow
def test_run_sh_on_a_segmented_corpus_without_dev_and_test_dirs(tmp_path, example):
    """Every stage through run.sh: dev held out of train, no test split (decoded and aligned: dev), the alignment's
    CTMs also in the recordings' timeline."""
    corpus = small_copy(example, tmp_path / "corpus", "fsdd_segmented", per_speaker=10, splits=("train",))
    exp = tmp_path / "exp"
    result = run_sh(
        *overrides(corpus, splits=("train",)), *tiny_run(tmp_path, exp), "train.ctc.epochs=2", *ONE_POINT_GRIDS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the corpus has no test set (corpus.test_dir=null): decoding dev alone" in result.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.name in SPLITS) == ["dev", "train"]
    results = (tmp_path / "RESULTS.md").read_text()
    assert "| dev |" in results and "| test |" not in results
    for model in ("viterbi", "ctc"):
        aligned = exp / model / "align_dev"
        by_recording = (aligned / "phones.recording.ctm").read_text().splitlines()
        recordings = {line.split()[0] for line in by_recording}
        assert recordings and recordings <= set(read_table(corpus / "train" / "wav.scp"))
        assert len((aligned / "phones.ctm").read_text().splitlines()) == len(by_recording)


def test_the_optional_silence_is_phone_1_whatever_its_name(tmp_path, example):
    corpus = small_copy(example, tmp_path / "corpus", per_speaker=2)
    (corpus / "dict" / "silence_phones.txt").write_text("nsn\nSIL\n")
    (corpus / "dict" / "optional_silence.txt").write_text("SIL\n")
    cfg, data = prepare(tmp_path, corpus)
    phones = read_phones(data / "lang")
    assert phones["<blk>"] == 0 and phones["SIL"] == 1 and "sil" not in phones and "nsn" in phones
    assert read_silence_phones(data / "lang") == ["SIL", "nsn"]
    assert ignored_in_scoring(cfg, data / "lang") == {"SIL", "nsn"}


def test_long_short_and_lonely_utterances_are_warned_about(tmp_path, example):
    corpus = small_copy(example, tmp_path / "corpus", per_speaker=2, splits=("train",))
    cfg = load_config(
        overrides(corpus, "mine", "corpus.max_utterance_seconds=0.5", "model.subsample=8", splits=("train",))
    )
    check = check_corpus(cfg, tmp_path / "report")
    assert not check.errors and len(check.warnings) == 3
    long, short, lonely = check.warnings
    assert "longer than corpus.max_utterance_seconds=0.5" in long
    assert "too short for their phones, and training skips them" in short  # 8-fold subsampling: 12 frames a second
    assert "3 speakers have fewer than 3 utterances" in lonely


@pytest.mark.slow
def test_pronunciation_variants_are_chosen_at_each_realignment(tmp_path, example):
    """hmm.pronunciations=variants with a dict dir whose lexiconp.txt gives some digits a second pronunciation:
    lang/lexiconp.txt keeps the max-normalised probabilities (estimated anew each round, hmm.pronunciation_probs=
    estimated, and kept with the model), and each round keeps the pronunciation its best path
    chose for every word occurrence (prons.<set>.txt) and the phones they spell (phones.<set>.txt)."""
    corpus = small_copy(example, tmp_path / "corpus", per_speaker=6)
    lines = (corpus / "dict" / "lexicon.txt").read_text().splitlines()
    variants = {"zero": "z iy r ow", "eight": "ey", "six": "s ih k"}
    with_probs = [f"{line.split()[0]} 0.8 {' '.join(line.split()[1:])}" for line in lines]
    with_probs += [f"{word} 0.4 {pron}" for word, pron in variants.items()]
    (corpus / "dict" / "lexicon.txt").unlink()
    (corpus / "dict" / "lexiconp.txt").write_text("\n".join(with_probs) + "\n")  # each word's first line first
    exp = tmp_path / "exp"
    result = run_sh(
        *overrides(corpus),
        *tiny_run(tmp_path, exp),
        "hmm.pronunciations=variants",
        "hmm.pronunciation_probs=estimated",
        "train.ctc.epochs=2",
        "decode.decoders=[greedy,lm]",
        *ONE_POINT_GRIDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lexiconp = (tmp_path / "data" / "lang" / "lexiconp.txt").read_text()
    assert "six 1 s ih k s\n" in lexiconp and "six 0.5 s ih k\n" in lexiconp
    lexicon = {}
    for line in (tmp_path / "data" / "lang" / "lexicon.txt").read_text().splitlines():
        word, *pron = line.split()
        lexicon.setdefault(word, []).append(pron)
    words = read_table(tmp_path / "data" / "train" / "text.words")
    for round_ in (0, 1, 2):
        ali_dir = exp / "viterbi" / "ali" / f"iter{round_}"
        prons, phones = read_table(ali_dir / "prons.train.txt"), read_table(ali_dir / "phones.train.txt")
        assert set(prons) == set(read_table(ali_dir / "ali.train.txt"))
        if round_ == 0:  # the flat start: the first pronunciations
            assert {k for choice in prons.values() for k in choice.split()} == {"0"}
        for utt, choice in prons.items():
            spelled = [p for w, k in zip(words[utt].split(), choice.split(), strict=True) for p in lexicon[w][int(k)]]
            assert phones[utt].split() == spelled
        assert "train_other_pronunciation_percent" in (ali_dir / "stats.json").read_text() or round_ == 0
    # hmm.pronunciation_probs=estimated: each round's own, in the checkpoints (the bundle's alignment model's too)
    estimated = read_table(exp / "viterbi" / "ali" / "iter2" / "lexiconp.txt")
    assert set(estimated) == {w for t in words.values() for w in t.split()}
    silprob = read_table(exp / "viterbi" / "ali" / "iter2" / "lexiconp_silprob.txt")  # and silence probabilities
    assert set(silprob) == set(estimated)
    bundle = torch.load(exp / "viterbi" / "bundle" / "model.pt", weights_only=True)
    assert set(bundle["task"]["pronunciation_probs"]) >= set(estimated) and bundle["task"]["silence_probs"]
    # CTC and the phone LMs (this experiment's own, in exp/lm) learn the chosen pronunciations of best.pt's round
    chosen = (exp / "viterbi" / "phones.train.txt").read_text()
    assert chosen in [(exp / "viterbi" / "ali" / f"iter{r}" / "phones.train.txt").read_text() for r in (0, 1, 2)]
    assert "CTC targets: the chosen pronunciations of" in (exp / "ctc" / "log" / "train.log").read_text()
    assert (exp / "lm" / "phones.2gram.arpa").is_file() and not (tmp_path / "data" / "lm").exists()
    assert "phones.train.txt" in (exp / "lm" / "log" / "make_lm.log").read_text()
    # PER also against the closest pronunciations, in a table of its own
    assert (exp / "viterbi" / "decode_test_greedy" / "per_closest.json").is_file()
    assert "## Phone error rate against the closest pronunciation of each word" in (tmp_path / "RESULTS.md").read_text()
    # The bundle aligns through every pronunciation too: every word of the corpus in stage 8's words.ctm
    assert (exp / "viterbi" / "bundle" / "lang" / "lexiconp.txt").read_text() == lexiconp
    words_ctm = (exp / "viterbi" / "align_corpus" / "words.ctm").read_text().split("\n")
    all_words = [
        w for split in SPLITS for t in read_table(tmp_path / "data" / split / "text.words").values() for w in t.split()
    ]
    assert sorted(line.split()[4] for line in words_ctm if line) == sorted(all_words)
