"""recipe=mfa: a corpus of one's own as an MFA folder and dictionary, on folders made from the shared FSDD: the
dictionary format, the transcript normalisation, both layouts (speaker folders with .lab/.txt, long recordings with
TextGrid intervals made by concatenating recordings), stage 0, and through run.sh the whole corpus aligned (stage 8)
and a second corpus aligned without training (steps/align.py --corpus)."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import ONE_POINT_GRIDS, REPO, SHARED_FSDD, project_env, run_sh, tiny_run

from phonerec.base.config import load_config
from phonerec.base.errors import CorpusError
from phonerec.data.corpora.mfa import Normaliser, read_dictionary, scan_corpus
from phonerec.data.data_dir import read_table
from phonerec.data.lang import read_lexicon, read_silence_phones
from phonerec.pipeline.prepare_stage import prepare_stage

pytestmark = pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs the shared FSDD copy")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def dictionary(path, extra=""):
    lexicon = (REPO / "local" / "digits" / "lexicon.txt").read_text()
    path.write_text(
        "".join(f"{w}\t{p}\n" for w, _, p in (line.partition(" ") for line in lexicon.splitlines())) + extra
    )
    return path


def mfa_folder(root, speakers=("george", "jackson", "lucas", "theo"), takes=range(2), extension=".lab"):
    """<speaker>/<digit>_<speaker>_<take>.wav copies of FSDD with a transcript each (`Seven.` style)."""
    for speaker in speakers:
        (root / speaker).mkdir(parents=True, exist_ok=True)
        for digit in range(10):
            for take in takes:
                name = f"{digit}_{speaker}_{take}"
                (root / speaker / f"{name}.wav").write_bytes((SHARED_FSDD / "recordings" / f"{name}.wav").read_bytes())
                (root / speaker / f"{name}{extension}").write_text(f"{DIGITS[digit].capitalize()}.\n")
    return root


def long_recording(root, speakers=("nicolas", "theo"), takes=range(2, 5)):
    """conversation.wav: recordings of two speakers one after the other with 0.3 s of silence between them, and
    conversation.TextGrid: a tier per speaker, an interval per recording."""
    from praatio import textgrid

    pieces, tiers, start = [], {s: [] for s in speakers}, 0
    for take in takes:
        for speaker in speakers:
            digit = (take * 3 + len(speaker)) % 10
            samples, rate = sf.read(str(SHARED_FSDD / "recordings" / f"{digit}_{speaker}_{take}.wav"), dtype="int16")
            tiers[speaker].append((start / rate, (start + len(samples)) / rate, DIGITS[digit]))
            pieces += [samples, np.zeros(int(0.3 * rate), dtype=np.int16)]
            start += len(samples) + int(0.3 * rate)
    root.mkdir(parents=True, exist_ok=True)
    sf.write(str(root / "conversation.wav"), np.concatenate(pieces), rate, subtype="PCM_16")
    grid = textgrid.Textgrid()
    for speaker, entries in tiers.items():
        grid.addTier(textgrid.IntervalTier(speaker, entries, 0, start / rate))
    grid.save(str(root / "conversation.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
    return tiers


def test_the_dictionary_format_with_and_without_probabilities(tmp_path):
    plain = read_dictionary(dictionary(tmp_path / "plain.dict"))
    assert plain.lexicon["seven"] == [["s", "eh", "v", "ah", "n"]] and not plain.probabilities
    with_probs = tmp_path / "probs.dict"
    with_probs.write_text("seven\t1.0\ts eh v ah n\nseven\t0.5\ts eh v n\n")
    read = read_dictionary(with_probs)
    assert read.probabilities and read.lexicon.probabilities["seven"] == [1.0, 0.5]
    silprobs = tmp_path / "silprobs.dict"
    silprobs.write_text("seven\t0.99\t0.2\t1.1\t0.9\ts eh v ah n\n")
    assert read_dictionary(silprobs).silence_columns == {("seven", ("s", "eh", "v", "ah", "n")): [0.2, 1.1, 0.9]}
    bad = tmp_path / "bad.dict"
    bad.write_text("seven\t0.5\t0.2\ts eh v ah n\neight\nnine\t1.5\tn ay n\n")
    with pytest.raises(CorpusError) as err:
        read_dictionary(bad)
    assert f"{bad}:1: 2 numbers after 'seven'" in str(err.value)
    assert f"{bad}:2: 'eight' has no pronunciation" in str(err.value)
    assert f"{bad}:3: pronunciation probability 1.5" in str(err.value)


def test_the_one_normalisation_rule(tmp_path):
    lexicon = read_lexicon(dictionary(tmp_path / "d.dict", "mrs. m ih s ih z\ndon't d ow n t\nOK ow k ey\n"))
    normalise = Normaliser(lexicon)
    assert normalise("0 54682 Seven, eight -- NINE!") == ["seven", "eight", "nine"]  # offsets, punctuation, case
    assert normalise("Mrs. Don't ok (zero)") == ["mrs.", "don't", "OK", "zero"]
    assert normalise("twelve Eleven.") == ["twelve", "Eleven"]  # OOVs, as written without the punctuation


def test_both_layouts_and_stage_0(tmp_path):
    root = mfa_folder(tmp_path / "corpus", speakers=("george", "jackson"), extension=".txt")
    (root / "jackson" / "9_jackson_1.txt").unlink()  # a recording without a transcript is left out
    (root / "jackson" / "3_jackson_0.txt").write_text("three eleven\n")  # an OOV: <unk> by default
    flac = root / "george" / "5_george_1.wav"  # FLAC too
    sf.write(str(flac.with_suffix(".flac")), *sf.read(str(flac), dtype="int16"), format="FLAC")
    flac.unlink()
    tiers = long_recording(root / "meetings")
    utterances, layout = scan_corpus(root, None, Normaliser(read_dictionary(dictionary(tmp_path / "d.dict")).lexicon))
    assert len(utterances) == 2 * 20 - 1 + 6 and layout["meetings-conversation"] == "meetings/conversation"
    interval = next(u for u in utterances if u.speaker == "nicolas")
    assert (
        interval.segmented
        and interval.recording == "meetings-conversation"
        and interval.start == tiers["nicolas"][0][0]
    )

    overrides = [
        "recipe=mfa",
        "corpus.name=mine",
        f"corpus.root={root}",
        f"corpus.dictionary={tmp_path / 'd.dict'}",
        "corpus.sample_rate=8000",
        "corpus.test_speakers=[nicolas]",
    ]
    data = tmp_path / "data"
    prepare_stage(load_config(overrides), data, "mfa")
    assert read_silence_phones(data / "lang") == ["sil", "spn"]
    assert read_table(data / "test" / "utt2spk") and set(read_table(data / "test" / "utt2spk").values()) == {"nicolas"}
    words = {**read_table(data / "train" / "text.words"), **read_table(data / "dev" / "text.words")}
    assert words["jackson-3_jackson_0"] == "three <unk>" and "jackson-9_jackson_1" not in words
    assert (data / "oovs_found.txt").read_text() == "eleven 1\n"
    segments = read_table(data / "train" / "segments")  # the corpus has TextGrid intervals: every utterance has one
    assert segments["george-0_george_0"] == "george-0_george_0 0 -1"
    assert read_table(data / "layout.txt")["george-0_george_0"] == "george/0_george_0"
    recordings = {**read_table(data / "train" / "wav.scp"), **read_table(data / "dev" / "wav.scp")}
    assert recordings["george-5_george_1"].endswith("george/5_george_1.flac")

    (root / "stray.wav").write_bytes((root / "george" / "0_george_0.wav").read_bytes())
    (root / "stray.lab").write_text("zero\n")
    with pytest.raises(CorpusError, match="stray.wav: directly in corpus.root; put each speaker's files"):
        prepare_stage(load_config(overrides), tmp_path / "data2", "mfa")
    prepare_stage(load_config([*overrides, "corpus.speaker_characters=5"]), tmp_path / "data3", "mfa")
    speakers = {
        **read_table(tmp_path / "data3" / "train" / "utt2spk"),
        **read_table(tmp_path / "data3" / "dev" / "utt2spk"),
    }
    assert speakers["stray-stray"] == "stray" and speakers["0_geo-0_george_0"] == "0_geo"


@pytest.mark.slow
def test_run_sh_aligns_the_whole_corpus_and_a_second_corpus_without_training(tmp_path):
    from praatio import textgrid

    root = mfa_folder(tmp_path / "corpus")
    (root / "lucas" / "1_lucas_0.lab").write_text(" ".join(DIGITS * 2) + "\n")
    tiers = long_recording(root / "meetings")
    dict_path = dictionary(tmp_path / "d.dict")
    exp = tmp_path / "exp"
    overrides = [
        "recipe=mfa",
        "corpus.name=mine",
        f"corpus.root={root}",
        f"corpus.dictionary={dict_path}",
        "corpus.sample_rate=8000",
        "corpus.dev_speakers=[theo]",
        *tiny_run(tmp_path, exp),
        "models=[viterbi]",
        *ONE_POINT_GRIDS,
    ]
    result = run_sh(*overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    out = exp / "viterbi" / "align_corpus"
    # Too many words for its frames: not aligned, with the reason.
    assert (out / "unaligned.txt").read_text().startswith("lucas-1_lucas_0 ")
    assert (
        "frames" in (out / "unaligned.txt").read_text()
        and "cannot hold the 64 phones" in (out / "unaligned.txt").read_text()
    )
    grids = sorted(p.relative_to(out / "textgrids").as_posix() for p in (out / "textgrids").rglob("*.TextGrid"))
    assert (
        len(grids) == 4 * 20 - 1 + 1
        and "meetings/conversation.TextGrid" in grids
        and "lucas/1_lucas_1.TextGrid" in grids
    )
    one = textgrid.openTextgrid(str(out / "textgrids" / "george" / "7_george_1.TextGrid"), includeEmptyIntervals=False)
    assert one.tierNames == ("george - words", "george - phones")  # the corpus has segments: speaker tiers
    (word,) = one.getTier("george - words").entries
    phones = one.getTier("george - phones").entries
    assert word.label == "seven" and [p.label for p in phones if p.label != "sil"] == ["s", "eh", "v", "ah", "n"]
    spoken = [p for p in phones if p.label != "sil"]
    assert abs(spoken[0].start - word.start) < 1e-6 and abs(spoken[-1].end - word.end) < 1e-6
    long = textgrid.openTextgrid(
        str(out / "textgrids" / "meetings" / "conversation.TextGrid"), includeEmptyIntervals=False
    )
    for speaker, entries in tiers.items():
        aligned = long.getTier(f"{speaker} - words").entries
        assert [w.label for w in aligned] == [label for _, _, label in entries]
        assert all(
            start - 0.01 <= w.start and w.end <= end + 0.01 for w, (start, end, _) in zip(aligned, entries, strict=True)
        )
    scores = (out / "alignment_scores.tsv").read_text().splitlines()
    assert scores[0].split("\t")[-2:] == ["log_likelihood_per_frame", "gap_to_free_path_per_frame"]
    assert len(scores) == 1 + 4 * 20 - 1 + 6 and all(float(row.split("\t")[-1]) <= 0 for row in scores[1:])

    other = mfa_folder(tmp_path / "other", speakers=("nicolas",), takes=range(5, 6))
    (other / "nicolas" / "2_nicolas_5.lab").write_text("two twelve\n")
    aligned = tmp_path / "aligned"
    command = ["steps/align.py", str(exp / "viterbi"), "--corpus", str(other), "--dictionary", str(dict_path)]
    done = subprocess.run(
        [sys.executable, *command, "--out-dir", str(aligned)],
        cwd=REPO,
        env=project_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((aligned / "textgrids" / "nicolas").glob("*.TextGrid"))) == 10  # the OOV aligned as <unk>
    assert (aligned / "oovs_found.txt").read_text() == "twelve 1\n"
    assert "<unk>" in (aligned / "words.ctm").read_text()
    (tmp_path / "strange.dict").write_text(dict_path.read_text().replace("s eh v ah n", "s eh v ah nn"))
    refused = subprocess.run(
        [sys.executable, *command[:-1], str(tmp_path / "strange.dict"), "--out-dir", str(tmp_path / "refused")],
        cwd=REPO,
        env=project_env(),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "phones the model" in refused.stderr and ": nn (align with" in refused.stderr
