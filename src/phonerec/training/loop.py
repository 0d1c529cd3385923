"""The training loop that Viterbi and CTC training share: length-bucketed batches, Adam, ReduceLROnPlateau on a
dev figure (`lr_metric`), gradient clipping, validation every epoch, TensorBoard, and a checkpoint per epoch that
a killed run resumes from. What differs between the two is a Task (below); the loop's pieces follow icefall's
train.py: `train_one_epoch`, `validate`, `resume`, `save_checkpoint` (phonerec.training.checkpoints).
"""

import logging
import math
import random
import time
from pathlib import Path
from typing import Protocol

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from phonerec.base.errors import RecipeError
from phonerec.base.files import copy_atomic
from phonerec.data.dataset import Example, collate, make_batches
from phonerec.model.device import describe, in_precision, model_device, resolve_device
from phonerec.training import distributed
from phonerec.training.checkpoints import (
    best_alignment_epoch,
    epoch_checkpoints,
    load_checkpoint,
    restore_best_copies,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

log = logging.getLogger(__name__)


class Task(Protocol):
    """What the loop asks of a training criterion (phonerec.training.viterbi_ce.ViterbiTask, ...ctc.CTCTask).

    kind            the model kind it trains ("viterbi" or "ctc"), stored in each checkpoint for decoding.
    criterion       the loss it trains with (train.viterbi.criterion, or "ctc"), which names its curves.
    start           before the first epoch of a fresh run (the Viterbi task writes its flat start).
    state           what must survive a kill, saved in each checkpoint (the alignment round, state priors).
    load_state      restore `state()` when a run resumes.
    parameters      what the task trains beside the model (the Viterbi task's learned transitions), in the same
                    optimizer.
    train_examples  the training utterances of the coming epoch (those it can use: aligned, long enough).
    loss            (loss, weight) of one padded batch: the loop back-propagates `loss` and averages the logged
                    training loss with `weight` (frames or utterances).
    validate        dev figures under torch.no_grad(): a dict with at least "loss" and "per"; best.pt is the
                    epoch of the lowest "per", and the learning rate follows the one `lr_metric` names. With
                    "alignment_within_20ms" and "alignment_error_ms" (a forced alignment of dev against hand
                    labels), best_alignment.pt is the epoch that aligned best (checkpoints.best_alignment_epoch).
    end_of_epoch    work after validation (the Viterbi task re-aligns on its schedule), under torch.no_grad(); under
                    torchrun on every rank, `writer` None except on rank 0, whose state the others then load.
    """

    kind: str
    criterion: str

    def start(self, model: torch.nn.Module) -> None: ...

    def state(self) -> dict: ...

    def load_state(self, state: dict) -> None: ...

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def train_examples(self, train: list[Example]) -> list[Example]: ...

    def loss(self, model, feats: torch.Tensor, lengths: torch.Tensor, examples: list[Example]): ...

    def validate(self, model) -> dict: ...

    def end_of_epoch(self, model, epoch: int, writer: SummaryWriter) -> None: ...


def train(
    exp_dir: Path,
    model: torch.nn.Module,
    task: Task,
    train_set: list[Example],
    scfg: DictConfig,
    tcfg: DictConfig,
    saved_with: dict,
    augment=None,
) -> dict:
    """Train for at most scfg.epochs epochs (scfg: train.viterbi or train.ctc; tcfg: train), stopping early once
    neither the dev PER nor the dev loss has reached a new low for scfg.patience epochs (null: never): the loss
    falls while CTC's PER sits at 100% through an all-blank phase, the PER falls while an overconfident model's
    loss rises. The learning rate follows scfg.lr_metric (per or loss). Resumes from the newest checkpoint;
    `saved_with` goes into every checkpoint (model_args, to rebuild the model; the config). `augment` maps each
    training utterance's features in every batch (phonerec.training.augment.SpecAugment), never dev's.
    On train.device in train.precision (phonerec.model.device); under torchrun, one rank of a
    DistributedDataParallel run (phonerec.training.distributed).
    Returns {"best": {"per", "epoch"}, "history": one record per epoch}."""
    if scfg.patience is not None and scfg.patience < 1:
        raise RecipeError(f"patience={scfg.patience}: expected a number of epochs >= 1, or null")
    main, world = distributed.is_main(), distributed.world_size()
    device = resolve_device(tcfg.device, distributed.local_rank(), world)
    model.to(device)
    forward = in_precision(model, device, tcfg.precision)  # validation and re-alignment call this
    train_forward = forward  # and training steps this: under DDP, the ranks' gradients averaged
    if world > 1:
        train_forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    log.info("training on %s, %d process%s", describe(device, tcfg.precision), world, "es" if world > 1 else "")
    parameters = [*model.parameters(), *task.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=scfg.lr, weight_decay=scfg.weight_decay)
    # lr_patience null: a constant learning rate (on a small dev set, decaying at each noisy plateau starves training).
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=scfg.lr_decay, patience=scfg.lr_patience or 0
    )
    random.seed(tcfg.seed)  # the batches' order: the same on every rank
    torch.manual_seed(tcfg.seed + distributed.rank())  # dropout and augmentation: each rank its own
    start_epoch, best, history = resume(exp_dir, model, optimizer, scheduler, task, scfg.epochs, tcfg.num_threads)
    # purge_step drops events a killed run logged past its last checkpoint.
    writer = SummaryWriter(str(exp_dir / "tensorboard"), purge_step=start_epoch) if main else None
    if main and start_epoch == 1:
        writer.add_text("config", _as_text(saved_with.get("config")), 0)
    curves = Curves(writer, exp_dir, task.criterion, tcfg.log_every_batches, sum(r.get("batches", 0) for r in history))
    for epoch in range(start_epoch, scfg.epochs + 1):
        if scfg.patience is not None and epochs_without_improvement(history) >= scfg.patience:
            log.info(
                "early stop after epoch %d: no new low of the dev PER or loss for %d epochs (best PER %.2f%% at "
                "epoch %d)",
                *(epoch - 1, scfg.patience, best["per"], best["epoch"]),
            )
            break
        start = time.perf_counter()
        record = train_one_epoch(train_forward, task, train_set, optimizer, tcfg, epoch, augment, parameters, curves)
        if not math.isfinite(record["train_loss"]):  # it stays so: epochs of NaN, then posteriors no decoder reads
            raise RecipeError(
                f"{exp_dir}: epoch {epoch}: the training loss is {record['train_loss']}: training diverged; lower the "
                "learning rate (train.viterbi.lr, train.ctc.lr) or train.grad_clip, or try another train.seed"
            )
        with distributed.main_alone(tcfg.num_threads):
            valid = validate(forward, task) if main else None
        valid = distributed.broadcast(valid)
        if scfg.lr_patience is not None:
            scheduler.step(valid[scfg.lr_metric])
        record["lr"] = optimizer.param_groups[0]["lr"]
        record |= {f"valid_{k}": v for k, v in valid.items()}
        with torch.no_grad():  # on every rank (a task may split its work over them), then rank 0's state on all
            task.end_of_epoch(forward, epoch, writer)
            _share_state(task)
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        if valid["per"] < best["per"]:
            best = {"per": valid["per"], "epoch": epoch}
        if main:
            curves.epoch(record, valid, best, epoch)
        rng = distributed.gather(rng_state())  # every rank's, for a resumed run to continue each
        if main:
            checkpoint = {
                "epoch": epoch,
                "model": model.state_dict(),
                **saved_with,
                "kind": task.kind,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng[0] if world == 1 else rng,
                "task": task.state(),
                "best": best,
                "history": history,
            }
            save_checkpoint(exp_dir, checkpoint, best["epoch"], tcfg.keep_checkpoints, best_alignment_epoch(history))
        distributed.barrier()  # no rank starts the next epoch (or ends) before the checkpoint is written
        log.info(
            "epoch %d/%d: train loss %.4f, dev loss %.4f, dev PER %.2f%% (best %.2f%% at %d), lr %.2e, "
            "%.0f frames/s, %.1f s",
            epoch,
            scfg.epochs,
            record["train_loss"],
            valid["loss"],
            valid["per"],
            best["per"],
            best["epoch"],
            record["lr"],
            record["frames_per_second"],
            record["seconds"],
        )
    if main:
        writer.add_text("best", f"epoch {best['epoch']}: dev PER {best['per']:.2f}%", history[-1]["epoch"])
        writer.close()
        curves.close()
        copy_atomic(exp_dir / "checkpoints" / f"epoch-{history[-1]['epoch']}.pt", exp_dir / "last.pt")
    return {"best": best, "history": history}


def _main_then_share(task: Task, work, threads: int) -> None:
    """`work()` (which changes the task's state) on rank 0 alone, the others waiting; then they take its state."""
    with distributed.main_alone(threads):
        if distributed.is_main():
            work()
    _share_state(task)


def _share_state(task: Task) -> None:
    """Under torchrun, rank 0's task state on the other ranks."""
    if distributed.world_size() > 1:
        state = distributed.broadcast(task.state() if distributed.is_main() else None)
        if not distributed.is_main():
            task.load_state(state)


def epochs_without_improvement(history: list[dict], metrics: tuple[str, ...] = ("per", "loss")) -> int:
    """Epochs since the last one in which a dev figure of `metrics` was below its value in every earlier epoch."""
    last = 0
    for metric in metrics:
        best = math.inf
        for record in history:
            if record[f"valid_{metric}"] < best:
                best = record[f"valid_{metric}"]
                last = max(last, record["epoch"])
    return history[-1]["epoch"] - last if history else 0


def resume(
    exp_dir: Path, model, optimizer, scheduler, task: Task, epochs: int, threads: int = 1
) -> tuple[int, dict, list[dict]]:
    """Load the newest epoch checkpoint into model, optimizer, scheduler, RNGs and task, or start the task afresh
    (on rank 0, the others taking its state). Returns (the first epoch to run, the best epoch so far, the history
    so far)."""
    epoch, path, checkpoint = _newest_readable_checkpoint(exp_dir)
    if checkpoint is None:
        _main_then_share(task, lambda: task.start(model), threads)
        return 1, {"per": math.inf, "epoch": 0}, []
    if distributed.is_main():  # a kill between an epoch's checkpoint and its copies may have left older ones
        restore_best_copies(exp_dir, checkpoint["best"]["epoch"], best_alignment_epoch(checkpoint["history"]))
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(_own_rng_state(checkpoint["rng"], path))
    task.load_state(checkpoint["task"])
    best = checkpoint["best"]
    log.info("resuming from %s: epoch %d of %d done, best dev PER %.2f", path, epoch, epochs, best["per"])
    return epoch + 1, best, checkpoint["history"]


def _newest_readable_checkpoint(exp_dir: Path) -> tuple[int, Path | None, dict | None]:
    """(epoch, path, entries) of the newest epoch checkpoint that loads; (0, None, None) where there is none. One
    that does not load (truncated by a full disk, corrupt) is named, moved aside to <name>.corrupt by rank 0, and
    the one before it is tried."""
    for epoch, path in reversed(epoch_checkpoints(exp_dir)):
        try:
            return epoch, path, load_checkpoint(path)
        except RecipeError as err:
            if distributed.is_main():
                path.replace(path.with_name(path.name + ".corrupt"))
            log.warning("%s: moved aside to %s.corrupt; resuming from the checkpoint before it", err, path.name)
    return 0, None, None


def _own_rng_state(saved, path: Path) -> dict:
    """This rank's random state from a checkpoint: a dict from one process, a list (one per rank) from several."""
    if isinstance(saved, dict):
        saved = [saved]
    if len(saved) != distributed.world_size():
        log.warning(
            "%s was written by %d processes, this run has %d: the random states of the other ranks are drawn anew",
            *(path, len(saved), distributed.world_size()),
        )
    return saved[distributed.rank() % len(saved)]


def train_one_epoch(
    model,
    task: Task,
    train_set: list[Example],
    optimizer,
    tcfg: DictConfig,
    epoch: int,
    augment=None,
    parameters=None,
    curves: "Curves | None" = None,
) -> dict:
    """One pass over the task's training examples in shuffled length-bucketed batches (train.batch_frames,
    train.max_batch_utts; under torchrun this rank's share of them), each utterance's features mapped by `augment`
    where given, clipping the gradient norm of `parameters` (default: the model's) to train.grad_clip, the batches'
    loss to `curves`. Returns the epoch's training figures (over all ranks)."""
    parameters = list(model.parameters()) if parameters is None else parameters
    outside_model = [p for p in parameters if all(p is not q for q in model.parameters())]
    device = model_device(model)
    start = time.perf_counter()
    model.train()
    examples = task.train_examples(train_set)
    batches = make_batches([e.feats.shape[0] for e in examples], tcfg.batch_frames, tcfg.max_batch_utts, random)
    total_loss = total_weight = frames = 0.0
    grad_norms = []
    mine = distributed.shard(batches)
    for batch in tqdm(mine, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not distributed.is_main()):
        batch_examples = [examples[i] for i in batch]
        feats, lengths = collate(batch_examples, augment)
        loss, weight = task.loss(model, feats.to(device), lengths.to(device), batch_examples)
        optimizer.zero_grad()
        distributed.global_mean(loss, weight).backward()
        distributed.average_gradients(outside_model)
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(parameters, tcfg.grad_clip)))
        optimizer.step()
        batch_loss = loss.item()
        if curves is not None:
            curves.batch(batch_loss)
        total_loss += batch_loss * weight
        total_weight += weight
        frames += int(lengths.sum())
    total_loss, total_weight, frames = distributed.all_sum([total_loss, total_weight, frames])
    return {
        "epoch": epoch,
        "train_loss": total_loss / max(total_weight, 1),
        "grad_norm": sum(grad_norms) / max(len(grad_norms), 1),
        "frames_per_second": frames / (time.perf_counter() - start),
        "batches": len(mine),
    }


def validate(model, task: Task) -> dict:
    model.eval()
    with torch.no_grad():
        return task.validate(model)


class Curves:
    """The training's TensorBoard scalars (rank 0's; `writer` None on the others), in numbered groups so that the
    Scalars page, which orders groups by name, opens on the training curves: 1_loss (the training loss of each
    epoch and the dev loss, named by the criterion, per frame or, for CTC, per utterance; every `every` batches, a
    batch's, in the run tensorboard/batches, whose steps are batches: a resumed run purges its own events from the
    epoch it resumes at, by epoch in one and by batch in the other), 2_per_percent (dev PER, as validation decodes),
    3_training (learning rate, gradient norm, frames per second, the best epoch so far). The Viterbi task adds
    4_realign, 5_align_accuracy, 6_transitions."""

    VALID = {  # validation's figures -> their tags ({criterion} filled in)
        "loss": "1_loss/dev_{criterion}",
        "per": "2_per_percent/dev",
        "argmax_per": "2_per_percent/dev_frame_argmax",
        "frame_accuracy": "3_training/dev_frame_accuracy_percent",
        "alignment_within_20ms": "5_align_accuracy/dev_within_20ms_percent_each_epoch",
        "alignment_error_ms": "5_align_accuracy/dev_mean_abs_error_ms_each_epoch",
    }

    def __init__(self, writer: SummaryWriter | None, exp_dir: Path, criterion: str, every: int, batches_done: int):
        self.writer, self.criterion, self.every, self.batches = writer, criterion, every, batches_done
        self.batch_writer = None
        if writer is not None:
            self.batch_writer = SummaryWriter(str(exp_dir / "tensorboard" / "batches"), purge_step=batches_done + 1)

    def batch(self, loss: float) -> None:
        self.batches += 1
        if self.batch_writer is not None and self.batches % self.every == 0:
            self.batch_writer.add_scalar(f"1_loss/train_{self.criterion}_by_batch", loss, self.batches)

    def close(self) -> None:
        if self.batch_writer is not None:
            self.batch_writer.close()

    def epoch(self, record: dict, valid: dict, best: dict, epoch: int) -> None:
        self.writer.add_scalar(f"1_loss/train_{self.criterion}", record["train_loss"], epoch)
        for key, value in valid.items():
            tag = self.VALID.get(key, "3_training/dev_" + key).format(criterion=self.criterion)
            self.writer.add_scalar(tag, value, epoch)
        self.writer.add_scalar("3_training/lr", record["lr"], epoch)
        self.writer.add_scalar("3_training/grad_norm", record["grad_norm"], epoch)
        self.writer.add_scalar("3_training/frames_per_second", record["frames_per_second"], epoch)
        self.writer.add_scalar("3_training/best_epoch", best["epoch"], epoch)


def _as_text(config) -> str:
    """A config as TensorBoard's text plugin shows it: YAML as a code block (markdown, indented)."""
    if config is None:
        return "(no config)"
    return "".join(f"    {line}\n" for line in OmegaConf.to_yaml(config).splitlines())
