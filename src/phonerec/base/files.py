"""Atomic writes: every file the pipeline produces is written under a temporary name beside it and renamed over
it, so a killed run leaves the old file or the new one, never half of one."""

import contextlib
import errno
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from phonerec.base.errors import RecipeError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed to `path` when the block ends, removed on error. A full
    disk is an error naming `path` (the old file, if any, is still there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_no_space(err):
            raise no_space_left(path) from err
        raise
    tmp.replace(path)


def is_no_space(err: BaseException | None) -> bool:
    """A full disk, as the error or the one it was raised while handling (torch.save's RuntimeError)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err = err.__cause__ or err.__context__
    return False


def no_space_left(path: str | Path) -> RecipeError:
    """The one message of a full disk: the path being written, and what to do."""
    return RecipeError(f"{path}: no space left on the device; free some space and rerun the same command to resume")


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_png_atomic(path: str | Path, figure, dpi: float | None = None) -> None:
    """A matplotlib figure as PNG."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)


def write_json_atomic(path: str | Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def copy_atomic(source: str | Path, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content (hashlib's algorithm names: sha256, md5, ...)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def contents_sha256(directory: str | Path, names) -> dict[str, str | None]:
    """The sha256 of each named file of a directory (None where it is absent): for a stage's digest to cover the
    content of the files it reads."""
    return {name: file_digest(Path(directory) / name) if (Path(directory) / name).is_file() else None for name in names}
