"""Stage 4: greedy decoding (with forced alignment against hand labels where a set has them), the phone and word
LMs, the LM decoders tuned on dev, and lexicon-constrained word decoding."""

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torchaudio.models.decoder import ctc_decoder

from phonerec.data.data_dir import read_table, write_table
from phonerec.data.dataset import collate, load_examples, make_batches
from phonerec.data.lang import read_lexicon
from phonerec.decoding.ctc_beam import ctc_beam_decode, make_ctc_beam_decoder
from phonerec.decoding.greedy import ctc_greedy, frame_argmax
from phonerec.decoding.hybrid import (
    LoopGraph,
    LoopPath,
    loop_search_batch,
    path_labels,
    phone_loop,
    scaled_log_likelihoods,
    word_loop,
)
from phonerec.decoding.lm import NgramLM
from phonerec.hmm.align import Topology, build_graph, viterbi_align
from phonerec.hmm.align_eval import ctc_segments, evaluate_alignment, frames_to_segments, read_ctm, write_ctm
from phonerec.pipeline.config import settings_hash
from phonerec.pipeline.errors import RecipeError
from phonerec.pipeline.files import write_json_atomic, write_text_atomic
from phonerec.pipeline.markers import clear_done, is_done, mark_done, read_digest
from phonerec.pipeline.recipe import (
    file_sha256,
    find_checkpoint,
    frame_shift,
    load_time_features,
    read_id2phone,
    read_topology,
    scoring_fold,
)
from phonerec.scoring.error_rate import score, word_error_rates
from phonerec.training.ctc import ctc_min_frames
from phonerec.training.loop import load_model
from phonerec.training.viterbi_ce import format_accuracy

log = logging.getLogger(__name__)


def decode_stage(cfg: DictConfig, feat_dir: Path, lang_dir: Path, model_dir: Path, decode_dir: Path) -> None:
    """Greedy decoding: CTC best path, or the Viterbi model's frame argmax with repeats merged."""
    checkpoint_path = find_checkpoint(cfg, model_dir)
    digest = settings_hash(file_sha256(checkpoint_path), read_digest(feat_dir, "features"),
                           load_time_features(cfg))  # fmt: skip
    if is_done(decode_dir, "decode", digest):
        return
    clear_done(decode_dir, "decode")
    start = time.perf_counter()
    torch.set_num_threads(cfg.train.num_threads)
    model, checkpoint = load_model(checkpoint_path)
    examples = load_examples(feat_dir, lang_dir, cfg.features, cfg.hmm.optional_silence)
    id2phone = read_id2phone(lang_dir)
    topo = Topology(len(id2phone), cfg.hmm.states_per_phone)
    state_to_phone = topo.state_to_phone()
    reference = read_ctm(feat_dir / "phones.ctm") if (feat_dir / "phones.ctm").is_file() else None
    hyps, aligned = {}, {}
    lengths = [e.feats.shape[0] for e in examples]
    with torch.no_grad():
        for batch in make_batches(lengths, cfg.train.batch_frames, cfg.train.max_batch_utts):
            batch_examples = [examples[i] for i in batch]
            log_probs, out_lengths = model(*collate(batch_examples))
            if checkpoint["kind"] == "ctc":
                decoded = ctc_greedy(log_probs, out_lengths)
            else:
                decoded = frame_argmax(log_probs, out_lengths, state_to_phone)
            for e, hyp in zip(batch_examples, decoded, strict=True):
                hyps[e.utt] = [id2phone[p] for p in hyp]
            if reference is not None:
                alis = _forced_alignment(cfg, checkpoint, topo, id2phone, batch_examples, log_probs, out_lengths)
                aligned.update(alis)
    refs = {e.utt: [id2phone[p] for p in e.phones] for e in examples}
    _write_decode(decode_dir, hyps, refs, {e.utt: e.speaker for e in examples}, checkpoint_path, checkpoint)
    if reference is not None:
        write_ctm(decode_dir / "ali.ctm", aligned)
        accuracy = evaluate_alignment(reference, aligned, frame_shift(cfg))
        write_json_atomic(decode_dir / "alignment_accuracy.json", accuracy)
        log.info("%s: forced alignment vs hand labels: %s", decode_dir, format_accuracy(accuracy))
    seconds = time.perf_counter() - start
    log.info("%s: decoded %d utterances with %s (epoch %d) in %.1f s", decode_dir, len(examples),
             checkpoint_path, checkpoint["epoch"], seconds)  # fmt: skip
    mark_done(decode_dir, "decode", digest, seconds=seconds)


def _forced_alignment(cfg, checkpoint, topo, id2phone, examples, log_probs, out_lengths) -> dict:
    """Segments of each utterance's transcript: Viterbi through its graph on scaled likelihoods (Viterbi
    model, with the priors of its last alignment), or torchaudio's CTC forced alignment (CTC model)."""
    shift = frame_shift(cfg)
    if checkpoint["kind"] == "ctc":
        return {
            e.utt: ctc_segments(log_probs[k, : out_lengths[k]], e.phones, 0, shift, id2phone)
            for k, e in enumerate(examples)
            if out_lengths[k] >= ctc_min_frames(e.phones)
        }
    priors = checkpoint["task"].get("log_priors")
    scores = log_probs - cfg.train.viterbi.prior_scale * priors if priors is not None else log_probs
    graphs = [build_graph(e.phones, topo, e.word_ends, cfg.hmm.optional_silence) for e in examples]
    alignment, loglik = viterbi_align(scores, out_lengths, graphs, topo)
    n = topo.states_per_phone
    return {
        e.utt: frames_to_segments([id2phone[s // n + 1] for s in alignment[k, : out_lengths[k]].tolist()], shift)
        for k, e in enumerate(examples)
        if torch.isfinite(loglik[k])
    }


def make_lm_stage(cfg: DictConfig, train_dir: Path, lm_dir: Path) -> None:
    """Phone n-gram LMs from the training transcripts: phones.<order>gram.arpa for CTC beam search and, for the
    hybrid decoder's phone loop, phones.2gram.arpa (the same file when the order is 2)."""
    text = (train_dir / "text").read_text()
    words_file = train_dir / "text.words"
    word_text = words_file.read_text() if cfg.decode.words.enabled and words_file.is_file() else None
    if cfg.decode.words.enabled and word_text is None:
        raise RecipeError(f"decode.words.enabled=true, but {words_file} is missing")
    digest = settings_hash(cfg.decode.lm_order, text, word_text)
    if is_done(lm_dir, "lm", digest):
        return
    clear_done(lm_dir, "lm")
    start = time.perf_counter()
    sentences = [line.split()[1:] for line in text.splitlines() if line.strip()]
    for order in sorted({cfg.decode.lm_order, 2}):
        lm = NgramLM.estimate(sentences, order=order)
        lm.write_arpa(lm_dir / f"phones.{order}gram.arpa")
        log.info("%s: %d-gram phone LM from %d training transcripts", lm_dir / f"phones.{order}gram.arpa", order,
                 len(sentences))  # fmt: skip
    if cfg.decode.words.enabled:
        words = [v.split() for v in read_table(train_dir / "text.words").values()]
        NgramLM.estimate(words, order=2).write_arpa(lm_dir / "words.2gram.arpa")
        log.info("%s: word bigram from %d training transcripts", lm_dir / "words.2gram.arpa", len(words))
    mark_done(lm_dir, "lm", digest, seconds=time.perf_counter() - start)


def lm_decode_stage(cfg: DictConfig, feat_dir: Path, lang_dir: Path, model_dir: Path, lm_dir: Path,
                    decode_dir: Path, tuned_dir: Path | None) -> None:  # fmt: skip
    """The model's LM decoder: CTC prefix beam search, or hybrid Viterbi through a phone loop, with the phone
    LM. tuned_dir None: this is the dev set; every grid point of decode.* is scored here and the best kept
    (tuning.json). Otherwise the values chosen in tuned_dir/tuning.json decode this set once."""
    checkpoint_path = find_checkpoint(cfg, model_dir)
    tuning = None if tuned_dir is None else json.loads((tuned_dir / "tuning.json").read_text())
    model, checkpoint = load_model(checkpoint_path)
    digest = settings_hash(file_sha256(checkpoint_path), read_digest(feat_dir, "features"), read_digest(lm_dir, "lm"),
                           load_time_features(cfg), _decoder_settings(cfg, checkpoint["kind"]), tuning)  # fmt: skip
    if is_done(decode_dir, "decode", digest):
        return
    clear_done(decode_dir, "decode")
    start = time.perf_counter()
    torch.set_num_threads(cfg.train.num_threads)
    examples = load_examples(feat_dir, lang_dir, cfg.features, cfg.hmm.optional_silence)
    id2phone = read_id2phone(lang_dir)
    posteriors = _posteriors(model, examples, cfg)
    refs = {e.utt: [id2phone[p] for p in e.phones] for e in examples}
    utt2spk = {e.utt: e.speaker for e in examples}

    if checkpoint["kind"] == "ctc":
        phones = [id2phone[i] for i in range(len(id2phone))]
        lm = NgramLM.read_arpa(lm_dir / f"phones.{cfg.decode.lm_order}gram.arpa")
        beam = cfg.decode.ctc_beam
        grid = [{"lm_weight": w, "insertion_bonus": b} for w in beam.lm_weights for b in beam.insertion_bonuses]

        def run(point):
            decoder = make_ctc_beam_decoder(phones, lm, point["lm_weight"], point["insertion_bonus"], beam.beam_size,
                                            beam.beam_size_token)  # fmt: skip
            return {e.utt: [id2phone[p] for p in ctc_beam_decode(decoder, lp.unsqueeze(0), torch.tensor([len(lp)]))[0]]
                    for e, lp in zip(examples, posteriors, strict=True)}  # fmt: skip

        name = "CTC prefix beam search + phone LM"
    else:
        topo = read_topology(lang_dir, cfg)
        lm = NgramLM.read_arpa(lm_dir / "phones.2gram.arpa")
        priors = checkpoint["task"].get("log_priors")
        grid = [{"acoustic_scale": a, "insertion_bonus": b} for a in cfg.decode.hybrid.acoustic_scales
                for b in cfg.decode.hybrid.insertion_bonuses]  # fmt: skip

        def run(point):
            graph, phone_ids = phone_loop(lm, id2phone, topo, lm_weight=1.0, insertion_bonus=point["insertion_bonus"])
            paths = _hybrid_search(cfg, examples, posteriors, priors, point["acoustic_scale"], graph)
            return {e.utt: [id2phone[p] for p in path_labels(path, phone_ids)]
                    for e, path in zip(examples, paths, strict=True)}  # fmt: skip

        name = "hybrid Viterbi (posteriors / priors) + phone LM"

    fold, ignore = scoring_fold(cfg), frozenset(cfg.decode.ignore_phones)

    def figures(hyps):
        return {"per": score(refs, hyps, utt2spk, fold=fold, ignore=ignore)["total"]["per"]}

    tuning, hyps = _tuned_decode(decode_dir, name, grid, run, figures, tuning)
    _write_decode(decode_dir, hyps, refs, utt2spk, checkpoint_path, checkpoint, tuning)
    mark_done(decode_dir, "decode", digest, seconds=time.perf_counter() - start)


def word_decode_stage(cfg: DictConfig, feat_dir: Path, lang_dir: Path, model_dir: Path, lm_dir: Path,
                      decode_dir: Path, tuned_dir: Path | None) -> None:  # fmt: skip
    """Word decoding constrained by lang/lexicon.txt, with the word bigram: torchaudio's ctc_decoder in lexicon
    mode (CTC model; LM weight and word score tuned), or hybrid Viterbi through a word loop (Viterbi model;
    acoustic scale and word score tuned, LM weight 1). Tuned on dev (tuned_dir None) by WER; test decoded once
    with the choice."""
    checkpoint_path = find_checkpoint(cfg, model_dir)
    tuning = None if tuned_dir is None else json.loads((tuned_dir / "tuning.json").read_text())
    wcfg = OmegaConf.to_container(cfg.decode.words, resolve=True)
    model, checkpoint = load_model(checkpoint_path)
    digest = settings_hash(file_sha256(checkpoint_path), read_digest(feat_dir, "features"), read_digest(lm_dir, "lm"),
                           load_time_features(cfg), _decoder_settings(cfg, checkpoint["kind"], words=True),
                           tuning)  # fmt: skip
    if is_done(decode_dir, "decode", digest):
        return
    clear_done(decode_dir, "decode")
    start = time.perf_counter()
    torch.set_num_threads(cfg.train.num_threads)
    examples = load_examples(feat_dir, lang_dir, cfg.features, word_boundaries=False)
    id2phone = read_id2phone(lang_dir)
    phones = [id2phone[i] for i in range(len(id2phone))]
    posteriors = _posteriors(model, examples, cfg)
    refs = {u: v.split() for u, v in read_table(feat_dir / "text.words").items()}

    if checkpoint["kind"] == "ctc":
        grid = [{"lm_weight": w, "word_score": b} for w in wcfg["lm_weights"] for b in wcfg["word_scores"]]

        def run(point):
            decoder = ctc_decoder(lexicon=str(lang_dir / "lexicon.txt"), tokens=phones,
                                  lm=str(lm_dir / "words.2gram.arpa"), lm_weight=point["lm_weight"],
                                  word_score=point["word_score"], beam_size=wcfg["beam_size"], blank_token=phones[0],
                                  sil_token=phones[1], unk_word="<unk>")  # fmt: skip
            hyps = {}
            for e, lp in zip(examples, posteriors, strict=True):
                best = decoder(lp.unsqueeze(0).float().contiguous(), torch.tensor([len(lp)], dtype=torch.int32))[0]
                hyps[e.utt] = list(best[0].words) if best else []
            return hyps

        name = "CTC lexicon beam search + word bigram"
    else:
        topo = read_topology(lang_dir, cfg)
        lexicon = read_lexicon(lang_dir / "lexicon.txt")
        lm = NgramLM.read_arpa(lm_dir / "words.2gram.arpa")
        priors = checkpoint["task"].get("log_priors")
        phone2id = {p: i for i, p in id2phone.items()}
        grid = [{"acoustic_scale": a, "word_score": b} for a in cfg.decode.hybrid.acoustic_scales
                for b in wcfg["word_scores"]]  # fmt: skip

        def run(point):
            graph, words = word_loop(lexicon, phone2id, topo, lm, lm_weight=1.0, word_score=point["word_score"],
                                     optional_silence=cfg.hmm.optional_silence)  # fmt: skip
            paths = _hybrid_search(cfg, examples, posteriors, priors, point["acoustic_scale"], graph)
            return {e.utt: path_labels(path, words) for e, path in zip(examples, paths, strict=True)}

        name = "hybrid Viterbi word loop + word bigram"

    def figures(hyps):
        rates = word_error_rates(refs, hyps)
        return {"wer": rates["wer"], "ser": rates["ser"]}

    tuning, hyps = _tuned_decode(decode_dir, name, grid, run, figures, tuning)
    utt2spk = {e.utt: e.speaker for e in examples}
    _write_decode(decode_dir, hyps, refs, utt2spk, checkpoint_path, checkpoint, tuning)
    mark_done(decode_dir, "decode", digest, seconds=time.perf_counter() - start)


def _tuned_decode(decode_dir: Path, name: str, grid: list[dict], run, figures, tuning: dict | None):
    """Decode with the values `tuning` chose elsewhere; or, with tuning None, tune here: every grid point is
    decoded (run(point) -> hyps) and scored (figures(hyps) -> dict whose first value is minimised), and the
    grid and the choice go to decode_dir/tuning.json. Returns (tuning, hyps of the chosen point)."""
    if tuning is not None:
        log.info("%s: decoded once with %s, chosen on %s", decode_dir, tuning["chosen"], tuning["tuned_on"])
        return tuning, run(tuning["chosen"])
    results, best, best_hyps = [], None, None
    for point in grid:
        hyps = run(point)
        result = figures(hyps)
        results.append({**point, **result})
        log.info("%s: %s -> %s", decode_dir.name, point, result)
        rate = next(iter(result.values()))
        if best is None or rate < best:  # the first of equal rates, as min() picks
            best, best_point, best_hyps = rate, point, hyps
    tuning = {"decoder": name, "tuned_on": str(decode_dir), "chosen": best_point, "grid": results}
    write_json_atomic(decode_dir / "tuning.json", tuning)
    log.info("%s: chose %s (%.2f%%)", decode_dir, best_point, best)
    return tuning, best_hyps


def _write_decode(decode_dir: Path, hyps: dict, refs: dict, utt2spk: dict, checkpoint_path: Path, checkpoint: dict,
                  tuning: dict | None = None) -> None:  # fmt: skip
    """A decode dir's outputs: hyp.txt, ref.txt, utt2spk, the model used and, for a tuned decoder, its values."""
    write_table(decode_dir / "hyp.txt", {u: " ".join(h) for u, h in hyps.items()})
    write_table(decode_dir / "ref.txt", {u: " ".join(r) for u, r in refs.items()})
    write_table(decode_dir / "utt2spk", utt2spk)
    write_text_atomic(
        decode_dir / "model", f"{checkpoint_path.resolve()} epoch {checkpoint['epoch']} {checkpoint['kind']}\n"
    )
    if tuning is not None:
        write_text_atomic(
            decode_dir / "decoder.json", json.dumps({"decoder": tuning["decoder"], **tuning["chosen"]}) + "\n"
        )


def _decoder_settings(cfg: DictConfig, kind: str, words: bool = False) -> dict:
    """What an LM or word decode of a model of this kind reads: its decoder's settings and grids, and for phones
    the scoring settings its tuning uses (not sclite, not splits, not how many frames are searched at once)."""
    decode = OmegaConf.to_container(cfg.decode, resolve=True)
    hybrid = {k: v for k, v in decode["hybrid"].items() if k != "batch_frames"}
    if words:
        settings = {"words": decode["words"]}
        if kind == "viterbi":
            settings |= {"hybrid": hybrid, "optional_silence": cfg.hmm.optional_silence}
        return settings
    settings = {k: decode[k] for k in ("lm_order", "ignore_phones", "phone_map", "fold_from", "fold_to")}
    if kind == "ctc":
        settings["ctc_beam"] = decode["ctc_beam"]
    else:
        settings["hybrid"] = hybrid
    return settings


def _hybrid_search(cfg, examples, posteriors, log_priors, acoustic_scale: float, graph: LoopGraph) -> list[LoopPath]:
    """Each utterance's best path through a loop graph, on its scaled likelihoods, a batch of similar lengths at
    a time (decode.hybrid.batch_frames)."""
    prior_scale = cfg.train.viterbi.prior_scale
    scaled = [scaled_log_likelihoods(lp, log_priors, prior_scale, acoustic_scale) for lp in posteriors]
    paths = [None] * len(scaled)
    for batch in make_batches([len(s) for s in scaled], cfg.decode.hybrid.batch_frames, len(scaled)):
        found = loop_search_batch([scaled[i] for i in batch], graph, cfg.decode.hybrid.beam,
                                  names=[examples[i].utt for i in batch])  # fmt: skip
        for i, path in zip(batch, found, strict=True):
            paths[i] = path
    return paths


def _posteriors(model, examples, cfg) -> list[torch.Tensor]:
    """Each utterance's log-posteriors (frames, outputs), in the order of `examples`."""
    out: dict[int, torch.Tensor] = {}
    lengths = [e.feats.shape[0] for e in examples]
    with torch.no_grad():
        for batch in make_batches(lengths, cfg.train.batch_frames, cfg.train.max_batch_utts):
            log_probs, out_lengths = model(*collate([examples[i] for i in batch]))
            for k, i in enumerate(batch):
                out[i] = log_probs[k, : out_lengths[k]]
    return [out[i] for i in range(len(examples))]
