"""Stage 4: the phone and word LMs, and decoding of a feature dir by one decoder (phonerec.decoding.decoders): a
tuned decoder tunes over its grid on the set it is given without a tuned dir (run.sh gives it the first split of
decode.splits, dev), and decodes the others once with the values chosen there."""

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from phonerec.base.errors import RecipeError
from phonerec.base.files import file_digest, write_json_atomic, write_text_atomic
from phonerec.data.data_dir import read_table, write_table
from phonerec.data.dataset import load_examples
from phonerec.decoding.decoders import Decoder, decoder_class
from phonerec.decoding.lm import NgramLM
from phonerec.hmm.align_eval import evaluate_alignment, format_accuracy, read_ctm, write_ctm
from phonerec.hmm.timing import frame_shift
from phonerec.model.device import resolve_device
from phonerec.model.posteriors import utterance_posteriors
from phonerec.pipeline.markers import StageRun, read_digest
from phonerec.pipeline.recipe import feature_dir_digest, find_alignment_checkpoint, find_checkpoint, lang_dir_digest
from phonerec.pipeline.stage_keys import DECODE, LM
from phonerec.training.checkpoints import load_model

log = logging.getLogger(__name__)


def make_lm_stage(cfg: DictConfig, train_dir: Path, lm_dir: Path, transcripts: Path | None = None) -> None:
    """Phone n-gram LMs from the training transcripts (<train_dir>/text, or `transcripts`: the pronunciations the
    Viterbi model's alignments chose, hmm.pronunciations=variants): phones.<order>gram.arpa for CTC beam search
    and, for the hybrid decoder's phone loop, phones.2gram.arpa (the same file when the order is 2); with the
    words decoder, the word bigram words.2gram.arpa from text.words."""
    cfg = LM.view(cfg)
    words = "words" in cfg.decode.decoders
    words_file = train_dir / "text.words"
    if words and not words_file.is_file():
        raise RecipeError(f"decode.decoders has words, but {words_file} is missing")
    if transcripts is not None and not transcripts.is_file():
        raise RecipeError(f"{transcripts}: no such file (the chosen pronunciations' transcripts)")
    inputs = [file_digest(train_dir / "text"), *([file_digest(transcripts)] if transcripts else [])]
    stage = StageRun(lm_dir, "lm", LM.digest(cfg, *inputs, file_digest(words_file) if words else None))
    if stage.done:
        return
    with stage:
        # Each training utterance once (the chosen transcripts also hold speed-perturbed copies), as chosen
        # where the alignment chose (those it skipped keep their text).
        text = read_table(train_dir / "text")
        chosen = read_table(transcripts) if transcripts else {}
        sentences = [chosen.get(utt, phones).split() for utt, phones in text.items()]
        phones_file = transcripts or train_dir / "text"
        for order in sorted({cfg.decode.lm_order, 2}):
            NgramLM.estimate(sentences, order=order).write_arpa(lm_dir / f"phones.{order}gram.arpa")
            log.info(
                "%s: %d-gram phone LM from %d training transcripts (%s)",
                lm_dir / f"phones.{order}gram.arpa",
                order,
                len(sentences),
                phones_file,
            )
        if words:
            word_sentences = [v.split() for v in read_table(words_file).values()]
            NgramLM.estimate(word_sentences, order=2).write_arpa(lm_dir / "words.2gram.arpa")
            log.info("%s: word bigram from %d training transcripts", lm_dir / "words.2gram.arpa", len(word_sentences))


def decode_stage(
    cfg: DictConfig,
    name: str,
    feat_dir: Path,
    lang_dir: Path,
    model_dir: Path,
    lm_dir: Path,
    decode_dir: Path,
    tuned_dir: Path | None = None,
) -> None:
    """Decode feat_dir with the model of model_dir (decode.checkpoint) and the decoder called `name` for its kind.
    A tuned decoder with tuned_dir None tunes here: every point of its grid is decoded and scored, the best kept
    (tuning.json); with tuned_dir, the values chosen in tuned_dir/tuning.json decode this set once."""
    checkpoint_path = find_checkpoint(DECODE.view(cfg), model_dir)
    model, checkpoint = load_model(checkpoint_path)
    decoder_type = decoder_class(checkpoint["kind"], name)
    keys = DECODE | decoder_type.keys
    cfg = keys.view(cfg)
    tuning = json.loads((tuned_dir / "tuning.json").read_text()) if decoder_type.tuned and tuned_dir else None
    # Where the set has hand-labelled segments, the decoder's forced alignment is scored against them; a Viterbi
    # model aligns with its own checkpoint choice (decode.align_checkpoint).
    align_path = None
    if (feat_dir / "phones.ctm").is_file():
        align_path = find_alignment_checkpoint(cfg, model_dir) if checkpoint["kind"] == "viterbi" else checkpoint_path
    inputs = (
        file_digest(checkpoint_path),
        file_digest(align_path) if align_path else None,
        feature_dir_digest(feat_dir),
        lang_dir_digest(lang_dir),
        read_digest(lm_dir, "lm") if decoder_type.uses_lm else None,
        tuning,
    )
    stage = StageRun(decode_dir, "decode", keys.digest(cfg, name, *inputs))
    if stage.done:
        return
    with stage:
        torch.set_num_threads(cfg.decode.num_threads)
        decoder = decoder_type(cfg, lang_dir, lm_dir, checkpoint)
        word_ends = decoder_type.word_ends and cfg.hmm.optional_silence
        examples = load_examples(feat_dir, lang_dir, cfg.features, word_boundaries=word_ends)
        model.to(resolve_device(cfg.train.device))
        with torch.no_grad():
            batches = utterance_posteriors(model, examples, cfg.decode.batch_frames, cfg.decode.max_batch_utts)
            scored = {e.utt: log_probs for e, log_probs in batches}  # on train.device
        posteriors = [scored[e.utt].cpu() for e in examples]  # the searches run on the CPU
        refs = decoder.references(feat_dir, examples)
        utt2spk = {e.utt: e.speaker for e in examples}
        chosen, hyps = _tune_or_decode(decoder, decode_dir, examples, posteriors, refs, utt2spk, tuning)
        write_table(decode_dir / "hyp.txt", {u: " ".join(h) for u, h in hyps.items()})
        write_table(decode_dir / "ref.txt", {u: " ".join(r) for u, r in refs.items()})
        write_table(decode_dir / "utt2spk", utt2spk)
        write_text_atomic(
            decode_dir / "model", f"{checkpoint_path.resolve()} epoch {checkpoint['epoch']} {checkpoint['kind']}\n"
        )
        write_text_atomic(decode_dir / "decoder.json", json.dumps({"decoder": decoder.title, **chosen}) + "\n")
        if name == "greedy":  # the decoder that force-aligns, as the bundle's model does (phonerec.inference)
            # A Viterbi model aligns with its own checkpoint choice (decode.align_checkpoint: without hand labels,
            # decode.checkpoint, which the digest covers).
            if align_path is None:
                align_path = find_alignment_checkpoint(cfg, model_dir) if checkpoint["kind"] == "viterbi" else None
            aligner, aligned_on = decoder, [scored[e.utt] for e in examples]  # forced alignment on train.device
            if align_path is not None and align_path != checkpoint_path:
                align_model, align_checkpoint = load_model(align_path)
                align_model.to(resolve_device(cfg.train.device))
                aligner = decoder_type(cfg, lang_dir, lm_dir, align_checkpoint)
                with torch.no_grad():
                    batches = utterance_posteriors(
                        align_model, examples, cfg.decode.batch_frames, cfg.decode.max_batch_utts
                    )
                    by_utt = {e.utt: log_probs for e, log_probs in batches}
                aligned_on = [by_utt[e.utt] for e in examples]
            _forced_alignments(aligner, decode_dir, feat_dir, examples, aligned_on, align_path or checkpoint_path)
        log.info(
            "%s: decoded %d utterances with %s (%s, epoch %d)",
            decode_dir,
            len(examples),
            decoder.title,
            checkpoint_path,
            checkpoint["epoch"],
        )


def _tune_or_decode(decoder: Decoder, decode_dir: Path, examples, posteriors, refs, utt2spk, tuning: dict | None):
    """The one tuning loop. An untuned decoder decodes its one point. A tuned one decodes with the values `tuning`
    chose elsewhere; or, with tuning None, tunes here: every grid point is decoded and scored (decoder.figures,
    whose first value is minimised), and the grid and the choice go to decode_dir/tuning.json. Returns (the
    chosen point, its hypotheses)."""
    if not decoder.tuned:
        return {}, decoder.decode({}, examples, posteriors)
    if tuning is not None:
        log.info("%s: decoded once with %s, chosen on %s", decode_dir, tuning["chosen"], tuning["tuned_on"])
        return tuning["chosen"], decoder.decode(tuning["chosen"], examples, posteriors)
    results, best, best_point, best_hyps = [], None, None, None
    for point in decoder.grid():
        hyps = decoder.decode(point, examples, posteriors)
        result = decoder.figures(refs, hyps, utt2spk)
        results.append({**point, **result})
        log.info("%s: %s -> %s", decode_dir.name, point, result)
        rate = next(iter(result.values()))
        if best is None or rate < best:  # the first of equal rates, as min() picks
            best, best_point, best_hyps = rate, point, hyps
    write_json_atomic(
        decode_dir / "tuning.json",
        {"decoder": decoder.title, "tuned_on": str(decode_dir), "chosen": best_point, "grid": results},
    )
    log.info("%s: chose %s (%.2f%%)", decode_dir, best_point, best)
    return best_point, best_hyps


def _forced_alignments(decoder: Decoder, decode_dir: Path, feat_dir: Path, examples, posteriors, checkpoint_path):
    """The set's transcripts force-aligned by the decoder: each utterance's log-likelihood per frame and its gap to
    the free path in alignment_scores.txt (`<utt> <score> <gap>`, align_eval.alignment_gap; the bundle's floor for a
    wrong transcript is dev's 1st percentile of the gaps, phonerec.pipeline.bundle_stage); where the set has
    hand-labelled segments (phones.ctm), the alignments (ali.ctm) scored against them, the checkpoint that aligned
    (its file and epoch) recorded with the figures."""
    found, scores, _ = decoder.scored_alignments(examples, posteriors)
    write_table(
        decode_dir / "alignment_scores.txt", {utt: f"{score:.4f} {gap:.4f}" for utt, (score, gap) in scores.items()}
    )
    if not (feat_dir / "phones.ctm").is_file():
        return
    aligned = {utt: [seg for seg, _ in segments] for utt, segments in found.items()}
    write_ctm(decode_dir / "ali.ctm", aligned)
    shift = frame_shift(decoder.cfg, decoder.checkpoint["model_args"]["subsample"])
    write_alignment_accuracy(
        decode_dir, read_ctm(feat_dir / "phones.ctm"), aligned, shift, checkpoint_path, decoder.checkpoint["epoch"]
    )


def write_alignment_accuracy(out_dir: Path, reference: dict, aligned: dict, shift: float, checkpoint: Path, epoch: int):
    """out_dir/alignment_accuracy.json: the aligned phone segments against the hand-labelled ones, with the
    checkpoint that aligned (its file name and epoch); logged."""
    accuracy = evaluate_alignment(reference, aligned, shift)
    accuracy["checkpoint"] = {"file": Path(checkpoint).name, "epoch": epoch}
    write_json_atomic(out_dir / "alignment_accuracy.json", accuracy)
    log.info("%s: forced alignment vs hand labels: %s", out_dir, format_accuracy(accuracy))
