"""End to end: run.sh stages 0-1 on a subset of the real FSDD recordings in ../shared/corpora/fsdd."""

import fcntl
import json
import os
import subprocess
import time

import pytest
from conftest import (
    ONE_POINT_GRIDS,
    REPO,
    SHARED_FSDD,
    free_port,
    fsdd_subset,
    kill_run_sh_when,
    project_env,
    run_sh,
    run_short_path,
    tiny_run,
)

from phonerec.base.config import load_config
from phonerec.data.data_dir import read_table, validate_data_dir
from phonerec.data.features import FeatureReader
from phonerec.hmm.align_eval import read_ctm
from phonerec.scoring.sclite import find_sclite

SHARED_TIMIT = SHARED_FSDD.parent / "timit_sample"
pytestmark = pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs ../shared/corpora")


def test_stages_0_1_on_fsdd_subset(tmp_path):
    root = fsdd_subset(tmp_path / "fsdd", takes=range(5))
    data = tmp_path / "data"
    overrides = [f"corpus.root={root}", f"paths.data={data}", f"paths.exp={tmp_path}/exp", "nj=2"]

    result = run_sh("--stop-stage", "1", *overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "missing: jackson lucas yweweler" in result.stderr
    for split, speaker in (("train", "george"), ("dev", "theo"), ("test", "nicolas")):
        assert set(read_table(data / split / "utt2spk").values()) == {speaker}
        assert validate_data_dir(data / "mfcc" / split, data / "lang") == 50
    reader = FeatureReader(data / "mfcc" / "train", load_config([]).features)
    assert reader["george_3_04"].shape[1] == 39
    assert (data / "mfcc" / "train" / "config.yaml").is_file()
    assert "Done in" in result.stdout

    # Stage 1 again: a logged no-op for every split.
    result = run_sh("--stage", "1", "--stop-stage", "1", *overrides)
    assert result.returncode == 0
    assert result.stderr.count("features already done with these settings") == 3

    # An unknown phone edited into a transcript: stage 1 names the file and line, and keeps the features.
    text = data / "dev" / "text"
    original = text.read_text()
    lines = original.splitlines()
    lines[2] += " zz"
    text.write_text("\n".join(lines) + "\n")
    result = run_sh("--stage", "1", "--stop-stage", "1", *overrides)
    assert result.returncode == 1
    assert f"{text}:3: '{lines[2].split()[0]}': phone 'zz' is not in" in result.stderr
    assert (data / "mfcc" / "dev" / "feats.scp").is_file()
    text.write_text(original)

    # A wav.scp entry pointing at a truncated wav: a clear error naming it, and the old features kept.
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes((SHARED_FSDD / "recordings" / "3_george_4.wav").read_bytes()[:3000])
    wav_scp = data / "train" / "wav.scp"
    lines = wav_scp.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("george_3_04 "))
    lines[index] = f"george_3_04 {truncated}"
    wav_scp.write_text("\n".join(lines) + "\n")
    result = run_sh("--stage", "1", "--stop-stage", "1", *overrides)
    assert result.returncode == 1
    assert f"wav.scp:{index + 1}: 'george_3_04': {truncated}: truncated" in result.stderr
    assert (data / "mfcc" / "train" / "feats.scp").is_file()


def _lock_is_free(path) -> bool:
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


@pytest.mark.slow
def test_training_in_two_processes_resumes_after_a_kill_on_two_machines_and_decodes(tmp_path):
    """./run.sh --ngpu 2 train.device=cpu: stages 2-3 under torchrun (gloo), killed during Viterbi training; then
    resumed as two machines would run it (--nnodes 2, a process each, meeting at 127.0.0.1) through stage 5."""
    exp = tmp_path / "exp"
    overrides = [
        f"corpus.root={fsdd_subset(tmp_path / 'fsdd', takes=range(3))}",
        *tiny_run(tmp_path, exp),
        "train.num_threads=2",  # one per process
        "train.device=cpu",
        "train.viterbi.realign_epochs=[1,2]",
        "train.ctc.epochs=2",
        "train.compare_ctc_inits=[]",
        "decode.decoders=[greedy]",
    ]
    assert run_sh("--stop-stage", "1", *overrides).returncode == 0
    # run.sh and torchrun killed; the training processes die with torchrun.
    kill_run_sh_when(exp / "viterbi" / "checkpoints" / "epoch-1.pt", "--ngpu", "2", "--stage", "2", *overrides)
    deadline = time.time() + 10
    while not _lock_is_free(exp / "viterbi" / ".lock"):
        assert time.time() < deadline, "a training process outlived the kill"
        time.sleep(0.1)
    assert not (exp / "viterbi" / ".done.train").exists()

    endpoint = f"127.0.0.1:{free_port()}"  # the rendezvous
    machines = [
        subprocess.Popen(
            [
                "./run.sh",
                "--nnodes",
                "2",
                "--node-rank",
                str(node),
                "--rdzv-endpoint",
                endpoint,
                "--stage",
                "2",
                "--stop-stage",
                "5",
                *overrides,
            ],
            cwd=REPO,
            env=project_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [machine.communicate(timeout=600) for machine in machines]
    for machine, (stdout, stderr) in zip(machines, outputs, strict=True):
        assert machine.returncode == 0, stdout + stderr[-3000:]
    assert "training in 1 process(es) on each of 2 machines (this one: 0)" in outputs[0][0]
    assert "stages 2 to 3, training in 1 process(es) on each of 2 machines (this one: 1)" in outputs[1][0]
    assert "Stage 4" not in outputs[1][0] and "Stage 4" in outputs[0][0]
    log = (exp / "viterbi" / "log" / "train.log").read_text()
    assert "training on CPU, fp32, 2 processes" in log and "resuming from" in log
    assert "process 1 of 2 (gloo backend)" in (exp / "viterbi" / "log" / "train.rank1.log").read_text()
    assert not list(exp.glob("*/log/train.rank0*"))
    summary = json.loads((exp / "ctc" / "train_summary.json").read_text())
    assert [r["epoch"] for r in summary["history"]] == [1, 2]
    for model in ("viterbi", "ctc"):
        for split in ("dev", "test"):
            per = json.loads((exp / model / f"decode_{split}_greedy" / "per.json").read_text())
            assert per["total"]["n"] == 3 * 32  # 3 takes of 0-9: 32 phones each
    assert (tmp_path / "RESULTS.md").is_file()


@pytest.mark.slow
def test_all_stages_with_a_kill_during_ctc_training(tmp_path):
    exp = tmp_path / "exp"
    overrides = [
        f"corpus.root={fsdd_subset(tmp_path / 'fsdd', takes=range(4))}",
        *tiny_run(tmp_path, exp),
        "train.viterbi.realign_epochs=[1,2]",
        "train.ctc.epochs=6",
        "train.compare_ctc_inits=[fresh,scratch]",  # the FSDD recipe has none
        "decode.ctc_beam.lm_weights=[0,0.5]",
        "decode.ctc_beam.insertion_bonuses=[0,1]",
        "decode.hybrid.acoustic_scales=[0.3,1.0]",
        "decode.hybrid.insertion_bonuses=[0]",
        "decode.words.lm_weights=[0,1]",
        "decode.words.word_scores=[0]",
    ]
    result = run_sh("--stop-stage", "2", *overrides)
    assert result.returncode == 0, result.stdout + result.stderr

    # Stage 3 killed (SIGKILL, the whole process group) once its first checkpoint is written.
    kill_run_sh_when(exp / "ctc" / "checkpoints" / "epoch-1.pt", "--stage", "3", "--stop-stage", "3", *overrides)
    assert not (exp / "ctc" / ".done.train").exists()

    result = run_sh("--stage", "3", *overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming from" in result.stderr
    for model in ("viterbi", "ctc"):
        for split in ("dev", "test"):
            decode_dir = exp / model / f"decode_{split}_greedy"
            per = json.loads((decode_dir / "per.json").read_text())
            assert per["metric"] == "per" and per["total"]["n"] == 4 * 32  # 4 takes of 0-9: 32 phones each
            assert (decode_dir / "hyp.txt").is_file() and (decode_dir / "per.txt").is_file()
    # The LM decoders: weights tuned on dev over the grid, test decoded once with the values chosen there.
    for model, grid_size in (("viterbi", 2), ("ctc", 4)):  # the CTC grid: LM weight x insertion bonus
        tuning = json.loads((exp / model / "decode_dev_lm" / "tuning.json").read_text())
        assert len(tuning["grid"]) == grid_size
        chosen = json.loads((exp / model / "decode_test_lm" / "decoder.json").read_text())
        assert {k: v for k, v in chosen.items() if k != "decoder"} == tuning["chosen"]
        assert not (exp / model / "decode_test_lm" / "tuning.json").exists()
        assert (exp / model / "decode_test_lm" / "per.json").is_file()
        # The reports of every decode dir; sclite (CI installs sctk) agrees with our PER on these real decodes.
        for decode_dir in [*(exp / model).glob("decode_*_greedy"), *(exp / model).glob("decode_*_lm")]:
            for report in ("per.pra", "confusions.txt", "confusion.png"):
                assert (decode_dir / report).stat().st_size > 0
            if os.environ.get("CI") or find_sclite():
                ours = json.loads((decode_dir / "per.json").read_text())["total"]["per"]
                theirs = json.loads((decode_dir / "sclite.json").read_text())["per"]
                assert abs(ours - theirs) <= 0.5
    # Word decoding of the digits (FSDD enables it) by both models: WER and SER, tuned on dev.
    for model in ("viterbi", "ctc"):
        assert len(json.loads((exp / model / "decode_dev_words" / "tuning.json").read_text())["grid"]) == 2
        rates = json.loads((exp / model / "decode_test_words" / "wer.json").read_text())
        assert rates["metric"] == "wer" and rates["n"] == 40 and 0 <= rates["ser"] <= 100
        for report in ("wer.txt", "wer.pra", "confusions.txt", "confusion.png"):
            assert (exp / model / "decode_test_words" / report).stat().st_size > 0
        assert (exp / model / "decode_test_words" / "wer.txt").read_text().splitlines()[1].startswith("%WER ")
    results = (tmp_path / "RESULTS.md").read_text()
    assert "Word error rate (lexicon-constrained word decoding)" in results
    assert "| viterbi | frame argmax" in results and "| ctc | CTC best path" in results
    assert "| ctc | CTC prefix beam search + phone LM (lm_weight" in results and "| viterbi | hybrid Viterbi" in results
    assert "| viterbi | hybrid Viterbi word loop + word bigram (acoustic_scale" in results
    assert "Viterbi re-alignment rounds" in results and "3 CTC training" in results
    # Stage 3's comparison of CTC inits: the default run and one per train.compare_ctc_inits, not decoded.
    for row in ("| viterbi | ctc |", "| fresh | ctc_fresh |", "| scratch | ctc_scratch |"):
        assert row in results
    assert (tmp_path / "RESULTS_ctc_init.png").stat().st_size > 0
    assert not list((exp / "ctc_fresh").glob("decode_*"))


@pytest.mark.slow
def test_timit_sample_all_stages_with_alignment_accuracy(tmp_path):
    exp = tmp_path / "exp"
    overrides = [
        "recipe=timit_sample",
        f"corpus.root={SHARED_TIMIT}",
        *tiny_run(tmp_path, exp),
        "train.viterbi.realign_epochs=[2,3]",
        "train.ctc.epochs=2",
        "train.speed_perturb=[0.9,1.1]",
        "train.spec_augment.enabled=true",
        *ONE_POINT_GRIDS,
    ]
    result = run_sh(*overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train: 80 utterances of 10 speakers" in result.stderr
    # Speed perturbation: stages 1-3 train on the 80 utterances and a copy of each at 0.9 and 1.1.
    assert validate_data_dir(tmp_path / "data" / "fbank40" / "train_sp") == 240
    for round_ in (0, 2, 3):
        stats = json.loads((exp / "viterbi" / "ali" / f"iter{round_}" / "stats.json").read_text())
        assert stats["train_utterances"] == 240
        for name in ("train", "dev"):
            accuracy = stats["alignment_accuracy"][name]
            assert accuracy["matched_boundaries"] > 500 and 0 < accuracy["frame_agreement"] <= 100
    # The Viterbi model aligns with the epoch that aligned dev best (validation's alignment figures).
    history = json.loads((exp / "viterbi" / "train_summary.json").read_text())["history"]
    assert all(0 <= record["valid_alignment_within_20ms"] <= 100 for record in history)
    assert (exp / "viterbi" / "best_alignment.pt").is_file()
    # Stage 8: the whole corpus (80 + 16 + 16 utterances), with TIMIT's hand-labelled words as stage 7 takes them.
    corpus = exp / "viterbi" / "align_corpus"
    assert len(list((corpus / "textgrids").glob("*.TextGrid"))) == 112 and not (corpus / "unaligned.txt").read_text()
    aligned_with = {"viterbi": "best_alignment.pt", "ctc": "best.pt"}
    for model in ("viterbi", "ctc"):
        accuracy = json.loads((exp / model / "decode_test_greedy" / "alignment_accuracy.json").read_text())
        assert accuracy["num_utts"] == 16 and accuracy["within_50ms"] is not None
        assert accuracy["checkpoint"]["file"] == aligned_with[model]
        # Stage 7: the test set aligned through the model's bundle (features made anew from the audio) aligns as
        # the decode dir did; the word tier and the reference TextGrids come from the hand labels.
        aligned = exp / model / "align_test"
        again = json.loads((aligned / "alignment_accuracy.json").read_text())
        assert (
            again["within_20ms"] == accuracy["within_20ms"]
            and again["checkpoint"]["epoch"] == accuracy["checkpoint"]["epoch"]
        )
        for textgrids in (aligned / "textgrid", aligned / "reference" / "textgrid"):
            assert len(list(textgrids.glob("*.TextGrid"))) == 16
        hand_words = read_ctm(tmp_path / "data" / "test" / "words.ctm")
        assert read_ctm(aligned / "words.ctm") == hand_words == read_ctm(aligned / "reference" / "words.ctm")
        assert read_ctm(aligned / "reference" / "phones.ctm") == read_ctm(tmp_path / "data" / "test" / "phones.ctm")
    text_words = read_table(tmp_path / "data" / "test" / "text.words")
    assert {u: [s.label for s in segs] for u, segs in hand_words.items()} == {
        u: w.split() for u, w in text_words.items()
    }
    results = (tmp_path / "RESULTS.md").read_text()
    assert "Alignment accuracy against the hand-labelled phone boundaries" in results
    assert "| Viterbi round 0 (flat start) | train |" in results
    assert "| Viterbi model, forced (best_alignment.pt, epoch " in results
    assert "| CTC model, forced_align (best.pt, epoch " in results
    assert "| 0 speed perturbation (train_sp) |" in results and "| 1 features (train, dev, test, train_sp) |" in results

    # A TIMIT recording aligned as a user tries it: with its .phn file (TIMIT's 61 labels: h#, dcl, ...), folded as
    # training folded them (the bundle's phone_map.tsv); with the model's 48 phones and no silence at the edges,
    # which is added (the model's graphs have none: hmm.optional_silence=false). Both give the same alignment.
    wav = SHARED_TIMIT / "timit" / "dr3-falk0" / "si1086.wav"
    folded = " ".join(s.label for s in read_ctm(tmp_path / "data" / "train" / "phones.ctm")["falk0_si1086"])
    assert folded.startswith("sil dh eh n") and folded.endswith("r ey cl t sil")
    found = {}
    for transcript, said in (
        (wav.with_suffix(".phn"), "the corpus's phones folded to the model's (phone_map.tsv): " + folded),
        (folded.removeprefix("sil ").removesuffix(" sil"), "sil added at its start and end"),
    ):
        out = tmp_path / f"aligned_{len(found)}"
        args = ["python", "steps/align.py", exp / "viterbi", "--phones", wav, transcript, "--out-dir", out]
        result = subprocess.run(list(map(str, args)), cwd=REPO, env=project_env(), capture_output=True, text=True)
        assert result.returncode == 0 and said in result.stderr, result.stderr
        found[transcript] = [s.label for s in read_ctm(out / "phones.ctm")["si1086"]]
    assert list(found.values())[0] == list(found.values())[1] == folded.split()
    # The README's short path for TIMIT, as written.
    transcribed, aligned = run_short_path("exp/timit_sample", exp, tmp_path)
    assert transcribed.returncode == 0 and "si1086 phones (" in transcribed.stdout, transcribed.stderr
    assert aligned.returncode == 0 and (tmp_path / "aligned_timit" / "textgrid" / "si1086.TextGrid").is_file()
