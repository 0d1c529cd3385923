"""The training loop that Viterbi and CTC training share: length-bucketed batches, Adam, ReduceLROnPlateau
on dev PER, gradient clipping, validation every epoch, TensorBoard, and atomic checkpoints that resume.

A task (phonerec.training.viterbi_ce.ViterbiTask, phonerec.training.ctc.CTCTask) supplies what differs: the loss of a batch,
validation, and work at the end of an epoch (re-alignment). Checkpoints `checkpoints/epoch-<N>.pt` hold the
model, optimizer, scheduler, task state, RNG states and config; `best.pt` is the best epoch by dev PER.
"""

import logging
import math
import random
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from phonerec.data.dataset import Example, collate, make_batches
from phonerec.model.blstm import BLSTMAcousticModel
from phonerec.pipeline.files import atomic_path, copy_atomic

log = logging.getLogger(__name__)


def save_atomic(payload: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def epoch_checkpoints(exp_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in (exp_dir / "checkpoints").glob("epoch-*.pt"):
        number = path.stem.split("-")[1]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def load_model(path: Path) -> tuple[BLSTMAcousticModel, dict]:
    """A model from a checkpoint, with the checkpoint's other entries (config, task state, ...)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model = BLSTMAcousticModel(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint


def _rng_state() -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])


def train(
    exp_dir: Path,
    model: BLSTMAcousticModel,
    model_args: dict,
    kind: str,
    task,
    train_set: list[Example],
    scfg: DictConfig,
    tcfg: DictConfig,
    cfg: DictConfig,
) -> dict:
    """Train for scfg.epochs epochs, resuming from the newest checkpoint; returns a summary."""
    optimizer = torch.optim.Adam(model.parameters(), lr=scfg.lr, weight_decay=scfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=scfg.lr_decay, patience=scfg.lr_patience
    )
    random.seed(tcfg.seed)
    torch.manual_seed(tcfg.seed)
    history: list[dict] = []
    start_epoch, best = 1, {"per": math.inf, "epoch": 0}
    found = epoch_checkpoints(exp_dir)
    if found:
        epoch, path = found[-1]
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        _set_rng_state(checkpoint["rng"])
        task.load_state(checkpoint["task"])
        best, history = checkpoint["best"], checkpoint["history"]
        start_epoch = epoch + 1
        log.info("resuming from %s: epoch %d of %d done, best dev PER %.2f", path, epoch, scfg.epochs, best["per"])
    else:
        task.start(model)

    # purge_step drops events a killed run logged past its last checkpoint.
    writer = SummaryWriter(str(exp_dir / "tensorboard"), purge_step=start_epoch)
    for epoch in range(start_epoch, scfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        examples = task.train_examples(train_set)
        batches = make_batches([e.feats.shape[0] for e in examples], tcfg.batch_frames, tcfg.max_batch_utts, random)
        total_loss = total_weight = frames = 0.0
        grad_norms = []
        for batch in tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False):
            batch_examples = [examples[i] for i in batch]
            feats, lengths = collate(batch_examples)
            loss, weight = task.loss(model, feats, lengths, batch_examples)
            optimizer.zero_grad()
            loss.backward()
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)))
            optimizer.step()
            total_loss += loss.item() * weight
            total_weight += weight
            frames += int(lengths.sum())
        train_seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            valid = task.validate(model)
        scheduler.step(valid[scfg.lr_metric])
        lr = optimizer.param_groups[0]["lr"]
        record = {
            "epoch": epoch,
            "train_loss": total_loss / max(total_weight, 1),
            "grad_norm": sum(grad_norms) / max(len(grad_norms), 1),
            "lr": lr,
            "frames_per_second": frames / train_seconds,
            **{f"valid_{k}": v for k, v in valid.items()},
        }
        writer.add_scalar("train/loss", record["train_loss"], epoch)
        writer.add_scalar("train/grad_norm", record["grad_norm"], epoch)
        writer.add_scalar("train/frames_per_second", record["frames_per_second"], epoch)
        writer.add_scalar("lr", lr, epoch)
        for key, value in valid.items():
            writer.add_scalar(f"valid/{key}", value, epoch)
        with torch.no_grad():
            task.end_of_epoch(model, epoch, writer)
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        if valid["per"] < best["per"]:
            best = {"per": valid["per"], "epoch": epoch}
        checkpoint = {
            "epoch": epoch,
            "model": model.state_dict(),
            "model_args": model_args,
            "kind": kind,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "task": task.state(),
            "best": best,
            "history": history,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        path = exp_dir / "checkpoints" / f"epoch-{epoch}.pt"
        save_atomic(checkpoint, path)
        if best["epoch"] == epoch:
            copy_atomic(path, exp_dir / "best.pt")
        for old_epoch, old_path in epoch_checkpoints(exp_dir)[: -tcfg.keep_checkpoints]:
            if old_epoch != best["epoch"]:
                old_path.unlink()
        log.info(
            "epoch %d: train loss %.4f, dev loss %.4f, dev PER %.2f%% (best %.2f%% at %d), lr %.2e, "
            "%.0f frames/s, %.1f s",
            epoch, record["train_loss"], valid["loss"], valid["per"], best["per"], best["epoch"], lr,
            record["frames_per_second"], record["seconds"],
        )  # fmt: skip
    writer.close()
    last = exp_dir / "checkpoints" / f"epoch-{scfg.epochs}.pt"
    copy_atomic(last, exp_dir / "last.pt")
    return {"best": best, "history": history}
