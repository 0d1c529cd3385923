"""Training stages in process on a tiny FSDD-like corpus made here: Viterbi rounds on disk, resume after an
interruption giving the same model as an uninterrupted run, CTC from the Viterbi model, decode and score."""

import itertools
import json
import logging
import math
import shutil

import matplotlib.image
import pytest
import torch
from conftest import make_fsdd_copy
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import SCALARS, TENSORS, EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from phonerec.base.config import load_config
from phonerec.base.errors import RecipeError
from phonerec.data.data_dir import read_table
from phonerec.data.dataset import Example
from phonerec.hmm.transitions import TransitionCounts, Transitions
from phonerec.pipeline.decode_stages import decode_stage, make_lm_stage
from phonerec.pipeline.features_stage import make_features
from phonerec.pipeline.prepare_stage import prepare_stage
from phonerec.pipeline.score_stages import score_phones
from phonerec.pipeline.stage_keys import TRAIN_VITERBI
from phonerec.pipeline.train_stages import train_ctc_stage, train_viterbi_stage, viterbi_setup
from phonerec.training.checkpoints import best_alignment_epoch, save_checkpoint
from phonerec.training.loop import train

TINY = [
    "model.num_layers=1",
    "model.hidden_size=16",
    "model.dropout=0.1",
    "train.num_threads=1",
    "decode.num_threads=1",
    "train.viterbi.epochs=3",
    "train.viterbi.realign_epochs=[1,2]",
    "train.ctc.epochs=2",
    "train.log_every_batches=1",
    "nj=1",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    root = tmp / "fsdd"
    manifest = make_fsdd_copy(root, speakers=("george", "nicolas", "theo"), digits=range(4), takes=range(3))
    overrides = [f"corpus.root={root}", f"corpus.manifest={manifest}", f"paths.data={tmp}/data", *TINY]
    cfg = load_config(overrides)
    prepare_stage(cfg, tmp / "data", "fsdd")
    for split in ("train", "dev", "test"):
        make_features(tmp / "data" / split, tmp / "data" / "mfcc" / split, cfg)
    return tmp, overrides


def dirs(tmp):
    feats = tmp / "data" / "mfcc"
    return feats / "train", feats / "dev", tmp / "data" / "lang"


def test_viterbi_rounds_resume_and_ctc(prepared, tmp_path, caplog):
    tmp, overrides = prepared
    cfg = load_config([*overrides, "train.batch_frames=100"])  # several batches an epoch (TensorBoard's by-batch)
    train_dir, dev_dir, lang_dir = dirs(tmp)
    exp = tmp_path / "viterbi"
    train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, exp)

    # Rounds on disk: the flat start and a re-alignment after epochs 1 and 2, with their statistics.
    for round_ in (0, 1, 2):
        assert (exp / "ali" / f"iter{round_}" / "ali.train.txt").is_file()
    stats = json.loads((exp / "ali" / "iter1" / "stats.json").read_text())
    for key in ("changed_frames_percent", "train_loglik_per_frame", "dev_frame_accuracy", "dev_per"):
        assert key in stats
    # The posterior picture is sized to the utterance: a tenth of an inch (8 pixels at 80 dpi) a row, a row per
    # state its alignment passes (runs of a state), at least 6 inches across.
    picture = matplotlib.image.imread(exp / "ali" / "iter2" / "dev_posteriors.png")
    runs = [
        1 + sum(a != b for a, b in itertools.pairwise(line.split()[1:]))
        for line in open(exp / "ali" / "iter2" / "ali.dev.txt")
    ]
    assert picture.shape[0] >= 8 * min(runs) and picture.shape[1] >= 6 * 80
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    flat = (exp / "ali" / "iter0" / "ali.train.txt").read_text()
    assert flat != (exp / "ali" / "iter1" / "ali.train.txt").read_text()
    uninterrupted = torch.load(exp / "checkpoints" / "epoch-3.pt", weights_only=False)["model"]

    # A run killed during epoch 3: its checkpoint and marker are missing. The same command resumes.
    (exp / "checkpoints" / "epoch-3.pt").unlink()
    (exp / ".done.train").unlink()
    with caplog.at_level(logging.INFO):
        train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, exp)
    assert "resuming from" in caplog.text and "epoch 2 of 3 done" in caplog.text
    resumed = torch.load(exp / "checkpoints" / "epoch-3.pt", weights_only=False)["model"]
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, resumed[name]), name

    # TensorBoard, read back: the training curves in the first groups (every group numbered, as the Scalars page
    # orders groups by name), the losses named by the criterion, a batch's loss at every batch (train.log_every_
    # batches=1) on one axis across the resume (a run of its own, stepped by batch), the best epoch; the config as
    # text, once.
    events = EventAccumulator(str(exp / "tensorboard"), size_guidance={SCALARS: 0, TENSORS: 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    criterion = cfg.train.viterbi.criterion
    assert min(scalars) == f"1_loss/dev_{criterion}" and all(tag[0].isdigit() for tag in scalars)
    assert {f"1_loss/train_{criterion}", "2_per_percent/dev", "2_per_percent/dev_frame_argmax"} <= scalars
    history = torch.load(exp / "last.pt", weights_only=False)["history"]
    batches = EventAccumulator(str(exp / "tensorboard" / "batches"), size_guidance={SCALARS: 0})
    batches.Reload()
    steps = [e.step for e in batches.Scalars(f"1_loss/train_{criterion}_by_batch")]
    assert steps == list(range(1, sum(r["batches"] for r in history) + 1)) and history[0]["batches"] > 1
    best = torch.load(exp / "best.pt", weights_only=False)["epoch"]
    assert [(e.step, e.value) for e in events.Scalars("3_training/best_epoch")][-1] == (3, best)
    config = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("config/text_summary")]
    assert len(config) == 1 and "      hidden_size: 16" in config[0].splitlines()  # model: hidden_size, indented
    assert events.Tensors("best/text_summary")[-1].tensor_proto.string_val[0].decode().startswith(f"epoch {best}:")

    # Done: the same command is a logged no-op.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, exp)
    assert "already done" in caplog.text

    ctc = tmp_path / "ctc"
    train_ctc_stage(cfg, train_dir, dev_dir, lang_dir, exp, ctc)
    checkpoint = torch.load(ctc / "best.pt", weights_only=False)
    assert checkpoint["kind"] == "ctc" and checkpoint["model_args"]["num_outputs"] == 21  # phones + blank

    for model_dir in (exp, ctc):
        decode_dir = model_dir / "decode_test_greedy"
        decode_stage(
            cfg, "greedy", tmp / "data" / "mfcc" / "test", lang_dir, model_dir, tmp / "data" / "lm", decode_dir
        )
        result = score_phones(cfg, decode_dir, lang_dir)
        assert result["total"]["n"] > 0 and (decode_dir / "per.txt").is_file()


def test_resume_mends_a_stale_best_copy_and_skips_a_corrupt_newest_checkpoint(prepared, tmp_path, caplog):
    tmp, overrides = prepared
    cfg = load_config(overrides)
    train_dir, dev_dir, lang_dir = dirs(tmp)
    exp = tmp_path / "viterbi"
    train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, exp)
    checkpoints = exp / "checkpoints"
    best = json.loads((exp / "train_summary.json").read_text())["best"]["epoch"]
    uninterrupted = torch.load(checkpoints / "epoch-3.pt", weights_only=True)["model"]

    # Killed between epoch N's checkpoint and its copy to best.pt: best.pt still holds an older epoch.
    other = next(e for e in (1, 2, 3) if e != best)
    shutil.copyfile(checkpoints / f"epoch-{other}.pt", exp / "best.pt")
    (exp / ".done.train").unlink()
    with caplog.at_level(logging.WARNING):
        train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, exp)
    assert f"is not epoch {best}'s checkpoint" in caplog.text
    assert torch.load(exp / "best.pt", weights_only=True)["epoch"] == best

    # The newest checkpoint truncated (a full disk): named, moved aside, and training resumes from the one before.
    caplog.clear()
    newest = checkpoints / "epoch-3.pt"
    newest.write_bytes(newest.read_bytes()[:300])
    (exp / ".done.train").unlink()
    with caplog.at_level(logging.INFO):
        train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, exp)
    assert f"{newest}: not a readable checkpoint" in caplog.text and "moved aside to epoch-3.pt.corrupt" in caplog.text
    assert "epoch 2 of 3 done" in caplog.text and (checkpoints / "epoch-3.pt.corrupt").is_file()
    resumed = torch.load(newest, weights_only=True)["model"]
    assert all(torch.equal(tensor, resumed[name]) for name, tensor in uninterrupted.items())


def test_ctc_with_the_own_loss_trains_as_with_torchs(prepared, tmp_path):
    tmp, overrides = prepared
    train_dir, dev_dir, lang_dir = dirs(tmp)
    viterbi = tmp_path / "viterbi"
    train_viterbi_stage(load_config(overrides), train_dir, dev_dir, lang_dir, viterbi)
    histories = {}
    for loss in ("torch", "own"):
        ctc = tmp_path / f"ctc_{loss}"
        train_ctc_stage(load_config([*overrides, f"train.ctc.loss={loss}"]), train_dir, dev_dir, lang_dir, viterbi, ctc)
        histories[loss] = json.loads((ctc / "train_summary.json").read_text())["history"]
    for torch_epoch, own_epoch in zip(histories["torch"], histories["own"], strict=True):
        for key in ("train_loss", "valid_loss"):  # float32 sums in another order: close, not equal
            assert own_epoch[key] == pytest.approx(torch_epoch[key], rel=1e-3), key
    with pytest.raises(RecipeError, match="train.ctc.loss=k2"):
        train_ctc_stage(
            load_config([*overrides, "train.ctc.loss=k2"]), train_dir, dev_dir, lang_dir, viterbi, tmp_path / "x"
        )


def test_viterbi_stage_with_the_full_sum_criterion(prepared, tmp_path):
    tmp, overrides = prepared
    train_dir, dev_dir, lang_dir = dirs(tmp)
    histories = {}
    for criterion in ("ce", "fullsum"):
        exp = tmp_path / criterion
        settings = [f"train.viterbi.criterion={criterion}", "train.viterbi.epochs=4", "train.viterbi.patience=null"]
        settings.append("train.viterbi.fullsum_prior_scale=0.0")  # no soft prior: the loss is then -log p(X | graph)
        train_viterbi_stage(load_config([*overrides, *settings]), train_dir, dev_dir, lang_dir, exp)
        histories[criterion] = json.loads((exp / "train_summary.json").read_text())["history"]
    losses = [epoch["train_loss"] for epoch in histories["fullsum"]]
    assert len(losses) == 4 and losses[-1] < losses[0] and all(torch.isfinite(torch.tensor(losses)))
    assert min(losses) > 0  # -log of a sum of posterior products: a proper likelihood, not scaled by the priors
    assert losses != [epoch["train_loss"] for epoch in histories["ce"]]  # the same seed: another criterion
    for round_ in (0, 1, 2):  # the best-path alignments are still made and kept every round
        assert (tmp_path / "fullsum" / "ali" / f"iter{round_}" / "ali.train.txt").is_file()
    with pytest.raises(RecipeError, match="train.viterbi.criterion=mmi"):
        cfg = load_config([*overrides, "train.viterbi.criterion=mmi"])
        train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, tmp_path / "x")


def test_training_in_bf16_through_the_gpu_code_path_on_the_cpu(prepared, tmp_path, caplog):
    """train.device=cpu train.precision=bf16: the autocast forward the GPU runs, the full sum in float32 after it;
    the checkpoint is the plain model's, which fp32 decoding and CTC initialisation load."""
    tmp, overrides = prepared
    train_dir, dev_dir, lang_dir = dirs(tmp)
    bf16 = [*overrides, "train.device=cpu", "train.precision=bf16", "train.viterbi.criterion=fullsum"]
    with caplog.at_level(logging.INFO):
        train_viterbi_stage(load_config(bf16), train_dir, dev_dir, lang_dir, tmp_path / "viterbi")
        train_ctc_stage(load_config(bf16), train_dir, dev_dir, lang_dir, tmp_path / "viterbi", tmp_path / "ctc")
    assert caplog.text.count("training on CPU, bf16, 1 process") == 2 and "CTC loss: torch's CPU kernel" in caplog.text
    for model in ("viterbi", "ctc"):
        history = json.loads((tmp_path / model / "train_summary.json").read_text())["history"]
        assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["valid_loss"]) for e in history)
        state = torch.load(tmp_path / model / "best.pt", weights_only=False)["model"]
        assert all(v.dtype == torch.float32 for v in state.values()) and not any(k.startswith("model.") for k in state)
    fp32 = load_config([*overrides, "train.viterbi.criterion=fullsum"])
    caplog.clear()
    with caplog.at_level(logging.INFO):  # the precision is hashed: fp32 is another run, the bf16 one moved aside
        train_viterbi_stage(fp32, train_dir, dev_dir, lang_dir, tmp_path / "viterbi")
    assert "training on CPU, fp32" in caplog.text
    with pytest.raises(RecipeError, match="train.precision=fp16"):
        train_viterbi_stage(load_config([*overrides, "train.precision=fp16"]), train_dir, dev_dir, lang_dir, tmp_path)


def test_a_round_split_over_two_ranks_gathers_what_one_process_aligns(prepared, tmp_path):
    """ViterbiTask's re-alignment under torchrun: each rank aligns every second utterance, rank 0 merges
    (here the two shares are aligned in this process and handed to the merge as gather would hand them)."""
    tmp, overrides = prepared
    train_dir, dev_dir, lang_dir = dirs(tmp)
    cfg = TRAIN_VITERBI.view(load_config([*overrides, "hmm.transitions=learned"]))
    rounds = {}
    for ranks in (1, 2):
        model, _, task, _ = viterbi_setup(cfg, train_dir, dev_dir, lang_dir, tmp_path / f"ranks{ranks}")
        task.start(model)
        model.eval()
        with torch.no_grad():
            gathered = []
            for rank in range(ranks):
                counts = TransitionCounts(task.topo.num_states)
                found = {
                    name: task._realign(model, examples[rank::ranks], name, counts if name == "train" else None)
                    for name, examples in task.sets.items()
                }
                gathered.append((found, counts))
            task._finish_round(model, 1, SummaryWriter(str(tmp_path / f"tb{ranks}")), gathered)
        rounds[ranks] = task
    one, two = rounds[1], rounds[2]
    for name in ("train", "dev"):
        assert list(two.alignments[name]) == list(one.alignments[name])  # in corpus order
        assert all(torch.equal(two.alignments[name][u], a) for u, a in one.alignments[name].items())
    assert torch.equal(two.log_priors, one.log_priors)
    assert two.transitions.summary() == pytest.approx(one.transitions.summary())
    stats = [json.loads((tmp_path / f"ranks{r}" / "ali" / "iter1" / "stats.json").read_text()) for r in (1, 2)]
    assert stats[1]["train_loglik_per_frame"] == pytest.approx(stats[0]["train_loglik_per_frame"], rel=1e-6)
    assert stats[1]["changed_frames_percent"] == stats[0]["changed_frames_percent"]


def _counted_transitions(alignment_file, num_states):
    """Self-loop and forward counts per state and the optional silence's choices, read off one-digit utterances'
    state alignments (no word boundaries inside and no state twice in a row in a digit's phones, so a change of
    state is a forward arc); silence is state 0, optional at both edges."""
    loop, forward, silence = torch.zeros(num_states), torch.zeros(num_states), [0, 0]  # [taken, skipped]
    for line in alignment_file.read_text().splitlines():
        states = [int(s) for s in line.split()[1:]]
        for prev, state in zip(states[:-1], states[1:], strict=True):
            (loop if state == prev else forward)[prev] += 1
        forward[states[-1]] += 1
        for edge in (states[0], states[-1]):
            silence[0 if edge == 0 else 1] += 1
    return loop, forward, silence


def test_viterbi_stage_with_transition_probabilities(prepared, tmp_path):
    """Fixed transitions stay as configured; learned ones are re-estimated from the best paths by cross-entropy
    training and trained by the gradient with full-sum; both travel in the checkpoint and the hybrid decoder uses
    them."""
    tmp, overrides = prepared
    train_dir, dev_dir, lang_dir = dirs(tmp)
    lm_dir = tmp_path / "lm"
    settings = ["train.viterbi.epochs=2", "train.viterbi.patience=null", "decode.hybrid.acoustic_scales=[0.5]"]
    settings += ["decode.hybrid.insertion_bonuses=[0]", "hmm.self_loop_prob=0.6", "hmm.silence_prob=0.3"]
    make_lm_stage(load_config([*overrides, *settings]), tmp / "data" / "train", lm_dir)
    learned = {}
    for criterion, mode in (("ce", "fixed"), ("ce", "learned"), ("fullsum", "learned")):
        exp = tmp_path / f"{criterion}_{mode}"
        cfg = load_config([*overrides, *settings, f"train.viterbi.criterion={criterion}", f"hmm.transitions={mode}"])
        train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, exp)
        state = torch.load(exp / "checkpoints" / "epoch-2.pt", weights_only=False)["task"]["transitions"]
        log_probs = Transitions.from_state_dict(state).log_probs()
        learned[criterion, mode] = log_probs
        stats = json.loads((exp / "ali" / "iter2" / "stats.json").read_text())
        assert stats["transitions"]["silence_prob"] == pytest.approx(log_probs.silence.exp().item(), rel=1e-6)
        decode_dir = exp / "decode_test_lm"
        decode_stage(cfg, "lm", tmp / "data" / "mfcc" / "test", lang_dir, exp, lm_dir, decode_dir)
        assert score_phones(cfg, decode_dir, lang_dir)["total"]["n"] > 0

    fixed = learned["ce", "fixed"]
    assert torch.allclose(fixed.loop.exp(), torch.tensor(0.6)) and fixed.silence.exp().item() == pytest.approx(0.3)
    # Cross-entropy: the relative frequencies (plus one) of the last round's training alignment.
    ce = learned["ce", "learned"]
    loop, forward, silence = _counted_transitions(
        tmp_path / "ce_learned" / "ali" / "iter2" / "ali.train.txt", len(ce.loop)
    )
    assert torch.allclose(ce.loop.exp(), (loop + 1) / (loop + forward + 2), atol=1e-6)
    assert ce.silence.exp().item() == pytest.approx((silence[0] + 1) / (sum(silence) + 2), rel=1e-6)
    # Full-sum: moved by the gradient, away from where they started and from the counts.
    fullsum = learned["fullsum", "learned"]
    assert not torch.allclose(fullsum.loop.exp(), torch.tensor(0.6), atol=1e-3)
    assert not torch.allclose(fullsum.loop, ce.loop, atol=1e-3)
    with pytest.raises(RecipeError, match="hmm.transitions=hmm"):
        cfg = load_config([*overrides, "hmm.transitions=hmm"])
        train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, tmp_path / "x")
    with pytest.raises(RecipeError, match="hmm.self_loop_prob=1"):
        cfg = load_config([*overrides, "hmm.transitions=fixed", "hmm.self_loop_prob=1"])
        train_viterbi_stage(cfg, train_dir, dev_dir, lang_dir, tmp_path / "y")


def test_changed_settings_move_the_old_run_aside_and_back(prepared, tmp_path, caplog):
    tmp, overrides = prepared
    train_dir, dev_dir, lang_dir = dirs(tmp)
    exp = tmp_path / "viterbi"
    one = ["train.viterbi.epochs=1", "train.viterbi.realign_epochs=[1]"]
    train_viterbi_stage(load_config([*overrides, *one]), train_dir, dev_dir, lang_dir, exp)
    old_digest = (exp / "run_digest").read_text().strip()
    train_viterbi_stage(load_config([*overrides, *one, "train.viterbi.lr=0.01"]), train_dir, dev_dir, lang_dir, exp)
    assert (tmp_path / f"viterbi.{old_digest}" / "best.pt").is_file()
    new_digest = (exp / "run_digest").read_text().strip()
    assert new_digest != old_digest

    # Back to the first settings, then to the second again: each time the other run moves aside and the one of
    # these settings comes back and resumes (nothing is trained again); it used to fail with FileExistsError.
    switches = [
        (one, old_digest, new_digest),
        ([*one, "train.viterbi.lr=0.01"], new_digest, old_digest),
    ]
    for settings, digest, other in switches:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            train_viterbi_stage(load_config([*overrides, *settings]), train_dir, dev_dir, lang_dir, exp)
        assert "moving it back to resume it" in caplog.text and "resuming from" in caplog.text
        assert (exp / "run_digest").read_text().strip() == digest and (exp / ".done.train").is_file()
        assert (tmp_path / f"viterbi.{other}" / "best.pt").is_file()
        assert not (tmp_path / f"viterbi.{digest}").exists()


def test_a_decode_reruns_when_a_setting_or_file_it_reads_changes_and_only_then(prepared, tmp_path, caplog):
    tmp, overrides = prepared
    train_dir, dev_dir, lang_dir = dirs(tmp)
    exp, lm_dir, decode_dir = tmp_path / "viterbi", tmp_path / "lm", tmp_path / "viterbi" / "decode_test_lm"
    test_dir = tmp_path / "test"
    shutil.copytree(tmp / "data" / "mfcc" / "test", test_dir)  # its feats.scp points at the shared arks
    overrides = [
        *overrides,
        "train.viterbi.epochs=1",
        "train.viterbi.realign_epochs=[1]",
        "decode.hybrid.acoustic_scales=[0.5]",
        "decode.hybrid.insertion_bonuses=[0]",
    ]
    train_viterbi_stage(load_config(overrides), train_dir, dev_dir, lang_dir, exp)
    make_lm_stage(load_config(overrides), tmp / "data" / "train", lm_dir)

    def decode(*more):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            decode_stage(load_config([*overrides, *more]), "lm", test_dir, lang_dir, exp, lm_dir, decode_dir)
        return "already done" not in caplog.text

    assert decode()
    assert not decode()
    # Settings the hybrid decoder reads (decode.prior_scale was train.viterbi.prior_scale, read but not hashed).
    assert decode("decode.prior_scale=0.5")
    assert decode("decode.prior_scale=0.5", "decode.hybrid.beam=10")
    # Settings it does not read: another stage's, another decoder's, a thread count.
    assert not decode(
        "decode.prior_scale=0.5",
        "decode.hybrid.beam=10",
        "hmm.optional_silence=false",
        "train.viterbi.lr=0.5",
        "decode.ctc_beam.beam_size=3",
        "features.kaldi.num_ceps=5",
        "decode.num_threads=2",
    )
    # A corrected reference in the feature dir it reads: decoded again, with the new reference.
    text = test_dir / "text"
    utt, phones = text.read_text().splitlines()[0].split(" ", 1)
    text.write_text(text.read_text().replace(f"{utt} {phones}", f"{utt} {phones} {phones.split()[0]}", 1))
    assert decode("decode.prior_scale=0.5", "decode.hybrid.beam=10")
    assert read_table(decode_dir / "ref.txt")[utt] == f"{phones} {phones.split()[0]}"


def loop_train_settings():
    """train.* as the loop reads them, for the loop's tests on a Linear model: small batches, one thread."""
    return OmegaConf.create(
        {"seed": 0, "batch_frames": 100, "max_batch_utts": 4, "grad_clip": 5.0, "keep_checkpoints": 2}
        | {"num_threads": 1, "device": "cpu", "precision": "fp32", "log_every_batches": 1}
    )


class ScriptedTask:
    """A task whose dev figures are given: what the loop does with them is under test."""

    kind = criterion = "ctc"

    def __init__(self, pers, losses):
        self.figures = list(zip(pers, losses, strict=True))

    def start(self, model):
        pass

    def state(self):
        return {}

    def load_state(self, state):
        pass

    def parameters(self):
        return []

    def train_examples(self, train):
        return train

    def loss(self, model, feats, lengths, examples):
        return model(feats).pow(2).mean(), 1

    def validate(self, model):
        per, loss = self.figures.pop(0)
        return {"per": per, "loss": loss}

    def end_of_epoch(self, model, epoch, writer):
        pass


class DivergingTask(ScriptedTask):
    def loss(self, model, feats, lengths, examples):
        return model(feats).sum() * float("nan"), 1


def test_a_diverged_training_stops_at_once_with_a_clear_error(tmp_path):
    """It was: a ReLU RNN's CTC training ran 16 epochs of NaN loss, and stage 4 crashed on its posteriors."""
    scfg = OmegaConf.create(
        {"epochs": 5, "patience": None, "lr": 1e-3, "weight_decay": 0.0, "lr_decay": 0.5, "lr_patience": None}
        | {"lr_metric": "per"}
    )
    tcfg = loop_train_settings()
    examples = [Example(f"u{i}", "s", torch.randn(5, 3), [1], None) for i in range(4)]
    with pytest.raises(RecipeError, match=r"epoch 1: the training loss is nan: training diverged; lower the"):
        train(tmp_path / "x", torch.nn.Linear(3, 2), DivergingTask([50] * 5, [1.0] * 5), examples, scfg, tcfg, {})


def test_early_stopping_waits_for_both_dev_per_and_loss_and_survives_resume(tmp_path):
    scfg = OmegaConf.create(
        {
            "epochs": 10,
            "patience": 2,
            "lr": 1e-3,
            "weight_decay": 0.0,
            "lr_decay": 0.5,
            "lr_patience": 1,
            "lr_metric": "per",
        }
    )
    tcfg = loop_train_settings()
    examples = [Example(f"u{i}", "s", torch.randn(5, 3), [1], None) for i in range(4)]
    # PER reaches new lows at epochs 1 and 2; the loss at 1, 2 and 4 (as CTC's does while its PER sits at 100%):
    # with patience 2, training stops after epoch 6, whichever figure the learning rate follows.
    pers, losses = [50, 40, 45, 46, 47, 48, 30], [1.0, 0.9, 0.95, 0.8, 0.85, 0.9, 0.1]
    summary = train(tmp_path / "per", torch.nn.Linear(3, 2), ScriptedTask(pers, losses), examples, scfg, tcfg, {})
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3, 4, 5, 6]
    # The other way round: the loss stalls after epoch 2 while the PER keeps falling until epoch 5.
    pers2, losses2 = [50, 45, 44, 43, 42, 42, 42, 1], [1.0, 0.9, 1.1, 1.2, 1.3, 1.4, 1.5, 0.1]
    summary = train(tmp_path / "per2", torch.nn.Linear(3, 2), ScriptedTask(pers2, losses2), examples, scfg, tcfg, {})
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3, 4, 5, 6, 7]
    by_loss = OmegaConf.merge(scfg, {"lr_metric": "loss"})
    summary = train(tmp_path / "loss", torch.nn.Linear(3, 2), ScriptedTask(pers, losses), examples, by_loss, tcfg, {})
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3, 4, 5, 6]
    assert summary["best"] == {"per": 40, "epoch": 2}
    assert torch.load(tmp_path / "loss" / "last.pt", weights_only=False)["epoch"] == 6
    assert torch.load(tmp_path / "loss" / "best.pt", weights_only=False)["epoch"] == 2
    # Resumed, the run knows it has stopped: no epoch runs (the task would fail if asked for figures).
    resumed = train(tmp_path / "loss", torch.nn.Linear(3, 2), ScriptedTask([], []), examples, by_loss, tcfg, {})
    assert len(resumed["history"]) == 6
    with pytest.raises(RecipeError, match="patience=0"):
        never = OmegaConf.merge(scfg, {"patience": 0})
        train(tmp_path / "x", torch.nn.Linear(3, 2), ScriptedTask([], []), examples, never, tcfg, {})


def test_lr_halves_on_a_plateau_or_stays_constant_with_null_patience(tmp_path):
    scfg = OmegaConf.create(
        {"epochs": 5, "patience": None, "lr": 1e-3, "weight_decay": 0.0, "lr_decay": 0.5, "lr_patience": 1}
        | {"lr_metric": "per"}
    )
    tcfg = loop_train_settings()
    examples = [Example(f"u{i}", "s", torch.randn(5, 3), [1], None) for i in range(4)]
    pers, losses = [50, 50, 50, 50, 50], [1.0] * 5  # no new low after epoch 1
    decayed = train(tmp_path / "decay", torch.nn.Linear(3, 2), ScriptedTask(pers, losses), examples, scfg, tcfg, {})
    assert [r["lr"] for r in decayed["history"]] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4]
    constant_cfg = OmegaConf.merge(scfg, {"lr_patience": None})
    constant = train(
        tmp_path / "constant", torch.nn.Linear(3, 2), ScriptedTask(pers, losses), examples, constant_cfg, tcfg, {}
    )
    assert [r["lr"] for r in constant["history"]] == [1e-3] * 5


def test_the_alignment_checkpoint_is_the_epoch_that_aligned_dev_best(tmp_path):
    """Most boundaries within 20 ms, then the lower mean error, then the earlier epoch; best_alignment.pt is a
    copy of that epoch's checkpoint, kept when the epoch checkpoint itself is deleted."""
    figures = [None, (70.0, 17.0), (74.6, 17.1), (74.6, 16.3), (60.0, 12.0), (74.6, 16.3)]
    history = []
    for epoch, found in enumerate(figures, start=1):
        record = {"epoch": epoch, "valid_per": 50.0}
        if found:
            record |= {"valid_alignment_within_20ms": found[0], "valid_alignment_error_ms": found[1]}
        history.append(record)
        save_checkpoint(tmp_path, {"epoch": epoch}, best_epoch=1, keep=1, alignment_epoch=best_alignment_epoch(history))
    assert best_alignment_epoch(history) == 4
    assert best_alignment_epoch(history[:1]) is None
    assert torch.load(tmp_path / "best_alignment.pt")["epoch"] == 4
    assert [p.name for p in sorted((tmp_path / "checkpoints").glob("*.pt"))] == ["epoch-1.pt", "epoch-6.pt"]
