"""Training in several processes, one per GPU (or a share of the CPU's cores), started by torchrun
(`./run.sh --ngpu N`): torch.distributed and DistributedDataParallel, as icefall and ESPnet train.

- Each process (rank) shuffles the same length-bucketed batches with the same seed and takes every W-th one from
  its rank on (`shard`), the list first padded by repeating its first batches to a multiple of W, as torch's
  DistributedSampler pads: every rank runs the same number of steps.
- DDP averages the ranks' gradients, so each rank scales its batch's mean loss to its share of the step's global
  frame (or utterance) count, times W (`global_mean`): the gradient is the one a single process computes on the
  union of the ranks' batches. Parameters outside the model (the learned HMM transitions) are averaged the same
  way (`average_gradients`).
- Re-alignment is split: each rank aligns every W-th utterance and rank 0 gathers them (`gather`). On rank 0
  alone, even with the other ranks' CPU threads, it took 1.19x as long on this 2-core machine
  (benchmarks/RESULTS.md, the training loop).
- Rank 0 alone validates (with all the threads, `main_alone`), finishes each re-alignment round, writes
  checkpoints, TensorBoard and the stage's files, and takes the run's lock (`exclusive`); the others wait and
  then take its results (the validation figures, the task's state) by `broadcast`.
- The ranks' random states differ (seed + rank: other dropout masks and SpecAugment draws per rank) and each
  checkpoint keeps all of them, so a resumed run continues as an uninterrupted one would.

Without torchrun (WORLD_SIZE unset or 1) every function here is what one process does alone.
"""

import contextlib
import ctypes
import datetime
import logging
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from phonerec.base.errors import RecipeError
from phonerec.base.ownership import exclusive as exclusive_dir
from phonerec.model.device import resolve_device

log = logging.getLogger(__name__)
# A rank waits this long for another (rank 0 validating and re-aligning a large corpus on the CPU) before failing.
WAIT = datetime.timedelta(hours=6)


def world_size() -> int:
    """The number of training processes torchrun started (1 without torchrun)."""
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


@contextlib.contextmanager
def process_group(device: str):
    """Join torchrun's process group for the block (NCCL for train.device on CUDA, gloo on the CPU); nothing
    without torchrun."""
    if world_size() == 1 or dist.is_initialized():
        yield
        return
    _die_with_the_launcher()
    backend = "nccl" if resolve_device(device, local_rank(), world_size()).type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=WAIT)
    log.info("process %d of %d (%s backend)", rank(), world_size(), backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _die_with_the_launcher() -> None:
    """torchrun starts each process in a session of its own: a SIGKILL of torchrun, or of run.sh's process group,
    would leave them training and holding the run's lock. On Linux each asks to be killed when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before the request
        os._exit(1)


def threads_per_rank(total: int) -> int:
    """Each rank's share of train.num_threads CPU threads: of its machine's (torchrun's LOCAL_WORLD_SIZE, the
    ranks on this machine; run.sh --nnodes puts --ngpu ranks on each)."""
    return max(1, total // int(os.environ.get("LOCAL_WORLD_SIZE", world_size())))


@contextlib.contextmanager
def main_alone(threads: int):
    """Work that rank 0 does while the others wait: rank 0 takes all `threads` CPU threads for it."""
    if world_size() == 1:
        yield
        return
    own = torch.get_num_threads()
    if is_main():
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(own)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast(value=None):
    """Rank 0's `value` (any picklable object), on every rank."""
    if world_size() == 1:
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value) -> list | None:
    """Every rank's `value`, in rank order, on rank 0 (None on the others)."""
    if world_size() == 1:
        return [value]
    found = [None] * world_size() if is_main() else None
    dist.gather_object(value, found, dst=0)
    return found


def all_sum(values: list[float]) -> list[float]:
    """The sums over all ranks of each of `values`."""
    if world_size() == 1:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def global_mean(loss: torch.Tensor, weight: float) -> torch.Tensor:
    """A rank's batch loss (its mean over `weight` frames or utterances) scaled so that DDP's average of the ranks'
    gradients is the gradient of the mean over the step's frames or utterances of all ranks."""
    if world_size() == 1:
        return loss
    (total,) = all_sum([weight])
    return loss * (weight * world_size() / max(total, 1.0))


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Average the gradients of parameters that DDP does not hold (those a Task trains beside the model)."""
    if world_size() == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def shard(batches: list) -> list:
    """This rank's share of the batches: every W-th from its rank on, after padding the list by repeating its
    first batches to a multiple of W."""
    world = world_size()
    if world == 1 or not batches:
        return batches
    padded = list(batches)
    while len(padded) % world:
        padded.append(batches[(len(padded) - len(batches)) % len(batches)])
    return padded[rank() :: world]


@contextlib.contextmanager
def exclusive(out_dir: Path):
    """The run's lock on out_dir (phonerec.base.ownership.exclusive), taken once, by rank 0: a second run is
    refused on every rank before any writes."""
    if world_size() == 1:
        with exclusive_dir(out_dir):
            yield
        return
    with contextlib.ExitStack() as stack:
        refused = None
        if is_main():
            try:
                stack.enter_context(exclusive_dir(out_dir))
            except RecipeError as err:
                refused = str(err)
        refused = broadcast(refused)
        if refused is not None:
            raise RecipeError(refused)
        yield
