"""What run.sh's training, decoding and scoring stages do, given their dirs and the config.

Each stage hashes the settings it reads and the digests its inputs' stages recorded, so a finished stage is
skipped, and changing, say, a decoding setting never redoes training. A training run whose settings changed
is not resumed: its exp dir is moved aside to <exp-dir>.<old digest> and training starts afresh.
"""

import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import time
from datetime import date
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torchaudio.models.decoder import ctc_decoder

from phonerec.align_eval import ctc_segments, evaluate_alignment, frames_to_segments, read_ctm, write_ctm
from phonerec.alignment import Topology, build_graph, viterbi_align
from phonerec.config import REPO_ROOT, repo_path, save_config, settings_hash
from phonerec.ctc import CTCTask, ctc_min_frames
from phonerec.ctc_beam import ctc_beam_decode, make_ctc_beam_decoder
from phonerec.data_dir import read_table, write_table
from phonerec.dataset import collate, load_examples, make_batches
from phonerec.decode import ctc_greedy, frame_argmax
from phonerec.errors import RecipeError
from phonerec.hybrid import hybrid_decode
from phonerec.lang import read_phones
from phonerec.lm import NgramLM
from phonerec.model import BLSTMAcousticModel
from phonerec.reports import refs_hyps, write_reports
from phonerec.sclite import find_sclite, run_sclite
from phonerec.scoring import fold_phones, read_phone_map, score, word_error_rates, write_score_report
from phonerec.stage import clear_done, is_done, mark_done, read_digest
from phonerec.training import load_model, train
from phonerec.viterbi import ViterbiTask, format_accuracy

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


def _load_time_features(cfg: DictConfig) -> dict:
    return {k: cfg.features[k] for k in ("norm_vars", "delta_order", "delta_window")}


def _training_settings(cfg: DictConfig, section: str) -> dict:
    """What a training stage's result depends on (not num_threads or keep_checkpoints)."""
    tcfg = OmegaConf.to_container(cfg.train, resolve=True)
    common = {k: tcfg[k] for k in ("seed", "batch_frames", "max_batch_utts", "grad_clip")}
    return {"model": OmegaConf.to_container(cfg.model), "train": common, section: tcfg[section],
            "hmm": OmegaConf.to_container(cfg.hmm), "features": _load_time_features(cfg),
            "ignore_phones": list(cfg.decode.ignore_phones)}  # fmt: skip


def _fresh_exp_dir(exp_dir: Path, digest: str) -> None:
    """Keep a run with other settings (moved aside) rather than resume it with these."""
    stamp = exp_dir / "run_digest"
    if stamp.is_file() and stamp.read_text().strip() != digest:
        old = stamp.read_text().strip()
        aside = exp_dir.with_name(f"{exp_dir.name}.{old}")
        log.warning("%s holds a run with other settings; moving it to %s", exp_dir, aside)
        aside.mkdir()
        for entry in exp_dir.iterdir():
            if entry.name not in ("log", ".lock"):  # this step writes its log there and holds the lock
                entry.rename(aside / entry.name)
        if (exp_dir / "log").is_dir():
            shutil.copytree(exp_dir / "log", aside / "log")
    exp_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest + "\n")


def _frame_shift(cfg: DictConfig) -> float:
    """Seconds between model output frames."""
    return cfg.features.kaldi.frame_shift / 1000 * cfg.model.subsample


def _id2phone(lang_dir: Path) -> dict[int, str]:
    return {i: p for p, i in read_phones(lang_dir).items()}


def _topology(lang_dir: Path, cfg: DictConfig) -> Topology:
    phones = read_phones(lang_dir)
    topo = Topology(num_phones=len(phones), states_per_phone=cfg.hmm.states_per_phone)
    states_file = lang_dir / "states.txt"
    states = read_table(states_file) if states_file.is_file() else {}
    if len(states) != topo.num_states:
        raise RecipeError(
            f"{lang_dir}/states.txt has {len(states)} states, hmm.states_per_phone={cfg.hmm.states_per_phone} "
            f"needs {topo.num_states}: run stage 0 again with this setting"
        )
    return topo


def _write_summary(exp_dir: Path, kind: str, summary: dict) -> None:
    history = summary["history"]
    data = {
        "kind": kind,
        "epochs": len(history),
        "best": summary["best"],
        "train_seconds": sum(r["seconds"] for r in history),
        "frames_per_second": sum(r["frames_per_second"] for r in history) / max(len(history), 1),
        "history": history,
    }
    (exp_dir / "train_summary.json").write_text(json.dumps(data, indent=2) + "\n")


def train_viterbi_stage(cfg: DictConfig, train_dir: Path, dev_dir: Path, lang_dir: Path, exp_dir: Path) -> None:
    digest = settings_hash(
        _training_settings(cfg, "viterbi"),
        read_digest(train_dir, "features"),
        read_digest(dev_dir, "features"),
        (lang_dir / "phones.txt").read_text(),
    )
    if is_done(exp_dir, "train", digest):
        return
    _fresh_exp_dir(exp_dir, digest)
    torch.set_num_threads(cfg.train.num_threads)
    topo = _topology(lang_dir, cfg)
    train_set = load_examples(train_dir, lang_dir, cfg.features, cfg.hmm.optional_silence)
    dev_set = load_examples(dev_dir, lang_dir, cfg.features, cfg.hmm.optional_silence)
    torch.manual_seed(cfg.train.seed)
    model_args = {"input_dim": train_set[0].feats.shape[1], "num_outputs": topo.num_states,
                  **OmegaConf.to_container(cfg.model)}  # fmt: skip
    model = BLSTMAcousticModel(**model_args)
    reference = {name: read_ctm(d / "phones.ctm") for name, d in (("train", train_dir), ("dev", dev_dir))
                 if (d / "phones.ctm").is_file()}  # fmt: skip
    task = ViterbiTask(
        exp_dir,
        topo,
        train_set,
        dev_set,
        cfg.train.viterbi,
        cfg.train,
        _id2phone(lang_dir),
        set(cfg.decode.ignore_phones),
        cfg.hmm.optional_silence,
        reference,
        _frame_shift(cfg),
    )
    summary = train(exp_dir, model, model_args, "viterbi", task, train_set, cfg.train.viterbi, cfg.train, cfg)
    _write_summary(exp_dir, "viterbi", summary)
    save_config(cfg, exp_dir / "config.yaml")
    mark_done(exp_dir, "train", digest, seconds=sum(r["seconds"] for r in summary["history"]))


def train_ctc_stage(cfg: DictConfig, train_dir: Path, dev_dir: Path, lang_dir: Path, init_dir: Path,
                    exp_dir: Path) -> None:  # fmt: skip
    """CTC from the Viterbi model in init_dir (train.ctc.init=viterbi) or from scratch."""
    init = cfg.train.ctc.init
    if init not in ("viterbi", "scratch"):
        raise RecipeError(f"train.ctc.init={init}: expected viterbi or scratch")
    digest = settings_hash(
        _training_settings(cfg, "ctc"),
        read_digest(train_dir, "features"),
        read_digest(dev_dir, "features"),
        (lang_dir / "phones.txt").read_text(),
        read_digest(init_dir, "train") if init == "viterbi" else "scratch",
    )
    if is_done(exp_dir, "train", digest):
        return
    _fresh_exp_dir(exp_dir, digest)
    torch.set_num_threads(cfg.train.num_threads)
    num_phones = len(read_phones(lang_dir))
    train_set = load_examples(train_dir, lang_dir, cfg.features, word_boundaries=False)
    dev_set = load_examples(dev_dir, lang_dir, cfg.features, word_boundaries=False)
    torch.manual_seed(cfg.train.seed)
    if init == "viterbi":
        model, checkpoint = load_model(init_dir / "best.pt")
        model.replace_output_layer(num_phones)
        model_args = {**checkpoint["model_args"], "num_outputs": num_phones}
        log.info("CTC starts from %s (epoch %d) with a fresh phones+blank output layer",
                 init_dir / "best.pt", checkpoint["epoch"])  # fmt: skip
    else:
        model_args = {"input_dim": train_set[0].feats.shape[1], "num_outputs": num_phones,
                      **OmegaConf.to_container(cfg.model)}  # fmt: skip
        model = BLSTMAcousticModel(**model_args)
    task = CTCTask(train_set, dev_set, cfg.train, model, _id2phone(lang_dir), set(cfg.decode.ignore_phones))
    summary = train(exp_dir, model, model_args, "ctc", task, train_set, cfg.train.ctc, cfg.train, cfg)
    _write_summary(exp_dir, "ctc", summary)
    save_config(cfg, exp_dir / "config.yaml")
    mark_done(exp_dir, "train", digest, seconds=sum(r["seconds"] for r in summary["history"]))


def _checkpoint_path(cfg: DictConfig, model_dir: Path) -> Path:
    path = model_dir / f"{cfg.decode.checkpoint}.pt"
    if not path.is_file():
        raise RecipeError(f"{path}: no such checkpoint (decode.checkpoint is best or last)")
    return path


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decode_stage(cfg: DictConfig, feat_dir: Path, lang_dir: Path, model_dir: Path, decode_dir: Path) -> None:
    """Greedy decoding: CTC best path, or the Viterbi model's frame argmax with repeats merged."""
    checkpoint_path = _checkpoint_path(cfg, model_dir)
    digest = settings_hash(_file_sha256(checkpoint_path), read_digest(feat_dir, "features"),
                           _load_time_features(cfg))  # fmt: skip
    if is_done(decode_dir, "decode", digest):
        return
    clear_done(decode_dir, "decode")
    start = time.perf_counter()
    torch.set_num_threads(cfg.train.num_threads)
    model, checkpoint = load_model(checkpoint_path)
    examples = load_examples(feat_dir, lang_dir, cfg.features, cfg.hmm.optional_silence)
    id2phone = _id2phone(lang_dir)
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
        accuracy = evaluate_alignment(reference, aligned, _frame_shift(cfg))
        (decode_dir / "alignment_accuracy.json").write_text(json.dumps(accuracy, indent=2) + "\n")
        log.info("%s: forced alignment vs hand labels: %s", decode_dir, format_accuracy(accuracy))
    seconds = time.perf_counter() - start
    log.info("%s: decoded %d utterances with %s (epoch %d) in %.1f s", decode_dir, len(examples),
             checkpoint_path, checkpoint["epoch"], seconds)  # fmt: skip
    mark_done(decode_dir, "decode", digest, seconds=seconds)


def _forced_alignment(cfg, checkpoint, topo, id2phone, examples, log_probs, out_lengths) -> dict:
    """Segments of each utterance's transcript: Viterbi through its graph on scaled likelihoods (Viterbi
    model, with the priors of its last alignment), or torchaudio's CTC forced alignment (CTC model)."""
    shift = _frame_shift(cfg)
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


def _fold(cfg: DictConfig):
    """The one folding of reference and hypothesis before scoring (decode.phone_map), or None."""
    if not cfg.decode.phone_map:
        return None
    mapping = read_phone_map(repo_path(cfg.decode.phone_map), source=cfg.decode.fold_from, target=cfg.decode.fold_to)
    return functools.partial(fold_phones, mapping=mapping)


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
    checkpoint_path = _checkpoint_path(cfg, model_dir)
    tuning = None if tuned_dir is None else json.loads((tuned_dir / "tuning.json").read_text())
    digest = settings_hash(_file_sha256(checkpoint_path), read_digest(feat_dir, "features"), read_digest(lm_dir, "lm"),
                           _load_time_features(cfg), _lm_decode_settings(cfg), tuning)  # fmt: skip
    if is_done(decode_dir, "decode", digest):
        return
    clear_done(decode_dir, "decode")
    start = time.perf_counter()
    torch.set_num_threads(cfg.train.num_threads)
    model, checkpoint = load_model(checkpoint_path)
    examples = load_examples(feat_dir, lang_dir, cfg.features, cfg.hmm.optional_silence)
    id2phone = _id2phone(lang_dir)
    posteriors = _posteriors(model, examples, cfg)
    refs = {e.utt: [id2phone[p] for p in e.phones] for e in examples}
    utt2spk = {e.utt: e.speaker for e in examples}

    if checkpoint["kind"] == "ctc":
        phones = [id2phone[i] for i in range(len(id2phone))]
        lm_path = lm_dir / f"phones.{cfg.decode.lm_order}gram.arpa"
        grid = [{"lm_weight": w} for w in cfg.decode.ctc_beam.lm_weights]

        def run(point):
            decoder = make_ctc_beam_decoder(phones, lm_path, point["lm_weight"], cfg.decode.ctc_beam.beam_size)
            return {e.utt: [id2phone[p] for p in ctc_beam_decode(decoder, lp.unsqueeze(0), torch.tensor([len(lp)]))[0]]
                    for e, lp in zip(examples, posteriors, strict=True)}  # fmt: skip

        name = "CTC prefix beam search + phone LM"
    else:
        topo = Topology(len(id2phone), cfg.hmm.states_per_phone)
        lm = NgramLM.read_arpa(lm_dir / "phones.2gram.arpa")
        priors = checkpoint["task"].get("log_priors")
        grid = [{"acoustic_scale": a, "insertion_bonus": b} for a in cfg.decode.hybrid.acoustic_scales
                for b in cfg.decode.hybrid.insertion_bonuses]  # fmt: skip

        def run(point):
            hyps = {}
            for e, lp in zip(examples, posteriors, strict=True):
                scaled = lp - cfg.train.viterbi.prior_scale * priors if priors is not None else lp
                ids = hybrid_decode(point["acoustic_scale"] * scaled, topo, lm, id2phone, lm_weight=1.0,
                                    insertion_bonus=point["insertion_bonus"], beam=cfg.decode.hybrid.beam)  # fmt: skip
                hyps[e.utt] = [id2phone[p] for p in ids]
            return hyps

        name = "hybrid Viterbi (posteriors / priors) + phone LM"

    fold, ignore = _fold(cfg), frozenset(cfg.decode.ignore_phones)

    def figures(hyps):
        return {"per": score(refs, hyps, utt2spk, fold=fold, ignore=ignore)["total"]["per"]}

    tuning, hyps = _tuned_decode(decode_dir, name, grid, run, figures, tuning)
    _write_decode(decode_dir, hyps, refs, utt2spk, checkpoint_path, checkpoint, tuning)
    mark_done(decode_dir, "decode", digest, seconds=time.perf_counter() - start)


def word_decode_stage(cfg: DictConfig, feat_dir: Path, lang_dir: Path, model_dir: Path, lm_dir: Path,
                      decode_dir: Path, tuned_dir: Path | None) -> None:  # fmt: skip
    """Word decoding of a CTC model, constrained by lang/lexicon.txt, with the word bigram: torchaudio's
    ctc_decoder in lexicon mode. Tuned on dev (tuned_dir None) by WER; test decoded once with the choice."""
    checkpoint_path = _checkpoint_path(cfg, model_dir)
    tuning = None if tuned_dir is None else json.loads((tuned_dir / "tuning.json").read_text())
    wcfg = OmegaConf.to_container(cfg.decode.words, resolve=True)
    digest = settings_hash(_file_sha256(checkpoint_path), read_digest(feat_dir, "features"), read_digest(lm_dir, "lm"),
                           _load_time_features(cfg), wcfg, tuning)  # fmt: skip
    if is_done(decode_dir, "decode", digest):
        return
    clear_done(decode_dir, "decode")
    start = time.perf_counter()
    torch.set_num_threads(cfg.train.num_threads)
    model, checkpoint = load_model(checkpoint_path)
    if checkpoint["kind"] != "ctc":
        raise RecipeError(f"{checkpoint_path}: word decoding is for CTC models")
    examples = load_examples(feat_dir, lang_dir, cfg.features, word_boundaries=False)
    id2phone = _id2phone(lang_dir)
    phones = [id2phone[i] for i in range(len(id2phone))]
    posteriors = _posteriors(model, examples, cfg)
    refs = {u: v.split() for u, v in read_table(feat_dir / "text.words").items()}
    grid = [{"lm_weight": w, "word_score": b} for w in wcfg["lm_weights"] for b in wcfg["word_scores"]]

    def run(point):
        decoder = ctc_decoder(lexicon=str(lang_dir / "lexicon.txt"), tokens=phones, lm=str(lm_dir / "words.2gram.arpa"),
                              lm_weight=point["lm_weight"], word_score=point["word_score"],
                              beam_size=wcfg["beam_size"], blank_token=phones[0], sil_token=phones[1],
                              unk_word="<unk>")  # fmt: skip
        hyps = {}
        for e, lp in zip(examples, posteriors, strict=True):
            best = decoder(lp.unsqueeze(0).float().contiguous(), torch.tensor([len(lp)], dtype=torch.int32))[0]
            hyps[e.utt] = list(best[0].words) if best else []
        return hyps

    def figures(hyps):
        rates = word_error_rates(refs, hyps)
        return {"wer": rates["wer"], "ser": rates["ser"]}

    name = "CTC lexicon beam search + word bigram"
    tuning, hyps = _tuned_decode(decode_dir, name, grid, run, figures, tuning)
    utt2spk = {e.utt: e.speaker for e in examples}
    _write_decode(decode_dir, hyps, refs, utt2spk, checkpoint_path, checkpoint, tuning)
    mark_done(decode_dir, "decode", digest, seconds=time.perf_counter() - start)


def word_score_stage(decode_dir: Path) -> dict:
    """wer.json of a word decode dir: WER and sentence error rate."""
    read_digest(decode_dir, "decode")
    refs = {u: v.split() for u, v in read_table(decode_dir / "ref.txt").items()}
    hyps = {u: v.split() for u, v in read_table(decode_dir / "hyp.txt").items()}
    rates = word_error_rates(refs, hyps)
    (decode_dir / "wer.json").write_text(json.dumps(rates, indent=2) + "\n")
    log.info("%s: WER %.2f%%, SER %.2f%% (%d sub, %d del, %d ins of %d words)", decode_dir, rates["wer"],
             rates["ser"], rates["sub"], rates["del"], rates["ins"], rates["n"])  # fmt: skip
    return rates


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
    decode_dir.mkdir(parents=True, exist_ok=True)
    tmp = decode_dir / "tuning.json.tmp"
    tmp.write_text(json.dumps(tuning, indent=2) + "\n")
    tmp.replace(decode_dir / "tuning.json")
    log.info("%s: chose %s (%.2f%%)", decode_dir, best_point, best)
    return tuning, best_hyps


def _write_decode(decode_dir: Path, hyps: dict, refs: dict, utt2spk: dict, checkpoint_path: Path, checkpoint: dict,
                  tuning: dict | None = None) -> None:  # fmt: skip
    """A decode dir's outputs: hyp.txt, ref.txt, utt2spk, the model used and, for a tuned decoder, its values."""
    write_table(decode_dir / "hyp.txt", {u: " ".join(h) for u, h in hyps.items()})
    write_table(decode_dir / "ref.txt", {u: " ".join(r) for u, r in refs.items()})
    write_table(decode_dir / "utt2spk", utt2spk)
    (decode_dir / "model").write_text(f"{checkpoint_path.resolve()} epoch {checkpoint['epoch']} {checkpoint['kind']}\n")
    if tuning is not None:
        (decode_dir / "decoder.json").write_text(json.dumps({"decoder": tuning["decoder"], **tuning["chosen"]}) + "\n")


def _lm_decode_settings(cfg: DictConfig) -> dict:
    """What an LM decode reads: the grids, and the scoring settings its tuning uses (not sclite, not splits)."""
    keys = ("lm_order", "ctc_beam", "hybrid", "ignore_phones", "phone_map", "fold_from", "fold_to")
    return {k: OmegaConf.to_container(cfg.decode, resolve=True)[k] for k in keys}


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


def score_stage(cfg: DictConfig, decode_dir: Path) -> dict:
    """PER of a decode dir, reference and hypothesis folded by decode.phone_map when set and
    decode.ignore_phones removed from both: per.json (machine-readable), per.txt (per speaker), per.pra
    (each utterance's alignment with S/D/I marked, as sclite prints it), confusions.txt and confusion.png
    (also in the model's TensorBoard). With decode.sclite (auto: when sctk is installed), NIST sclite scores
    the same prepared sequences into decode_dir/sclite/ and its PER is logged beside ours."""
    read_digest(decode_dir, "decode")
    refs = {u: v.split() for u, v in read_table(decode_dir / "ref.txt").items()}
    hyps = {u: v.split() for u, v in read_table(decode_dir / "hyp.txt").items()}
    utt2spk = read_table(decode_dir / "utt2spk")
    result = score(refs, hyps, utt2spk, fold=_fold(cfg), ignore=frozenset(cfg.decode.ignore_phones))
    title = f"{decode_dir.parent.name}/{decode_dir.name}"
    write_score_report(result, decode_dir, title=title)
    writer = SummaryWriter(str(decode_dir.parent / "tensorboard"))
    write_reports(result, decode_dir, title, writer=writer)
    writer.close()
    total = result["total"]
    log.info("%s: PER %.2f%% (%d sub, %d del, %d ins of %d)", decode_dir, total["per"], total["sub"], total["del"],
             total["ins"], total["n"])  # fmt: skip
    sclite = find_sclite() if cfg.decode.sclite in ("auto", True) else None
    if cfg.decode.sclite is True and sclite is None:
        raise RecipeError("decode.sclite=true, but no sclite: install Debian's sctk (apt-get install sctk)")
    if sclite is not None:
        scored = run_sclite(*refs_hyps(result), utt2spk, decode_dir / "sclite", sclite=sclite)
        (decode_dir / "sclite.json").write_text(json.dumps({k: scored[k] for k in ("utts", "n", "corr", "sub",
                                                "del", "ins", "err", "per")}, indent=2) + "\n")  # fmt: skip
        log.info("%s: sclite PER %.2f%% (%d sub, %d del, %d ins of %d)", decode_dir, scored["per"], scored["sub"],
                 scored["del"], scored["ins"], scored["n"])  # fmt: skip
    return result


def _git_hash() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def _seconds(path: Path) -> float | None:
    return float(path.read_text()) if path.is_file() else None


def write_results(cfg: DictConfig, data_dir: Path, exp_dir: Path, results_path: Path, command: str) -> None:
    """RESULTS.md of the recipe from its decode dirs and training summaries."""
    feats = Path(data_dir) / cfg.features.name
    lines = [
        f"# Results: {cfg.recipe_name}",
        "",
        f"Generated by `run.sh` (stage 5) on {date.today().isoformat()}: git {_git_hash()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {cfg.train.num_threads} training threads, "
        f"{platform.machine()} CPU ({os.cpu_count()} cores).",
        "",
        f"Command: `{command}`",
        "",
        f"## Phone error rate (checkpoint: {cfg.decode.checkpoint})",
        "",
        "| model | decode | split | utts | PER % | Corr | Sub | Del | Ins | N |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    greedy_names = {"viterbi": "frame argmax, repeats merged", "ctc": "CTC best path"}
    for model in ("viterbi", "ctc"):
        for kind in ("greedy", "lm"):
            for split in cfg.decode.splits:
                decode_dir = exp_dir / model / f"decode_{split}_{kind}"
                if not (decode_dir / "per.json").is_file():
                    continue
                total = json.loads((decode_dir / "per.json").read_text())["total"]
                decode = greedy_names[model]
                if kind == "lm":
                    chosen = json.loads((decode_dir / "decoder.json").read_text())
                    values = ", ".join(f"{k} {v:g}" for k, v in chosen.items() if k != "decoder")
                    decode = f"{chosen['decoder']} ({values}; tuned on {cfg.decode.splits[0]})"
                counts = " | ".join(str(total[k]) for k in ("corr", "sub", "del", "ins", "n"))
                lines.append(f"| {model} | {decode} | {split} | {total['utts']} | {total['per']:.2f} | {counts} |")
    word_rows = []
    for split in cfg.decode.splits:
        wer_json = exp_dir / "ctc" / f"decode_{split}_words" / "wer.json"
        if wer_json.is_file():
            r = json.loads(wer_json.read_text())
            chosen = json.loads((wer_json.parent / "decoder.json").read_text())
            decoder = (f"{chosen['decoder']} (lm_weight {chosen['lm_weight']:g}, word_score {chosen['word_score']:g}; "
                       f"tuned on {cfg.decode.splits[0]})")  # fmt: skip
            counts = " | ".join(str(r[k]) for k in ("sub", "del", "ins", "n"))
            word_rows.append(
                f"| ctc | {decoder} | {split} | {r['utts']} | {r['wer']:.2f} | {r['ser']:.2f} | {counts} |"
            )
    if word_rows:
        lines += ["", "## Word error rate (lexicon-constrained word decoding)", "",
                  "| model | decode | split | utts | WER % | SER % | Sub | Del | Ins | N |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|", *word_rows]  # fmt: skip
    lines += ["", "## Training", "", "| model | epochs | best epoch | best dev PER % | train time s | frames/s |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for model in ("viterbi", "ctc"):
        summary_path = exp_dir / model / "train_summary.json"
        if summary_path.is_file():
            s = json.loads(summary_path.read_text())
            lines.append(f"| {model} | {s['epochs']} | {s['best']['epoch']} | {s['best']['per']:.2f} | "
                         f"{s['train_seconds']:.0f} | {s['frames_per_second']:.0f} |")  # fmt: skip
    rounds = sorted((exp_dir / "viterbi" / "ali").glob("iter*/stats.json"), key=lambda p: int(p.parent.name[4:]))
    if rounds:
        lines += ["", "## Viterbi re-alignment rounds", "",
                  "| round | train frames changed % | train log-lik/frame | dev frame acc % | dev PER % |",
                  "|---:|---:|---:|---:|---:|"]  # fmt: skip
        for path in rounds:
            r = json.loads(path.read_text())
            if r["round"] == 0:
                continue
            lines.append(f"| {r['round']} | {r['changed_frames_percent']:.2f} | {r['train_loglik_per_frame']:.3f} | "
                         f"{r['dev_frame_accuracy']:.2f} | {r['dev_per']:.2f} |")  # fmt: skip
    accuracy_rows = []
    for path in rounds:
        for name, acc in json.loads(path.read_text()).get("alignment_accuracy", {}).items():
            round_ = int(path.parent.name[4:])
            accuracy_rows.append((f"Viterbi round {round_}" + (" (flat start)" if round_ == 0 else ""), name, acc))
    for model, what in (("viterbi", "final Viterbi model, forced"), ("ctc", "final CTC model, forced_align")):
        for split in cfg.decode.splits:
            path = exp_dir / model / f"decode_{split}_greedy" / "alignment_accuracy.json"
            if path.is_file():
                accuracy_rows.append((what, split, json.loads(path.read_text())))
    if accuracy_rows:
        lines += ["", "## Alignment accuracy against the hand-labelled phone boundaries", "",
                  "Inner boundaries only; a boundary between frames t-1 and t lies at t x frame shift.", "",
                  "| alignment | set | boundaries | within 10 ms % | within 20 ms % | within 50 ms % | "
                  "mean error ms | frame agreement % |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        keys = ("within_10ms", "within_20ms", "within_50ms", "mean_abs_error_ms", "frame_agreement")
        for what, name, a in accuracy_rows:
            figures = " | ".join("n/a" if a[k] is None else f"{a[k]:.1f}" for k in keys)
            lines.append(f"| {what} | {name} | {a['matched_boundaries']} | {figures} |")
    stage_times = [
        ("0 data preparation", _seconds(Path(data_dir) / "prepare.seconds")),
        ("1 features (train, dev, test)", _sum([_seconds(feats / s / "features.seconds") for s in SPLITS])),
        ("2 Viterbi training", _seconds(exp_dir / "viterbi" / "train.seconds")),
        ("3 CTC training", _seconds(exp_dir / "ctc" / "train.seconds")),
        ("4 decoding", _sum([_seconds(p) for p in exp_dir.glob("*/decode_*/decode.seconds")])),
    ]  # fmt: skip
    lines += ["", "## Time per stage (work only, without Python start-up)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in stage_times if seconds is not None]
    results_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = results_path.with_name(results_path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(results_path)
    log.info("wrote %s", results_path)


def _sum(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None
