"""The corpora, each (downloaded or an existing copy) into Kaldi data dirs and the lang dir: a module per corpus with
`sources(cfg)` and `prepare(cfg, data_dir)`, which stage 0 (phonerec.pipeline.prepare_stage) runs."""

import os
from pathlib import Path

from omegaconf import DictConfig


def corpus_paths(cfg: DictConfig, download_folder: str) -> tuple[Path, Path]:
    """(where downloads of the corpus go, its root: corpus.root, or else the folder a download unpacks to)."""
    downloads = Path(cfg.paths.downloads).resolve() / cfg.corpus.name
    root = Path(cfg.corpus.root).resolve() if cfg.corpus.root is not None else downloads / download_folder
    return downloads, root


def walk_files(root: Path) -> list[Path]:
    """Every file below root, following symbolic links to folders (Kaldi users link corpora and speaker
    folders; Python 3.11's Path.rglob does not follow them), each real folder visited once, so that a link
    back up the tree ends the walk there instead of looping."""
    found, seen = [], set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.stat(folder)
        if (real.st_dev, real.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((real.st_dev, real.st_ino))
        found += [Path(folder) / name for name in files]
    return sorted(found)
