"""Stage 5: PER and WER of the decode dirs and their reports, then the recipe's RESULTS.md (pipeline.results)."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from phonerec.base.errors import RecipeError
from phonerec.base.files import write_json_atomic, write_text_atomic
from phonerec.data.data_dir import read_table
from phonerec.data.lang import ignored_in_scoring, read_lexicon
from phonerec.decoding.decoders import decoder_metric
from phonerec.pipeline.markers import read_digest
from phonerec.pipeline.results import write_result, write_results
from phonerec.pipeline.stage_keys import SCORE
from phonerec.scoring.error_rate import (
    closest_reference,
    score,
    score_table,
    scoring_fold,
    word_rates,
    write_score_report,
)
from phonerec.scoring.reports import refs_hyps, write_reports
from phonerec.scoring.sclite import find_sclite, run_sclite

log = logging.getLogger(__name__)


def score_stage(cfg: DictConfig, data_dir: Path, exp_dir: Path, command: str) -> None:
    """Score the decode dirs of every model and decoder of the config that exist (decode_<split>_<decoder>;
    not the runs moved aside to <model>.<digest>), by their decoder's metric; then write RESULTS.md."""
    cfg = SCORE.view(cfg)
    variants = cfg.hmm.pronunciations == "variants"
    for model in cfg.models:
        for name in cfg.decode.decoders:
            for split in cfg.decode.splits:
                decode_dir = exp_dir / model / f"decode_{split}_{name}"
                if not decode_dir.is_dir():
                    continue
                if decoder_metric(name) == "wer":
                    score_words(decode_dir, cfg.recipe_name)
                else:
                    words = word_pronunciations(data_dir, split) if variants else None
                    score_phones(cfg, decode_dir, data_dir / "lang", words)
    write_result(cfg, exp_dir)
    write_results(cfg, data_dir, exp_dir, Path(cfg.paths.results), command)


def word_pronunciations(data_dir: Path, split: str) -> dict[str, list[list[list[str]]]]:
    """Each utterance of the split's transcript (text.words) as every pronunciation of each word (the lang dir's
    lexicon), for PER against the closest pronunciations."""
    lexicon = read_lexicon(data_dir / "lang" / "lexicon.txt")
    where = f"{data_dir / split}/text.words"
    return {u: [lexicon.pronunciations(w, where) for w in t.split()] for u, t in read_table(where).items()}


def score_phones(cfg: DictConfig, decode_dir: Path, lang_dir: Path, words: dict | None = None) -> dict:
    """PER of a decode dir, reference and hypothesis folded by score.phone_map when set and score.ignore_phones
    (null: lang_dir's silence phones) removed from both: per.json (machine-readable), per.txt (per speaker), per.pra
    (each utterance's alignment with S/D/I marked, as sclite prints it), confusions.txt and confusion.png
    (also in the model's TensorBoard). With score.sclite (auto: when sctk is installed), NIST sclite scores
    the same prepared sequences into decode_dir/sclite/ and its PER is logged beside ours. With `words` (each
    utterance's words as their pronunciations: hmm.pronunciations=variants), also the PER against the closest
    pronunciation of each word (the reference of per.json keeps each word's first): per_closest.json."""
    refs, hyps, utt2spk = _read_decode(decode_dir)
    fold, ignore = scoring_fold(cfg), ignored_in_scoring(cfg, lang_dir)
    if words is not None:
        closest = {utt: closest_reference(hyps[utt], words[utt]) if utt in words else ref for utt, ref in refs.items()}
        total = score(closest, hyps, utt2spk, fold=fold, ignore=ignore)["total"]
        write_json_atomic(decode_dir / "per_closest.json", {"total": total})
        log.info("%s: PER %.2f%% against the closest pronunciation of each word", decode_dir, total["per"])
    result = score(refs, hyps, utt2spk, fold=fold, ignore=ignore)
    title = f"{decode_dir.parent.name}/{decode_dir.name}"
    write_score_report(result, decode_dir, title=title)
    writer = SummaryWriter(str(decode_dir.parent / "tensorboard"))
    write_reports(
        result,
        decode_dir,
        title,
        writer=writer,
        heading=_heading(cfg.recipe_name, decode_dir, "PER", result["total"]["per"]),
    )
    writer.close()
    total = result["total"]
    log.info(
        "%s: PER %.2f%% (%d sub, %d del, %d ins of %d)",
        decode_dir,
        total["per"],
        total["sub"],
        total["del"],
        total["ins"],
        total["n"],
    )
    sclite = find_sclite() if cfg.score.sclite in ("auto", True) else None
    if cfg.score.sclite is True and sclite is None:
        raise RecipeError("score.sclite=true, but no sclite: install Debian's sctk (apt-get install sctk)")
    if sclite is not None:
        scored = run_sclite(*refs_hyps(result), utt2spk, decode_dir / "sclite", sclite=sclite)
        keys = ("utts", "n", "corr", "sub", "del", "ins", "err", "per")
        write_json_atomic(decode_dir / "sclite.json", {k: scored[k] for k in keys})
        log.info(
            "%s: sclite PER %.2f%% (%d sub, %d del, %d ins of %d)",
            decode_dir,
            scored["per"],
            scored["sub"],
            scored["del"],
            scored["ins"],
            scored["n"],
        )
    return result


def score_words(decode_dir: Path, recipe: str = "") -> dict:
    """WER of a word decode dir: wer.json (WER and sentence error rate), wer.txt (per speaker), wer.pra (each
    utterance's alignment), confusions.txt and confusion.png (words; also in the model's TensorBoard)."""
    result = score(*_read_decode(decode_dir))
    rates = word_rates(result["total"])
    write_json_atomic(decode_dir / "wer.json", rates)
    title = f"{decode_dir.parent.name}/{decode_dir.name}"
    write_text_atomic(decode_dir / "wer.txt", score_table(result, title, metric="wer"))
    writer = SummaryWriter(str(decode_dir.parent / "tensorboard"))
    heading = _heading(recipe, decode_dir, "WER", rates["wer"])
    write_reports(result, decode_dir, title, writer=writer, metric="wer", heading=heading)
    writer.close()
    log.info(
        "%s: WER %.2f%%, SER %.2f%% (%d sub, %d del, %d ins of %d words)",
        decode_dir,
        rates["wer"],
        rates["ser"],
        rates["sub"],
        rates["del"],
        rates["ins"],
        rates["n"],
    )
    return rates


def _read_decode(decode_dir: Path) -> tuple[dict, dict, dict]:
    """The references, hypotheses and speakers of a finished decode dir."""
    read_digest(decode_dir, "decode")
    refs = {u: v.split() for u, v in read_table(decode_dir / "ref.txt").items()}
    hyps = {u: v.split() for u, v in read_table(decode_dir / "hyp.txt").items()}
    return refs, hyps, read_table(decode_dir / "utt2spk")


def _heading(recipe: str, decode_dir: Path, metric: str, value: float) -> str:
    """A confusion matrix's title: the recipe, model, set, decoder and its error rate."""
    decoder_file = decode_dir / "decoder.json"
    decoder = json.loads(decoder_file.read_text())["decoder"] if decoder_file.is_file() else decode_dir.name
    split = decode_dir.name.removeprefix("decode_").split("_")[0]
    where = f"{recipe}, " if recipe else ""
    return f"{where}{decode_dir.parent.name} model, {split} set, {decoder}: {metric} {value:.2f}%"
