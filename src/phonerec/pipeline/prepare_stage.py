"""Stage 0: a corpus into Kaldi data dirs and the lang dir, and, with train.speed_perturb, the speed-perturbed copy
of the training dir. Each corpus is a module of phonerec.data.corpora with two functions: `sources(cfg)`, what its
data dirs are made from besides the settings (the stage's digest covers it), and `prepare(cfg, data_dir)`, which
writes them; a new corpus is such a module and its line in CORPORA."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from phonerec.base.config import save_config
from phonerec.base.errors import RecipeError
from phonerec.base.files import contents_sha256, write_text_atomic
from phonerec.base.schema import corpus_kind
from phonerec.data.corpora import fsdd, kaldi, mfa, tidigits, timit
from phonerec.data.data_dir import validate_data_dir
from phonerec.data.speed_perturb import perturb_data_dir, reads
from phonerec.pipeline.markers import run_stage
from phonerec.pipeline.stage_keys import PREPARE, SPEED_PERTURB

log = logging.getLogger(__name__)

# local/<name>/prepare_data.py -> the corpus module it prepares.
CORPORA = {"fsdd": fsdd, "timit": timit, "tidigits": tidigits, "kaldi": kaldi, "mfa": mfa}


def prepare_stage(cfg: DictConfig, data_dir: Path, corpus: str) -> None:
    """The corpus `corpus` (a name in CORPORA) -> data_dir/{train,dev,test} (test where the corpus has one) and
    data_dir/lang, with the config that
    made them (data_dir/config.yaml); skipped when done with the same settings and sources."""
    module = CORPORA[corpus]
    cfg = PREPARE.view(cfg)

    def work() -> None:
        module.prepare(cfg, data_dir)
        save_config(cfg, data_dir / "config.yaml")

    run_stage(data_dir, "prepare", PREPARE.digest(cfg, *module.sources(cfg)), work)


def validate_corpus(cfg: DictConfig, report_dir: Path) -> bool:
    """Every check stage 0 runs on a corpus of the user's own (phonerec.data.corpora.kaldi.check_corpus), without
    writing data dirs: report_dir/validation.txt (the summary, each error and warning), oovs_found.txt and
    utterance_oovs.txt, and the same on the log. True when nothing would stop training."""
    kind = corpus_kind(cfg)
    if kind not in ("kaldi", "mfa"):
        raise RecipeError(f"corpus {cfg.corpus.name}: built in; validation is for corpora of your own (kaldi, mfa)")
    if kind == "mfa":  # its Kaldi form first, in report_dir/local
        cfg = mfa.write_kaldi_form(cfg, report_dir)
    check = kaldi.check_corpus(cfg, report_dir)
    lines = [f"corpus {cfg.corpus.name}: {check.summary()}"]
    lines += [f"ERROR: {error}" for error in check.errors] + [f"WARNING: {warning}" for warning in check.warnings]
    write_text_atomic(report_dir / "validation.txt", "\n".join(lines) + "\n")
    for error in check.errors:
        log.error("%s", error)
    for warning in check.warnings:
        log.warning("%s", warning)
    log.info("%s", lines[0])
    reports = [report_dir / "validation.txt", *check.report_files]
    log.info("reports: %s", ", ".join(str(p) for p in reports))
    return not check.errors


def speed_perturb_stage(cfg: DictConfig, data_dir: Path, out_dir: Path) -> None:
    """data_dir (a prepared training dir) -> out_dir: its utterances and a copy at each of train.speed_perturb."""
    cfg = SPEED_PERTURB.view(cfg)
    factors = list(cfg.train.speed_perturb)
    if not factors:  # their range is checked when the config is loaded (phonerec.base.schema)
        raise RecipeError("train.speed_perturb=[]: speed perturbation is off, no copy to make")
    validate_data_dir(data_dir)
    digest = SPEED_PERTURB.digest(cfg, contents_sha256(data_dir, reads(data_dir)))
    run_stage(out_dir, "speed_perturb", digest, lambda: perturb_data_dir(data_dir, out_dir, factors))
