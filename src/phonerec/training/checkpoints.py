"""Checkpoints of a training run: `<exp-dir>/checkpoints/epoch-<N>.pt` per epoch (model, optimizer, scheduler,
task state, RNG states, progress, config), `best.pt` (the best epoch by dev PER), `last.pt`, and for a Viterbi
model whose dev set has hand-labelled boundaries (TIMIT) `best_alignment.pt` (the epoch whose own forced
alignment of dev came closest to them: a model aligns best well before it recognises best), each written
atomically; and loading a trained model from one."""

import logging
import pickle
import random
import re
from pathlib import Path

import torch

from phonerec.base.errors import RecipeError
from phonerec.base.files import atomic_path, copy_atomic, file_digest
from phonerec.model.recurrent import RecurrentAcousticModel

log = logging.getLogger(__name__)


def epoch_checkpoints(exp_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every epoch checkpoint, oldest first."""
    found = []
    for path in (exp_dir / "checkpoints").glob("epoch-*.pt"):
        number = path.stem.split("-")[1]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def best_alignment_epoch(history: list[dict]) -> int | None:
    """The epoch whose model aligned dev best against its hand labels (the task's validation figures
    alignment_within_20ms and alignment_error_ms): the most boundaries within 20 ms, then the lower mean error,
    then the earlier epoch. None where no epoch has the figures."""
    scored = [
        (-r["valid_alignment_within_20ms"], r["valid_alignment_error_ms"], r["epoch"])
        for r in history
        if r.get("valid_alignment_within_20ms") is not None
    ]
    return min(scored)[2] if scored else None


def save_atomic(data: dict, path: Path) -> None:
    """torch.save, atomically; through a file object, so that a full disk's OSError stays in the context of torch's
    error and atomic_path names the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(data, f)


def save_checkpoint(
    exp_dir: Path, checkpoint: dict, best_epoch: int, keep: int, alignment_epoch: int | None = None
) -> Path:
    """Write checkpoints/epoch-<N>.pt (and best.pt when N is the best epoch, best_alignment.pt when it is
    alignment_epoch); keep the newest `keep` epoch checkpoints and the best one."""
    epoch = checkpoint["epoch"]
    path = exp_dir / "checkpoints" / f"epoch-{epoch}.pt"
    save_atomic(checkpoint, path)
    if best_epoch == epoch:
        copy_atomic(path, exp_dir / "best.pt")
    if alignment_epoch == epoch:
        copy_atomic(path, exp_dir / "best_alignment.pt")
    for old_epoch, old_path in epoch_checkpoints(exp_dir)[:-keep]:
        if old_epoch != best_epoch:
            old_path.unlink()
    return path


def restore_best_copies(exp_dir: Path, best_epoch: int, alignment_epoch: int | None) -> None:
    """Make best.pt (and best_alignment.pt) the copy of the epoch the newest checkpoint records as best again,
    where a kill between writing an epoch's checkpoint and copying it left an older epoch's there."""
    for name, epoch in (("best.pt", best_epoch), ("best_alignment.pt", alignment_epoch)):
        source, copy = exp_dir / "checkpoints" / f"epoch-{epoch}.pt", exp_dir / name
        if not epoch or not source.is_file():
            continue
        if not copy.is_file() or file_digest(copy) != file_digest(source):
            log.warning("%s is not epoch %d's checkpoint, the best training recorded: copied anew", copy, epoch)
            copy_atomic(source, copy)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's entries, on the CPU. Loaded with weights_only=True: tensors, numbers, strings and containers
    only, so a crafted file cannot run code when it is unpickled. A file that holds other objects, or is no
    readable checkpoint (truncated, corrupt), is a RecipeError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))  # the refused class or function, as torch names it
        what = f"({found.group(1)}) " if found else ""
        raise RecipeError(
            f"{path}: refused: it holds a pickled Python object {what}besides tensors and plain data, and "
            "unpickling it could run any code; phonerec's checkpoints hold none"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise RecipeError(f"{path}: not a readable checkpoint (truncated or corrupt?): {err}") from None


def load_model(path: Path) -> tuple[RecurrentAcousticModel, dict]:
    """A model from a checkpoint, in eval mode, with the checkpoint's other entries (config, task state, ...)."""
    checkpoint = load_checkpoint(path)
    model = RecurrentAcousticModel(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint


def rng_state() -> dict:
    """The random states a resumed run needs: Python's, torch's CPU one, and the current GPU's where CUDA is in use
    (dropout on a GPU draws from it)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(state["cuda"])
