"""An input edited after a complete run: exactly the stages downstream of it run again (each stage's digest covers
the content of what it reads), seen by which `.done.<stage>` markers are written anew."""

import json
import shutil

import pytest
from conftest import ONE_POINT_GRIDS, SHARED_FSDD, fsdd_subset, run_sh, tiny_run

from phonerec.data.data_dir import read_table, write_table

pytestmark = pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs ../shared/corpora")
MODELS = ("viterbi", "ctc")
DECODES = {f"exp/{m}/decode_{s}_{d}" for m in MODELS for s in ("dev", "test") for d in ("greedy", "lm")}
TEST_DECODES = {d for d in DECODES if "_test_" in d}
APPLIED = {f"exp/{m}/{d}" for m in MODELS for d in ("bundle", "align_test")} | {"exp/viterbi/align_corpus"}  # 6-8
AFTER_TRAINING = DECODES | APPLIED


def markers(tmp):
    """Each stage's marker: its dir (relative to tmp) -> the marker's mtime; the runs moved aside left out."""
    found = {}
    for top in ("data", "exp"):
        for marker in (tmp / top).rglob(".done.*"):
            if not any("." in part for part in marker.parent.relative_to(tmp / top).parts):
                found[str(marker.parent.relative_to(tmp))] = marker.stat().st_mtime_ns
    return found


def rerun(tmp, overrides, before):
    """run.sh again: (the dirs whose stage ran again, the markers now)."""
    result = run_sh(*overrides)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    after = markers(tmp)
    assert after.keys() == before.keys()
    return {d for d in after if after[d] != before[d]}, after


@pytest.mark.slow
def test_exactly_the_stages_downstream_of_an_edited_input_run_again(tmp_path):
    root = fsdd_subset(tmp_path / "fsdd", takes=range(3))
    overrides = [f"corpus.root={root}", *tiny_run(tmp_path, tmp_path / "exp"), *ONE_POINT_GRIDS]
    overrides += ["train.viterbi.epochs=2", "train.ctc.epochs=2", "train.compare_ctc_inits=[]"]
    overrides += ["decode.decoders=[greedy,lm]"]
    result = run_sh(*overrides)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    data, exp = tmp_path / "data", tmp_path / "exp"
    state = markers(tmp_path)
    assert {"data", "data/mfcc/train", "data/lm", "exp/viterbi", "exp/ctc"} | AFTER_TRAINING <= state.keys()

    # A test utterance relabelled (text and text.words): the copy of its feature dir, the test decodes, the
    # bundles (which hold the test figures) and the test alignments; no training, no LM.
    for name, value in (("text", "t uw"), ("text.words", "two")):
        table = read_table(data / "test" / name)
        table["nicolas_0_00"] = value
        write_table(data / "test" / name, table)
    ran, state = rerun(tmp_path, overrides, state)
    assert ran == {"data/mfcc/test"} | TEST_DECODES | APPLIED

    # Two edits at once (each is seen by stages the other leaves alone): a training recording swapped for another
    # take of the same digit (wav.scp: the training features are extracted again, `ark`) and a pronunciation added
    # to the lexicon (every feature dir's copy, checked against the lang dir); both trainings and all after them.
    # Not the dev or test extraction, nor the LM (it reads the training transcripts alone).
    table = read_table(data / "train" / "wav.scp")
    table["george_3_00"] = table["george_3_01"]
    write_table(data / "train" / "wav.scp", table)
    with open(data / "lang" / "lexicon.txt", "a") as f:
        f.write("zero z iy r ow\n")
    ran, state = rerun(tmp_path, overrides, state)
    copies = {"data/mfcc/train", "data/mfcc/dev", "data/mfcc/test"}
    assert ran == copies | {"data/mfcc/train/ark", "exp/viterbi", "exp/ctc"} | AFTER_TRAINING

    # Two test utterances' features swapped in feats.scp: the test decodes; a model's bundle and alignments only
    # where its test figures changed (the alignments read the audio, not these features).
    table = read_table(data / "mfcc" / "test" / "feats.scp")
    table["nicolas_1_00"], table["nicolas_2_00"] = table["nicolas_2_00"], table["nicolas_1_00"]
    write_table(data / "mfcc" / "test" / "feats.scp", table)
    ran, state = rerun(tmp_path, overrides, state)
    assert TEST_DECODES <= ran <= TEST_DECODES | APPLIED
    for model in MODELS:
        assert (f"exp/{model}/bundle" in ran) == (f"exp/{model}/align_test" in ran)
    assert ("exp/viterbi/bundle" in ran) == ("exp/viterbi/align_corpus" in ran)

    # The Viterbi checkpoint replaced by another epoch's: its decodes, bundle and alignments, and CTC, which starts
    # from it, with all that follows CTC; the Viterbi training itself is not redone.
    best = json.loads((exp / "viterbi" / "train_summary.json").read_text())["best"]["epoch"]
    shutil.copyfile(exp / "viterbi" / "checkpoints" / f"epoch-{3 - best}.pt", exp / "viterbi" / "best.pt")
    ran, state = rerun(tmp_path, overrides, state)
    assert ran == {"exp/ctc"} | AFTER_TRAINING
