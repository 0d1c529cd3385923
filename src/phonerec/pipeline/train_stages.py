"""Stages 2 and 3: Viterbi training from a flat start with re-alignment, then CTC from the Viterbi model."""

import contextlib
import logging
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from phonerec.base.config import StageKeys, save_config
from phonerec.base.errors import RecipeError
from phonerec.base.files import file_digest, write_json_atomic, write_text_atomic
from phonerec.base.ownership import MARKER, move_entries, refuse_link, remove_tree
from phonerec.data.data_dir import read_table
from phonerec.data.dataset import load_examples
from phonerec.data.lang import ignored_in_scoring, read_id2phone, read_phones, read_topology
from phonerec.hmm.align import Topology
from phonerec.hmm.align_eval import read_ctm
from phonerec.hmm.timing import frame_timing
from phonerec.hmm.transitions import Transitions
from phonerec.model.recurrent import RecurrentAcousticModel, model_arguments, num_parameters
from phonerec.pipeline.markers import StageRun, read_digest
from phonerec.pipeline.recipe import feature_dir_digest, lang_dir_digest
from phonerec.pipeline.stage_keys import TRAIN_CTC, TRAIN_VITERBI
from phonerec.scoring.error_rate import dev_per_scorer
from phonerec.training import distributed
from phonerec.training.augment import SpecAugment
from phonerec.training.checkpoints import load_checkpoint, load_model
from phonerec.training.ctc import CTCTask
from phonerec.training.loop import train
from phonerec.training.viterbi_ce import ViterbiTask

log = logging.getLogger(__name__)


# How CTC training starts: from the Viterbi model keeping its outputs, from it with a fresh output layer, or not.
# (phonerec.base.schema.check_config refuses other values of these keys when the config is loaded)
# The dirs every training step takes first.
@contextlib.contextmanager
def training_processes(cfg: DictConfig, exp_dir: Path):
    """What a training step runs in: under torchrun (run.sh --ngpu N) this process's group, one of N, and the run's
    lock on exp_dir, taken by rank 0 (phonerec.training.distributed); one process alone otherwise."""
    with distributed.process_group(cfg.train.device), distributed.exclusive(exp_dir):
        yield


STEP_INPUTS = [("train_dir", "training feature dir"), ("dev_dir", "dev feature dir"), ("lang_dir", "lang dir")]


def train_viterbi_stage(cfg: DictConfig, train_dir: Path, dev_dir: Path, lang_dir: Path, exp_dir: Path) -> None:
    cfg = TRAIN_VITERBI.view(cfg)
    stage = _training_run(exp_dir, TRAIN_VITERBI, cfg, train_dir, dev_dir, lang_dir, *_kaldi_inputs(cfg.train.viterbi))
    if stage is None:
        return
    with stage:
        model, model_args, task, train_set = viterbi_setup(cfg, train_dir, dev_dir, lang_dir, exp_dir)
        stage.seconds = _train(cfg, exp_dir, model, model_args, task, train_set, cfg.train.viterbi)
        if cfg.hmm.pronunciations == "variants" and distributed.is_main():
            _keep_chosen_phones(exp_dir)


CHOSEN_PHONES = "phones.train.txt"  # in the Viterbi run's dir: what CTC training and the phone LMs learn from


def _keep_chosen_phones(exp_dir: Path) -> None:
    """The training transcripts as the pronunciations chosen by best.pt's alignment round spell them (Kaldi's
    ali-to-phones of the final alignment), into <exp_dir>/phones.train.txt."""
    round_ = load_checkpoint(exp_dir / "best.pt")["task"]["round"]
    source = exp_dir / "ali" / f"iter{round_}" / CHOSEN_PHONES
    write_text_atomic(exp_dir / CHOSEN_PHONES, source.read_text())
    log.info("%s: the training transcripts by the pronunciations of %s", exp_dir / CHOSEN_PHONES, source)


def _kaldi_inputs(vcfg: DictConfig) -> list[str]:
    """The content of a Kaldi first alignment and its phones.txt (train.viterbi.init_alignment), an input of the
    stage as the lang dir is; nothing without one."""
    if vcfg.init_alignment is None:
        return []
    digests = []
    for key in ("init_alignment", "init_alignment_phones"):
        path = vcfg[key]
        if path is None or not Path(path).is_file():
            raise RecipeError(f"train.viterbi.{key}={path}: no such file")
        digests.append(file_digest(path))
    return digests


def _free_name(path: Path) -> Path:
    """path, or path.2, path.3, ... where it is taken (a run moved aside there before this code moved runs back)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def viterbi_setup(cfg: DictConfig, train_dir: Path, dev_dir: Path, lang_dir: Path, exp_dir: Path):
    """What Viterbi training trains, as the stage builds it (benchmarks/bench_train_loop.py times the same):
    (the new model, its model_args, the ViterbiTask, the training examples)."""
    topo = read_topology(lang_dir, cfg)
    variants = cfg.hmm.pronunciations == "variants"
    train_set, dev_set = (
        load_examples(d, lang_dir, cfg.features, word_boundaries=cfg.hmm.optional_silence, variants=variants)
        for d in (train_dir, dev_dir)
    )
    torch.manual_seed(cfg.train.seed)
    model_args = model_arguments(OmegaConf.to_container(cfg.model), train_set[0].feats.shape[1], topo.num_states)
    model = RecurrentAcousticModel(**model_args)
    reference = {
        name: read_ctm(d / "phones.ctm")
        for name, d in (("train", train_dir), ("dev", dev_dir))
        if (d / "phones.ctm").is_file()
    }
    task = ViterbiTask(
        exp_dir,
        topo,
        train_set,
        dev_set,
        cfg.train.viterbi,
        cfg.train,
        read_id2phone(lang_dir),
        dev_per_scorer(cfg, ignored_in_scoring(cfg, lang_dir)),
        cfg.hmm.optional_silence,
        reference,
        frame_timing(cfg, model_args["subsample"]),
        _transitions(cfg.hmm, topo),
        train_transitions=cfg.hmm.transitions == "learned",
        estimate_pronunciations=variants and cfg.hmm.pronunciation_probs == "estimated",
    )
    return model, model_args, task, train_set


def _transitions(hcfg: DictConfig, topo: Topology) -> Transitions | None:
    """The HMM transition probabilities hmm.transitions asks for, starting at hmm.self_loop_prob and
    hmm.silence_prob; None for none."""
    if hcfg.transitions == "none":
        return None
    return Transitions(topo.num_states, hcfg.self_loop_prob, hcfg.silence_prob, learn=hcfg.transitions == "learned")


def train_ctc_stage(
    cfg: DictConfig, train_dir: Path, dev_dir: Path, lang_dir: Path, init_dir: Path, exp_dir: Path
) -> None:
    """CTC from the Viterbi model in init_dir or from scratch (train.ctc.init, schema.CTC_INITS)."""
    cfg = TRAIN_CTC.view(cfg)
    init = cfg.train.ctc.init
    init_digest = "scratch"
    if init != "scratch":  # the Viterbi stage's digest, and the content of the checkpoint read (someone may swap it)
        if not (init_dir / "best.pt").is_file():
            raise RecipeError(f"{init_dir}/best.pt: no such checkpoint; train the Viterbi model first (stage 2)")
        init_digest = {"train": read_digest(init_dir, "train"), "best.pt": file_digest(init_dir / "best.pt")}
        if (init_dir / CHOSEN_PHONES).is_file():  # hmm.pronunciations=variants
            init_digest[CHOSEN_PHONES] = file_digest(init_dir / CHOSEN_PHONES)
    stage = _training_run(exp_dir, TRAIN_CTC, cfg, train_dir, dev_dir, lang_dir, init_digest)
    if stage is None:
        return
    with stage:
        num_phones = len(read_phones(lang_dir))
        train_set = load_examples(train_dir, lang_dir, cfg.features, word_boundaries=False)
        dev_set = load_examples(dev_dir, lang_dir, cfg.features, word_boundaries=False)
        if init != "scratch" and (init_dir / CHOSEN_PHONES).is_file():
            _use_chosen_phones(train_set, init_dir / CHOSEN_PHONES, read_phones(lang_dir))
        torch.manual_seed(cfg.train.seed)
        if init != "scratch":
            model, checkpoint = load_model(init_dir / "best.pt")
            model_args = ctc_from_viterbi(model, checkpoint["model_args"], cfg.train.ctc, num_phones)
            log.info("CTC starts from %s (epoch %d), init %s", init_dir / "best.pt", checkpoint["epoch"], init)
        else:
            model_args = model_arguments(OmegaConf.to_container(cfg.model), train_set[0].feats.shape[1], num_phones)
            model = RecurrentAcousticModel(**model_args)
        dev_per = dev_per_scorer(cfg, ignored_in_scoring(cfg, lang_dir))
        task = CTCTask(train_set, dev_set, cfg.train, model, read_id2phone(lang_dir), dev_per)
        stage.seconds = _train(cfg, exp_dir, model, model_args, task, train_set, cfg.train.ctc)


def _use_chosen_phones(examples, path: Path, phone_ids: dict[str, int]) -> None:
    """CTC's targets as the Viterbi model's alignments chose the pronunciations (hmm.pronunciations=variants):
    the phones of `path` for the utterances it holds (those the alignment skipped keep their text's)."""
    chosen = read_table(path)
    changed = 0
    for e in examples:
        if e.utt in chosen:
            phones = [phone_ids[p] for p in chosen[e.utt].split()]
            changed += phones != e.phones
            e.phones = phones
    log.info(
        "CTC targets: the chosen pronunciations of %s (%d of %d utterances differ from text)",
        path,
        changed,
        len(examples),
    )


def ctc_from_viterbi(model, viterbi_args: dict, ccfg: DictConfig, num_phones: int) -> dict:
    """Make the Viterbi model (of model_args `viterbi_args`) a CTC model of blank + phones, as train.ctc.init says;
    returns its model_args. init=viterbi keeps what the Viterbi model knows: its state outputs stay, pooled
    per phone, and the blank is a copy of the middle state of silence with train.ctc.blank_offset added to its
    bias, so the CTC model starts out ranking the phones as the Viterbi model does, the blank taking a share of
    silence's frames. init=fresh: a new randomly initialised output layer of blank + phones."""
    states_per_phone = viterbi_args["num_outputs"] // (num_phones - 1)
    topo = Topology(num_phones, states_per_phone)
    if topo.num_states != viterbi_args["num_outputs"]:
        raise RecipeError(
            f"the Viterbi model's {viterbi_args['num_outputs']} outputs are not {num_phones - 1} phones' states"
        )
    if ccfg.init == "fresh":
        model.replace_output_layer(num_phones)
        return {**viterbi_args, "num_outputs": num_phones}
    silence = topo.states(topo.silence_phone)[states_per_phone // 2]
    model.add_blank(copy_of=silence, bias_offset=ccfg.blank_offset, pool_states=states_per_phone)
    return {**viterbi_args, "num_outputs": viterbi_args["num_outputs"] + 1, "pool_states": states_per_phone}


def _training_run(
    exp_dir: Path, keys: StageKeys, cfg: DictConfig, train_dir: Path, dev_dir: Path, lang_dir: Path, *more_inputs
) -> StageRun | None:
    """The stage's run, with its digest of the settings and of its input dirs' content; None when it is done.
    Otherwise the exp dir is made ready for it (a run of other settings moved aside) and the threads set (under
    torchrun: by rank 0, and each rank takes its share of the threads)."""
    inputs = (feature_dir_digest(train_dir), feature_dir_digest(dev_dir), lang_dir_digest(lang_dir), *more_inputs)
    stage = StageRun(exp_dir, "train", keys.digest(cfg, *inputs), writes=distributed.is_main())
    if stage.done:
        return None
    if distributed.is_main():
        _fresh_exp_dir(exp_dir, stage.digest)
    distributed.barrier()
    torch.set_num_threads(distributed.threads_per_rank(cfg.train.num_threads))
    return stage


def _train(cfg: DictConfig, exp_dir: Path, model, model_args: dict, task, train_set, scfg: DictConfig) -> float:
    """Run the training loop, then write train_summary.json and config.yaml; returns the training seconds."""
    saved_with = {"model_args": model_args, "config": OmegaConf.to_container(cfg, resolve=True)}
    summary = train(exp_dir, model, task, train_set, scfg, cfg.train, saved_with, SpecAugment.from_config(cfg))
    history = summary["history"]
    seconds = sum(r["seconds"] for r in history)
    if not distributed.is_main():
        return seconds
    write_json_atomic(
        exp_dir / "train_summary.json",
        {
            "kind": task.kind,
            "epochs": len(history),
            "best": summary["best"],
            "train_seconds": seconds,
            "frames_per_second": sum(r["frames_per_second"] for r in history) / max(len(history), 1),
            "model_args": model_args,
            "parameters": num_parameters(model),
            "history": history,
        },
    )
    save_config(cfg, exp_dir / "config.yaml")
    return seconds


# What stays in a training run's dir when the run is moved aside: this step's log, the locks, the recipe's marker.
KEPT_IN_PLACE = ("log", ".lock", ".run.lock", MARKER)


def _fresh_exp_dir(exp_dir: Path, digest: str) -> None:
    """Keep a run with other settings (moved aside to <exp-dir>.<its digest>) rather than resume it with these;
    and where a run of these very settings was moved aside before (settings A, then B, then A again), move it
    back: it resumes where it stopped instead of training anew (its digest covers the settings and the inputs).
    Runs move by renames beside exp_dir (phonerec.base.ownership.move_entries), never through a link."""
    stamp = exp_dir / "run_digest"
    if stamp.is_file() and stamp.read_text().strip() != digest:
        old = stamp.read_text().strip()
        earlier = exp_dir.with_name(f"{exp_dir.name}.{digest}")
        for path in (exp_dir, earlier):  # checked before anything moves
            refuse_link(path, "move runs")
        aside = _free_name(exp_dir.with_name(f"{exp_dir.name}.{old}"))
        log.warning("%s holds a run with other settings; moving it to %s", exp_dir, aside)
        move_entries(exp_dir, aside, skip=KEPT_IN_PLACE)  # this step writes its log there; locks and marker stay
        if (exp_dir / "log").is_dir():
            shutil.copytree(exp_dir / "log", aside / "log")
        if (earlier / "run_digest").is_file() and (earlier / "run_digest").read_text().strip() == digest:
            log.warning("%s holds a run of these settings, moved aside before: moving it back to resume it", earlier)
            if (earlier / "log").is_dir():  # beside this step's own log, which is being written
                move_entries(earlier / "log", _free_name(exp_dir / "log" / f"before.{digest}"))
            move_entries(earlier, exp_dir, skip=KEPT_IN_PLACE)
            remove_tree(earlier, made_in=exp_dir.parent)  # left with its marker and emptied log
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stamp, digest + "\n")
