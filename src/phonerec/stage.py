"""Idempotent stages: a `.done.<name>` marker, written last, holds the digest of the settings and
inputs a stage read. A stage whose marker matches is skipped; a stale or missing one means redo."""

import logging
from pathlib import Path

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


def mark_done(out_dir: Path, name: str, digest: str) -> None:
    marker = _marker(out_dir, name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(digest + "\n")
    tmp.replace(marker)
