"""Idempotent stages: a `.done.<name>` marker, written last, holds the digest of the settings and
inputs a stage read. A stage whose marker matches is skipped; a stale or missing one means redo."""

import logging
import time
from pathlib import Path

from phonerec.base.errors import RecipeError
from phonerec.base.files import write_text_atomic

log = logging.getLogger(__name__)


def _marker(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f".done.{name}"


def is_done(out_dir: Path, name: str, digest: str) -> bool:
    marker = _marker(out_dir, name)
    if marker.is_file() and marker.read_text().strip() == digest:
        log.info("%s: %s already done with these settings (%s) - skipping", out_dir, name, digest)
        return True
    return False


def clear_done(out_dir: Path, name: str) -> None:
    """Called before a stage (re)writes its outputs, so a half-done stage never looks done."""
    _marker(out_dir, name).unlink(missing_ok=True)


def read_digest(out_dir: Path, name: str) -> str:
    """The digest a finished stage recorded: what a later stage hashes to notice that its input changed."""
    marker = _marker(out_dir, name)
    if not marker.is_file():
        raise RecipeError(f"{out_dir}: stage '{name}' has not finished there; run it first")
    return marker.read_text().strip()


def mark_done(out_dir: Path, name: str, digest: str, seconds: float | None = None) -> None:
    """Written last. `seconds`, the wall time of the work, goes to <out_dir>/<name>.seconds for the results."""
    if seconds is not None:
        write_text_atomic(Path(out_dir, f"{name}.seconds"), f"{seconds:.1f}\n")
    write_text_atomic(_marker(out_dir, name), digest + "\n")


class StageRun:
    """The frame every stage shares. `done`: the marker holds this digest, so the stage is skipped. Otherwise
    `with` the run: the marker is cleared first (a half-done stage never looks done) and written when the block
    ends without error, with the work's wall time (or `seconds`, when the stage sets it, as training does).

        stage = StageRun(out_dir, "decode", digest)
        if stage.done:
            return
        with stage:
            ...

    `writes` False: a run that reads the marker but leaves it to another process (a training rank other than 0).
    """

    def __init__(self, out_dir: Path, name: str, digest: str, writes: bool = True):
        self.out_dir, self.name, self.digest, self.writes = Path(out_dir), name, digest, writes
        self.seconds: float | None = None

    @property
    def done(self) -> bool:
        return is_done(self.out_dir, self.name, self.digest)

    def __enter__(self) -> "StageRun":
        if self.writes:
            clear_done(self.out_dir, self.name)
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None and self.writes:
            seconds = self.seconds if self.seconds is not None else time.perf_counter() - self._start
            mark_done(self.out_dir, self.name, self.digest, seconds=seconds)


def run_stage(out_dir: Path, name: str, digest: str, work) -> None:
    """`work()` in a StageRun, unless the stage is done with this digest."""
    stage = StageRun(out_dir, name, digest)
    if not stage.done:
        with stage:
            work()
