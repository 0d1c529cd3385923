"""Stage 0 of each corpus: the corpus (downloaded or an existing copy) into Kaldi data dirs and the lang dir."""

from pathlib import Path

from omegaconf import DictConfig


def corpus_paths(cfg: DictConfig, download_folder: str) -> tuple[Path, Path]:
    """(where downloads of the corpus go, its root: corpus.root, or else the folder a download unpacks to)."""
    downloads = Path(cfg.paths.downloads).resolve() / cfg.corpus.name
    root = Path(cfg.corpus.root).resolve() if cfg.corpus.root is not None else downloads / download_folder
    return downloads, root
