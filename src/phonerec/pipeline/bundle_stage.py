"""Stage 6: a trained model's bundle, <exp>/<model>/bundle, holding everything needed to apply it outside the
recipe (phonerec.inference.load_model reads it):

model.pt        the decode checkpoint (decode.checkpoint) without its optimizer and random states: weights, model
                arguments, kind, epoch, and the task state (a Viterbi model's state priors and transition
                probabilities); loads with torch.load(weights_only=True)
align_model.pt  a Viterbi model's alignment checkpoint where it is another epoch (decode.align_checkpoint:
                best_alignment.pt, the epoch that aligned dev closest to its hand labels)
lang/           the lang dir: phones, HMM states (states.txt, the Viterbi model's output order), lexicon, words
lm/             the phone and word LMs the decoders read
phone_map.tsv   the corpus's phone labels folded to the model's (score.phone_map: TIMIT's 61 to its 48), where
                the recipe has one: steps/align.py --phones takes the corpus's labels
config.yaml     the settings that applying it reads: features (extraction as stage 1 made them, CMVN and deltas
                as training loaded them), corpus.sample_rate and max_utterance_seconds, hmm (topology, optional
                silence), decode (the decoders' settings), score (the scoring fold)
decoders.json   each decoder of decode.decoders for this model: its values chosen on dev and its dev and test
                figures (PER or WER), and the default phone and word decoders (lowest dev PER / WER)
bundle.json     what it is: kind, model arguments, epoch, the checkpoints it came from, sample rate, frame shift,
                the floor of its alignments' gaps (dev's 1st percentile: below it a transcript is suspect), git
                hash, date, and the sha256 of every other file (written last, when they are whole)

The loader checks them all (phonerec.inference): a bundle is data, never code or environment. A bundle made before
bundle.json held the checksums is made again by this stage, whatever its digest.
"""

import datetime
import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from phonerec.base.config import repo_path, save_config
from phonerec.base.errors import RecipeError
from phonerec.base.files import copy_atomic, file_digest, write_json_atomic
from phonerec.data.data_dir import read_table
from phonerec.data.lang import LANG_FILES, OPTIONAL_LANG_FILES
from phonerec.decoding.decoders import decoder_class, decoder_names
from phonerec.hmm.timing import frame_shift
from phonerec.inference import PHONE_MAP_FILE, bundle_files, bundle_intact
from phonerec.pipeline.markers import StageRun, read_digest
from phonerec.pipeline.recipe import find_alignment_checkpoint, find_checkpoint, lang_dir_digest
from phonerec.pipeline.results import git_hash
from phonerec.pipeline.stage_keys import BUNDLE, FEATURES_AT_LOAD
from phonerec.training.checkpoints import load_checkpoint, save_atomic

log = logging.getLogger(__name__)
# What of a training checkpoint applying the model needs (not the optimizer, scheduler, RNG states, history).
KEPT = ("epoch", "kind", "model", "model_args", "task", "config")
AT_LOAD = [key.removeprefix("features.") for key in FEATURES_AT_LOAD]  # as training read them (its checkpoint)
FLOOR_PERCENTILE = 1  # of dev's alignment scores: an alignment scoring below it is warned about


def bundle_stage(cfg: DictConfig, feat_dir: Path, lang_dir: Path, lm_dir: Path, model_dir: Path, bundle_dir: Path):
    """model_dir (trained, decoded and scored by stages 2-5) -> bundle_dir. feat_dir is the feature dir the
    model was trained on: its config.yaml says how stage 1 extracted the features."""
    cfg = BUNDLE.view(cfg)
    checkpoint_path = find_checkpoint(cfg, model_dir)
    checkpoint = load_checkpoint(checkpoint_path)
    kind = checkpoint["kind"]
    align_path = find_alignment_checkpoint(cfg, model_dir) if kind == "viterbi" else checkpoint_path
    decoders = _decoder_figures(cfg, model_dir, kind)
    features = _extraction_settings(cfg, feat_dir, checkpoint)
    inputs = (
        file_digest(checkpoint_path),
        file_digest(align_path),
        lang_dir_digest(lang_dir),
        read_digest(lm_dir, "lm"),
        decoders,
        features,
    )
    stage = StageRun(bundle_dir, "bundle", BUNDLE.digest(cfg, *inputs))
    if stage.done and bundle_intact(bundle_dir):
        return
    with stage:
        _save_for_use(checkpoint, bundle_dir / "model.pt")
        (bundle_dir / "align_model.pt").unlink(missing_ok=True)
        if inputs[1] != inputs[0]:  # another epoch than the decode checkpoint's
            align_checkpoint = load_checkpoint(align_path)
            _save_for_use(align_checkpoint, bundle_dir / "align_model.pt")
            align_epoch = align_checkpoint["epoch"]
        else:
            align_epoch = checkpoint["epoch"]
        for name in (*LANG_FILES, *OPTIONAL_LANG_FILES):
            if (lang_dir / name).is_file():
                copy_atomic(lang_dir / name, bundle_dir / "lang" / name)
            else:  # an optional file of an earlier bundle's lang dir would weigh this one's alignments
                (bundle_dir / "lang" / name).unlink(missing_ok=True)
        for arpa in sorted(lm_dir.glob("*.arpa")):
            copy_atomic(arpa, bundle_dir / "lm" / arpa.name)
        (bundle_dir / PHONE_MAP_FILE).unlink(missing_ok=True)
        if cfg.score.phone_map:  # to fold the corpus's own labels (TIMIT's 61) as training did
            copy_atomic(repo_path(cfg.score.phone_map), bundle_dir / PHONE_MAP_FILE)
        settings = OmegaConf.to_container(cfg, resolve=True)
        settings["features"] = features
        settings.pop("train", None)  # the device is the user's choice when applying it
        save_config(OmegaConf.create(settings), bundle_dir / "config.yaml")
        write_json_atomic(bundle_dir / "decoders.json", decoders)
        write_json_atomic(
            bundle_dir / "bundle.json",
            {
                "kind": kind,
                "model_args": checkpoint["model_args"],
                "epoch": checkpoint["epoch"],
                "checkpoint": str(checkpoint_path.resolve()),
                "align_checkpoint": str(align_path.resolve()),
                "align_epoch": align_epoch,
                "sample_rate": cfg.corpus.sample_rate,
                "frame_shift_seconds": frame_shift(cfg, checkpoint["model_args"].get("subsample", 1)),
                "alignment_score_floor": _alignment_score_floor(cfg, model_dir),
                "git": git_hash(),
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "sha256": {name: file_digest(bundle_dir / name) for name in bundle_files(bundle_dir)},
            },
        )
        log.info(
            "%s: %s model (epoch %d), decoders %s; default phone decoder %s, word decoder %s",
            *(bundle_dir, kind, checkpoint["epoch"], ", ".join(decoders["decoders"])),
            *(decoders["default_phones"], decoders["default_words"]),
        )


def _alignment_score_floor(cfg: DictConfig, model_dir: Path) -> dict | None:
    """The gap below which an alignment is suspect (a wrong transcript): the 1st percentile of the gaps to the free
    path of dev's own transcripts force-aligned by stage 4 (decode_<dev>_greedy/alignment_scores.txt); None
    where stage 4 wrote none (a decode made before it did, or no greedy decoder)."""
    path = model_dir / f"decode_{cfg.decode.splits[0]}_greedy" / "alignment_scores.txt"
    if not path.is_file():
        return None
    scores = [float(v.split()[1]) for v in read_table(path).values()]  # the gaps
    if not scores:
        return None
    value = float(np.percentile(scores, FLOOR_PERCENTILE))
    return {
        "value": round(value, 4),
        "percentile": FLOOR_PERCENTILE,
        "of": f"{path.parent.name}: {len(scores)} utterances",
    }


def _save_for_use(checkpoint: dict, path: Path) -> None:
    save_atomic({key: checkpoint[key] for key in KEPT if key in checkpoint}, path)


def _extraction_settings(cfg: DictConfig, feat_dir: Path, checkpoint: dict) -> dict:
    """The features as the model saw them: stage 1's extraction settings (the training feature dir's
    config.yaml) and training's CMVN and deltas (the checkpoint's). A config whose features differ from those
    is refused: the bundle would describe another front end than the model was trained on."""
    extracted = OmegaConf.load(feat_dir / "config.yaml")
    features = OmegaConf.to_container(extracted.features, resolve=True)
    trained = checkpoint["config"]["features"]
    features.update({key: trained[key] for key in AT_LOAD})
    current = OmegaConf.to_container(cfg.features, resolve=True)
    differ = sorted(k for k in features if k != "name" and current.get(k) != features[k])
    if differ:
        raise RecipeError(
            f"{feat_dir}/config.yaml and the checkpoint's features differ from this config's in {', '.join(differ)}: "
            "give the settings the model was trained with"
        )
    if extracted.corpus.sample_rate != cfg.corpus.sample_rate:
        raise RecipeError(f"{feat_dir} was extracted at {extracted.corpus.sample_rate} Hz, corpus.sample_rate differs")
    return features


def _decoder_figures(cfg: DictConfig, model_dir: Path, kind: str) -> dict:
    """Each decoder of decode.decoders that decoded this model: its title, metric, the values chosen on dev (the
    first of decode.splits) and its figure on every split scored by stage 5; the defaults are the phone
    decoder of the lowest dev PER and the word decoder of the lowest dev WER (None where there is none)."""
    tune_split = cfg.decode.splits[0]
    found = {}
    for name in cfg.decode.decoders:
        if name not in decoder_names(kind):
            continue
        decoder = decoder_class(kind, name)
        figures = {}
        for split in cfg.decode.splits:
            scored = model_dir / f"decode_{split}_{name}" / f"{decoder.metric}.json"
            if not scored.is_file():
                raise RecipeError(f"{scored}: missing; run stages 4 and 5 before the bundle (stage 6)")
            result = json.loads(scored.read_text())
            figures[split] = result["total"]["per"] if decoder.metric == "per" else result["wer"]
        chosen = json.loads((model_dir / f"decode_{tune_split}_{name}" / "decoder.json").read_text())
        chosen.pop("decoder")
        found[name] = {"title": decoder.title, "metric": decoder.metric, "chosen": chosen, decoder.metric: figures}

    def best(metric: str) -> str | None:
        ranked = [(d[metric][tune_split], n) for n, d in found.items() if d["metric"] == metric]
        return min(ranked)[1] if ranked else None

    if best("per") is None:
        raise RecipeError(f"{model_dir}: no phone decoder in decode.decoders ({list(cfg.decode.decoders)})")
    return {"tuned_on": tune_split, "default_phones": best("per"), "default_words": best("wer"), "decoders": found}
