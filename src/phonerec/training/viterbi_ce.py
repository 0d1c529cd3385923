"""Viterbi training: flat start, frame cross-entropy on the current alignment, re-alignment on a schedule.

Alignments are artifacts: `ali/iter<N>/ali.{train,dev}.txt` (`<utt> <state>...`, one state per model output
frame) and `ali/iter<N>/stats.json`; round 0 is the flat start (uniform segmentation), round N the
re-alignment after epoch N. Each round also records, for dev: frame accuracy of the model against the dev set's
own new alignment and PER of a hybrid decode through a free phone loop (the dev PER of every epoch, which picks
best.pt; the frame argmax's PER is logged beside it), and draws one dev utterance's posteriors with its alignment
path.

The two criteria, for an utterance X with graph G (phonerec.hmm.align.build_graph) and network log-posteriors
log p(s | x_t):

    ce       -sum_t log p(a_t | x_t), a the current best path through G (hard labels; no gradient reaches the
             transitions, which are re-estimated from the best paths' counts instead)
    fullsum  -log sum_{paths q through G} prod_t p(q_t | x_t) / prior(q_t)^alpha * P_trans(q)
             (phonerec.hmm.fullsum: gradient = -(occupation of each state at each frame); for the transitions,
             -(expected arc counts)), prior = the soft priors of the batch, alpha = train.viterbi.fullsum_prior_scale

With alpha = 0 the full sum on posteriors is maximised by any single path with posterior 1 on every frame, and
training follows the one it starts to favour: silence, optional between all words, takes the part of CTC's blank
(FSDD connected digits: 90% of the training frames aligned to silence after 5 epochs, dev PER 93%). Dividing by
the soft priors makes a frame worth more to a rarely used state and stops it.
"""

import logging
import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from phonerec.base.errors import RecipeError
from phonerec.base.files import write_json_atomic, write_png_atomic, write_text_atomic
from phonerec.data.data_dir import read_table, write_table
from phonerec.data.dataset import Example
from phonerec.data.kaldi_alignment import phones_to_states, read_kaldi_alignment
from phonerec.decoding.greedy import frame_argmax
from phonerec.decoding.hybrid import loop_search_batch, path_labels, phone_loop, scaled_log_likelihoods
from phonerec.hmm.align import (
    BranchedGraph,
    Pronunciation,
    Topology,
    align_utterances,
    chosen_pronunciations,
    log_state_priors,
    silences_taken,
    soft_log_priors,
    uniform_alignment,
    utterance_graph,
)
from phonerec.hmm.align_eval import ACCURACY_KEYS, evaluate_alignment, format_accuracy, state_segments
from phonerec.hmm.fullsum import fullsum_loglik
from phonerec.hmm.transitions import TransitionCounts, Transitions
from phonerec.model.posteriors import utterance_posteriors
from phonerec.training import distributed

log = logging.getLogger(__name__)
IGNORE = -100  # target of frames that no alignment covers (padding)


class ViterbiTask:
    """Frame cross-entropy on the current alignment (phonerec.training.loop.Task): round 0 is the flat start,
    and after each epoch of train.viterbi.realign_epochs the training and dev data are re-aligned. With
    train.viterbi.criterion=fullsum the loss is instead -log p(X | graph) summed over all paths of each
    utterance's graph, per frame; the alignments are still made and kept each round, for the priors, the
    statistics and the alignment accuracy.

    `transitions` (phonerec.hmm.transitions; None: every arc weighs 0) weight the arcs of alignment, of the
    full-sum and of the dev decode. Learned ones (train_transitions) are parameters of the full-sum criterion,
    trained with the network; with cross-entropy they are re-estimated from the training set's best paths at
    each re-alignment."""

    kind = "viterbi"

    def __init__(
        self,
        exp_dir: Path,
        topo: Topology,
        train: list[Example],
        dev: list[Example],
        vcfg,
        tcfg,
        id2phone: dict[int, str],
        dev_per,
        optional_silence: bool = True,
        reference: dict[str, dict] | None = None,
        frame_timing: tuple[float, float] = (0.01, 0.0),
        transitions: Transitions | None = None,
        train_transitions: bool = False,
        estimate_pronunciations: bool = False,
    ):
        self.exp_dir, self.topo, self.vcfg, self.tcfg = exp_dir, topo, vcfg, tcfg
        self.sets = {"train": train, "dev": dev}
        self.id2phone, self.dev_per = id2phone, dev_per  # dev_per(refs, hyps): scoring.error_rate.dev_per_scorer
        self.optional_silence = optional_silence
        self.transitions, self.train_transitions = transitions, train_transitions
        # hmm.pronunciations=variants: the pronunciation each word occurrence's best path took (index into
        # Example.pronunciations, lexicon order), per set and utterance, as of the current round
        self.choices: dict[str, dict[str, list[int]]] = {name: {} for name in self.sets}
        # hmm.pronunciation_probs=estimated: word -> {phones: probability}, re-estimated each round from the training
        # set's choices (None until the first round); they weigh the graphs' branches in place of the lexicon's
        self.estimate_pronunciations = estimate_pronunciations
        self.pronunciation_probs: dict[str, dict[str, float]] | None = None
        # and with optional silence, word -> {phones: [P(silence after), correction after silence, after none]};
        # the silences each path took (at the start and after each word) are what they are counted from
        self.silence_probs: dict[str, dict[str, list[float]]] | None = None
        self.silences: dict[str, dict[str, list[bool]]] = {name: {} for name in self.sets}
        self.graphs = {name: {e.utt: self._graph(e) for e in examples} for name, examples in self.sets.items()}
        self.reference = reference or {}
        self.frame_shift, self.frame_offset = frame_timing  # align_eval's segment timing
        self.alignments: dict[str, dict[str, torch.Tensor]] = {}
        self.round = 0
        self.log_priors: torch.Tensor | None = None

    def _graph(self, e: Example):
        """The utterance's alignment graph; branched where the silences its paths take are counted
        (silences_taken, for the estimated silence probabilities)."""
        counted = self.estimate_pronunciations and self.optional_silence
        return utterance_graph(e.phones, e.word_ends, e.pronunciations, self.topo, self.optional_silence, counted)

    # -- alignments on disk ------------------------------------------------------------------------
    def _ali_dir(self, round_: int) -> Path:
        return self.exp_dir / "ali" / f"iter{round_}"

    def _save_round(self, round_: int, stats: dict) -> None:
        ali_dir = self._ali_dir(round_)
        for name, alis in self.alignments.items():
            write_table(ali_dir / f"ali.{name}.txt", {u: " ".join(map(str, a.tolist())) for u, a in alis.items()})
            if self._has_variants(name):  # the chosen pronunciations, and their phones (Kaldi's ali-to-phones)
                choices = self.choices[name]
                write_table(ali_dir / f"prons.{name}.txt", {u: " ".join(map(str, c)) for u, c in choices.items()})
                write_table(ali_dir / f"phones.{name}.txt", self.chosen_phones(name))
        if self.silence_probs is not None:  # as Kaldi's lexiconp_silprob.txt (its probability column: the above)
            lines = (
                f"{w} {self.pronunciation_probs[w][pron]:.6g} {' '.join(f'{x:.6g}' for x in values)} {pron}\n"
                for w, probs in self.silence_probs.items()
                for pron, values in probs.items()
            )
            write_text_atomic(ali_dir / "lexiconp_silprob.txt", "".join(lines))
        if self.pronunciation_probs is not None:  # as Kaldi's lexiconp.txt: `<word> <probability> <phones>`
            lines = (
                f"{w} {p:.6g} {pron}\n" for w, probs in self.pronunciation_probs.items() for pron, p in probs.items()
            )
            write_text_atomic(ali_dir / "lexiconp.txt", "".join(lines))
        write_json_atomic(ali_dir / "stats.json", stats)

    def _has_variants(self, name: str) -> bool:
        return any(e.pronunciations is not None for e in self.sets[name])

    def chosen_phones(self, name: str) -> dict[str, str]:
        """Each aligned utterance's phones as its words' chosen pronunciations spell them (the first pronunciation
        for an utterance whose round chose none)."""
        out = {}
        for e in self.sets[name]:
            if e.utt not in self.alignments[name]:
                continue
            choice = self.choices[name].get(e.utt, [0] * len(e.pronunciations))
            phones = [p for prons, k in zip(e.pronunciations, choice, strict=True) for p in prons[k].phones]
            out[e.utt] = " ".join(self.id2phone[p] for p in phones)
        return out

    def _load_round(self, round_: int) -> None:
        ali_dir = self._ali_dir(round_)
        self.alignments = {}
        for name in self.sets:
            table = read_table(ali_dir / f"ali.{name}.txt")
            self.alignments[name] = {u: torch.tensor([int(s) for s in v.split()]) for u, v in table.items()}
            prons = ali_dir / f"prons.{name}.txt"
            self.choices[name] = (
                {u: [int(k) for k in v.split()] for u, v in read_table(prons).items()} if prons.is_file() else {}
            )
        self.round = round_
        self._update_priors()

    def _update_priors(self) -> None:
        counts = torch.zeros(self.topo.num_states)
        for ali in self.alignments["train"].values():
            counts += torch.bincount(ali, minlength=self.topo.num_states)
        self.log_priors = log_state_priors(counts) if self.vcfg.use_priors else None

    # -- the task interface of phonerec.training.loop.train -----------------------------------------------
    def start(self, model) -> None:
        """Round 0: uniform segmentation of every utterance over its phones' states (flat start); with
        train.viterbi.init_alignment, a Kaldi per-frame phone alignment for the utterances it holds instead
        (phonerec.data.kaldi_alignment; subsampled as the model subsamples), the flat start for the others."""
        kaldi = self._kaldi_alignment()
        for name, examples in self.sets.items():
            self.alignments[name] = {}
            for e in examples:
                frames = int(model.output_lengths(torch.tensor([e.feats.shape[0]]))[0])
                if e.utt in kaldi:
                    states = self._kaldi_states(e, *kaldi[e.utt])
                    self.alignments[name][e.utt] = torch.tensor(states[:: model.subsample][:frames])
                    continue
                try:
                    flat = uniform_alignment(frames, e.phones, self.topo, edge_silence=self.optional_silence)
                    self.alignments[name][e.utt] = torch.tensor(flat)
                except ValueError as err:
                    log.warning("flat start: %s utterance %s skipped: %s", name, e.utt, err)
        self.choices = {  # the first pronunciations, as the flat start segments them
            name: {
                e.utt: [0] * len(e.pronunciations)
                for e in examples
                if e.pronunciations and e.utt in self.alignments[name]
            }
            for name, examples in self.sets.items()
        }
        self._update_priors()
        kind = "flat start" if not kaldi else f"Kaldi alignment {self.vcfg.init_alignment}, flat start for the rest"
        stats = {"round": 0, "kind": kind, **self._coverage(), "alignment_accuracy": self.alignment_accuracy()}
        self._save_round(0, stats)

    def _kaldi_alignment(self) -> dict[str, tuple[list[int], int]]:
        """The Kaldi first alignment (train.viterbi.init_alignment; the stage checked it and its phones.txt),
        {} without one."""
        path = self.vcfg.init_alignment
        if path is None:
            return {}
        phone_ids = {p: i for i, p in self.id2phone.items()}
        found = read_kaldi_alignment(Path(path), Path(self.vcfg.init_alignment_phones), phone_ids)
        held = {name: sum(e.utt in found for e in examples) for name, examples in self.sets.items()}
        if not held["train"]:
            raise RecipeError(f"{path}: holds none of the {len(self.sets['train'])} training utterances")
        log.info(
            "first alignment from %s: %d of %d training and %d of %d dev utterances; the flat start for the rest",
            *(path, held["train"], len(self.sets["train"]), held["dev"], len(self.sets["dev"])),
        )
        return found

    def _kaldi_states(self, example: Example, frame_phones: list[int], lineno: int) -> list[int]:
        if len(frame_phones) != example.feats.shape[0]:
            raise RecipeError(
                f"{self.vcfg.init_alignment}:{lineno}: utterance '{example.utt}' has {len(frame_phones)} frames "
                f"there and {example.feats.shape[0]} in its features (another frame shift or feature dir?)"
            )
        return phones_to_states(frame_phones, self.topo)

    def state(self) -> dict:
        # The priors, transitions and estimated pronunciation probabilities travel with the model: hybrid decoding
        # and forced alignment with it need them.
        transitions = None if self.transitions is None else self.transitions.state_dict()
        state = {"round": self.round, "log_priors": self.log_priors, "transitions": transitions}
        if self.pronunciation_probs is not None:
            state["pronunciation_probs"] = self.pronunciation_probs
        if self.silence_probs is not None:
            state["silence_probs"] = self.silence_probs
        return state

    def load_state(self, state: dict) -> None:
        self._load_round(state["round"])
        if self.transitions is not None:
            self.transitions.load_state_dict(state["transitions"])
        if state.get("pronunciation_probs") is not None:
            self._weigh_pronunciations(state["pronunciation_probs"], state.get("silence_probs"))

    # -- pronunciation probabilities (hmm.pronunciation_probs=estimated) ------------------------------------------
    def _estimate_pronunciations(self) -> dict[str, dict[str, float]]:
        """Each word's pronunciation probabilities from how often the training set's best paths chose each:
        count + 1, max-normalised per word (Kaldi's steps/get_prons.sh and utils/dict_dir_add_pronprobs.sh)."""
        counts: dict[str, dict[str, int]] = {}
        for e in self.sets["train"]:
            if e.pronunciations is None:
                continue
            choice = self.choices["train"].get(e.utt)
            for k, (word, prons) in enumerate(zip(e.words, e.pronunciations, strict=True)):
                seen = counts.setdefault(word, {})
                for pron in prons:
                    seen.setdefault(self._spelling(pron), 0)
                if choice is not None:
                    seen[self._spelling(prons[choice[k]])] += 1
        return {w: {p: (c + 1) / (max(seen.values()) + 1) for p, c in seen.items()} for w, seen in counts.items()}

    def _estimate_silences(self, lambda2: float = 2.0, lambda3: float = 2.0) -> dict[str, dict[str, list[float]]]:
        """Each pronunciation's silence probabilities from the silences the training set's best paths took, as
        Kaldi's utils/dict_dir_add_pronprobs.sh computes them (Chen et al. 2015): P(silence after p) =
        (silences after p + lambda2 P) / (occurrences of p + lambda2), P the share of words followed by silence; and
        the corrections of entering p after a silence or none, (how often it was + lambda3) / (how often the
        P(silence after) of what preceded it expects it + lambda3), the start's expectation the share of paths
        that start with a silence."""
        occurrences = []  # (word, pronunciation, silence before, silence after, the previous pronunciation or None)
        for e in self.sets["train"]:
            choice, taken = self.choices["train"].get(e.utt), self.silences["train"].get(e.utt)
            if e.pronunciations is None or choice is None or taken is None:
                continue
            previous = None
            for k, (word, prons) in enumerate(zip(e.words, e.pronunciations, strict=True)):
                pron = (word, self._spelling(prons[choice[k]]))
                occurrences.append((*pron, taken[k], taken[k + 1], previous))
                previous = pron
        if not occurrences:
            return {}
        overall = sum(o[3] for o in occurrences) / len(occurrences)
        starts = [o for o in occurrences if o[4] is None]
        at_start = sum(o[2] for o in starts) / max(len(starts), 1)
        counts: dict[tuple[str, str], list[float]] = {}  # occurrences, silences after
        for word, pron, _, after, _ in occurrences:
            seen = counts.setdefault((word, pron), [0, 0])
            seen[0] += 1
            seen[1] += after
        after_p = {key: (s + lambda2 * overall) / (c + lambda2) for key, (c, s) in counts.items()}
        before: dict[tuple[str, str], list[float]] = {}  # silence before: seen, expected; none: seen, expected
        for word, pron, silence, _, previous in occurrences:
            expected = at_start if previous is None else after_p[previous]
            row = before.setdefault((word, pron), [0.0, 0.0, 0.0, 0.0])
            row[0] += silence
            row[1] += expected
            row[2] += not silence
            row[3] += 1 - expected
        out: dict[str, dict[str, list[float]]] = {}
        for (word, pron), (s_seen, s_expected, n_seen, n_expected) in before.items():
            out.setdefault(word, {})[pron] = [
                after_p[word, pron],
                (s_seen + lambda3) / (s_expected + lambda3),
                (n_seen + lambda3) / (n_expected + lambda3),
            ]
        return out

    def _spelling(self, pron) -> str:
        return " ".join(self.id2phone[p] for p in pron.phones)

    def _weigh_pronunciations(self, probs: dict[str, dict[str, float]], silence: dict | None = None) -> None:
        """Weigh every example's branches by `probs` and their silences by `silence` (words or pronunciations they
        lack keep their weights) and rebuild the graphs."""
        self.pronunciation_probs, self.silence_probs = probs, silence
        for name, examples in self.sets.items():
            for e in examples:
                if e.pronunciations is None:
                    continue
                e.pronunciations = [
                    [self._weighed(w, p, probs, silence or {}) for p in prons]
                    for w, prons in zip(e.words, e.pronunciations, strict=True)
                ]
                self.graphs[name][e.utt] = self._graph(e)

    def _weighed(self, word: str, pron: Pronunciation, probs: dict, silence: dict) -> Pronunciation:
        spelling = self._spelling(pron)
        log_prob = math.log(probs[word][spelling]) if spelling in probs.get(word, {}) else pron.log_prob
        found = silence.get(word, {}).get(spelling)
        fields = (
            dict(zip(("silence_after", "silence_before", "no_silence_before"), found, strict=True)) if found else {}
        )
        return replace(pron, log_prob=log_prob, **fields)

    def parameters(self) -> list[torch.nn.Parameter]:
        """The learned transitions under the full-sum criterion: trained with the network."""
        if self.train_transitions and self.vcfg.criterion == "fullsum":
            return list(self.transitions.parameters())
        return []

    def train_examples(self, train: list[Example]) -> list[Example]:
        return [e for e in train if e.utt in self.alignments["train"]]

    def _fullsum(self, log_probs, lengths, examples, name):
        """-log p(X | graph), summed over every path of each utterance's graph (phonerec.hmm.fullsum), and the
        frames of the utterances that have a path. The frame scores are the log-posteriors divided by the soft
        state priors ^ train.viterbi.fullsum_prior_scale: the mean posterior of the batch's own frames, held
        constant (`soft_log_priors`). Not by the alignment's priors, as alignment uses them: those lag a round
        behind, log(p / prior) reaches -log prior for a rare state, and training drove every frame to rare states
        (FSDD connected digits: -4.7 per frame, 97% of the frames' labels changed in a round). Without a prior
        (scale 0) silence takes the part of CTC's blank (module docstring of phonerec.training.viterbi_ce)."""
        graphs = [self.graphs[name][e.utt] for e in examples]
        scale = self.vcfg.fullsum_prior_scale
        if scale:
            log_probs = log_probs - scale * soft_log_priors(log_probs.detach(), lengths)
        loglik = fullsum_loglik(log_probs, lengths, graphs, self.topo, self.transitions)
        found = torch.isfinite(loglik)
        return -loglik[found].sum(), int(lengths.to(found.device)[found].sum())

    def loss(self, model, feats, lengths, examples):
        log_probs, out_lengths = model(feats, lengths)
        if self.vcfg.criterion == "fullsum":
            loss, frames = self._fullsum(log_probs, out_lengths, examples, "train")
            return loss / max(frames, 1), frames
        targets = torch.full(log_probs.shape[:2], IGNORE, dtype=torch.long)
        for b, e in enumerate(examples):
            ali = self.alignments["train"][e.utt]
            targets[b, : len(ali)] = ali
        frames = int((targets != IGNORE).sum())
        targets = targets.to(log_probs.device)
        loss = F.nll_loss(log_probs.transpose(1, 2), targets, ignore_index=IGNORE, reduction="sum") / frames
        return loss, frames

    def _posteriors(self, model, examples):
        return utterance_posteriors(model, examples, self.tcfg.batch_frames, self.tcfg.max_batch_utts)

    def validate(self, model) -> dict:
        dev = self.sets["dev"]
        loss = correct = frames = 0.0
        refs, argmax_hyps, posteriors = {}, {}, []
        scored = [(e, lp.cpu()) for e, lp in self._posteriors(model, dev)]  # the searches run on the CPU
        if self.vcfg.criterion == "fullsum":  # in batches as in training, each with its soft priors
            aligned = [(e, lp) for e, lp in scored if e.utt in self.alignments["dev"]]
            for start in range(0, len(aligned), self.tcfg.max_batch_utts):
                chunk = aligned[start : start + self.tcfg.max_batch_utts]
                lengths = torch.tensor([len(lp) for _, lp in chunk])
                padded = torch.nn.utils.rnn.pad_sequence([lp for _, lp in chunk], batch_first=True)
                loss += self._fullsum(padded, lengths, [e for e, _ in chunk], "dev")[0].item()
        for example, log_probs in scored:
            ali = self.alignments["dev"].get(example.utt)
            if ali is not None:
                if self.vcfg.criterion == "ce":
                    loss += F.nll_loss(log_probs, ali, reduction="sum").item()
                correct += (log_probs.argmax(-1) == ali).sum().item()
                frames += len(ali)
            hyp = frame_argmax(log_probs.unsqueeze(0), torch.tensor([len(log_probs)]), self.topo.state_to_phone())[0]
            refs[example.utt] = [self.id2phone[p] for p in example.phones]
            argmax_hyps[example.utt] = [self.id2phone[p] for p in hyp]
            posteriors.append((example.utt, log_probs))
        hyps = self._phone_loop_decode(posteriors)
        figures = {
            "loss": loss / max(frames, 1),
            "frame_accuracy": 100 * correct / max(frames, 1),
            "per": self.dev_per(refs, hyps),
            "argmax_per": self.dev_per(refs, argmax_hyps),
        }
        if "dev" in self.reference:  # the model's own forced alignment of dev, for best_alignment.pt
            accuracy = self._accuracy("dev", self._realign_scored(scored, "dev")[0])
            if accuracy["within_20ms"] is not None:
                figures |= {
                    "alignment_within_20ms": accuracy["within_20ms"],
                    "alignment_error_ms": accuracy["mean_abs_error_ms"],
                }
        return figures

    def _phone_loop_decode(self, posteriors: list[tuple[str, torch.Tensor]]) -> dict[str, list[str]]:
        """Hybrid Viterbi decoding through a free phone loop (no LM), on posteriors / priors^prior_scale: the
        model as an HMM system uses it. The frame argmax would judge the model by its flicker between states, which
        grows as it sharpens (on the TIMIT sample its PER rose from 74 to 88 as the phone loop's fell from 82 to
        67)."""
        graph, phone_ids = phone_loop(None, self.id2phone, self.topo, transitions=self.transitions)
        hyps = {}
        for start in range(0, len(posteriors), self.tcfg.max_batch_utts):
            chunk = posteriors[start : start + self.tcfg.max_batch_utts]
            scores = [scaled_log_likelihoods(lp, self.log_priors, self.vcfg.prior_scale) for _, lp in chunk]
            paths = loop_search_batch(scores, graph, names=[utt for utt, _ in chunk])
            for (utt, _), path in zip(chunk, paths, strict=True):
                hyps[utt] = [self.id2phone[p] for p in path_labels(path, phone_ids)]
        return hyps

    def end_of_epoch(self, model, epoch: int, writer) -> None:
        """A re-alignment round after the epochs of train.viterbi.realign_epochs. Under torchrun every rank
        aligns its share of the utterances (benchmarks/RESULTS.md: faster than rank 0 alone with all the threads);
        rank 0 gathers them and finishes the round alone (the loop then hands its state to the others)."""
        if epoch not in self.vcfg.realign_epochs:
            return
        counts = TransitionCounts(self.topo.num_states)
        share = slice(distributed.rank(), None, distributed.world_size())
        found = {
            name: self._realign(model, examples[share], name, counts if name == "train" else None)
            for name, examples in self.sets.items()
        }
        gathered = distributed.gather((found, counts))
        if distributed.is_main():
            with distributed.main_alone(self.tcfg.num_threads):
                self._finish_round(model, epoch, writer, gathered)

    def _finish_round(self, model, epoch: int, writer, gathered: list) -> None:
        """The round from every rank's (alignments, log-likelihood, frames, skipped) per set and transition
        counts: the new alignments, transitions and priors, the round's statistics, files and TensorBoard."""
        previous = self.alignments
        self.alignments, logliks, frames, skipped = {}, {}, {}, {}
        for name, examples in self.sets.items():
            shares = [found[name] for found, _ in gathered]
            merged = {u: a for alignments, *_ in shares for u, a in alignments.items()}
            dropped = {u for share in shares for u in share[3]}
            chosen = {u: c for share in shares for u, c in share[4].items()}
            taken = {u: t for share in shares for u, t in share[5].items()}
            self.alignments[name] = {e.utt: merged[e.utt] for e in examples if e.utt in merged}  # in corpus order
            self.choices[name] = {e.utt: chosen[e.utt] for e in examples if e.utt in chosen}
            self.silences[name] = {e.utt: taken[e.utt] for e in examples if e.utt in taken}
            logliks[name] = sum(share[1] for share in shares)
            frames[name] = sum(share[2] for share in shares)
            skipped[name] = [e.utt for e in examples if e.utt in dropped]
        counts = gathered[0][1]
        for _, more in gathered[1:]:
            counts.merge(more)
        if self.train_transitions and self.vcfg.criterion == "ce":  # the M-step of Viterbi training
            self.transitions.estimate(counts)
        if self.estimate_pronunciations:
            silence = self._estimate_silences() if self.optional_silence else None
            self._weigh_pronunciations(self._estimate_pronunciations(), silence)
        before = previous["train"]
        changed = sum((before[u] != a).sum().item() for u, a in self.alignments["train"].items() if u in before)
        self.round = epoch
        self._update_priors()
        valid = self.validate(model)
        stats = {
            "round": epoch,
            "kind": "re-alignment after epoch",
            "changed_frames_percent": 100 * changed / max(frames["train"], 1),
            "train_loglik_per_frame": logliks["train"] / max(frames["train"], 1),
            "dev_loglik_per_frame": logliks["dev"] / max(frames["dev"], 1),
            "dev_frame_accuracy": valid["frame_accuracy"],
            "dev_per": valid["per"],
            "skipped": skipped,
            "transitions": None if self.transitions is None else self.transitions.summary(),
            **self._variant_shares(),
            **self._coverage(),
            "alignment_accuracy": self.alignment_accuracy(),
        }
        self._save_round(epoch, stats)
        figure = self._plot(model)
        write_png_atomic(self._ali_dir(epoch) / "dev_posteriors.png", figure, dpi=80)
        writer.add_figure("4_realign/dev_posteriors", figure, epoch)
        for key in ("changed_frames_percent", "train_loglik_per_frame", "dev_frame_accuracy", "dev_per"):
            writer.add_scalar(f"4_realign/{key}", stats[key], epoch)
        if self.transitions is not None:
            for key, value in stats["transitions"].items():
                writer.add_scalar(f"6_transitions/{key}", value, epoch)
            log.info(
                "round %d, transitions: %s", epoch, ", ".join(f"{k} {v:.3f}" for k, v in stats["transitions"].items())
            )
        for name, accuracy in stats["alignment_accuracy"].items():
            for key in ACCURACY_KEYS:
                if accuracy[key] is not None:
                    writer.add_scalar(f"5_align_accuracy/{name}_{key}", accuracy[key], epoch)
            log.info("round %d, %s alignment vs hand labels: %s", epoch, name, format_accuracy(accuracy))
        log.info(
            "re-alignment round %d: %.2f%% of train frames changed, log-likelihood per frame %.3f, "
            "dev frame accuracy %.2f%%, dev PER %.2f%%",
            epoch,
            stats["changed_frames_percent"],
            stats["train_loglik_per_frame"],
            valid["frame_accuracy"],
            valid["per"],
        )

    def _realign(self, model, examples, name, counts=None):
        return self._realign_scored(list(self._posteriors(model, examples)), name, counts)

    def _realign_scored(self, scored, name, counts=None):
        """The best paths of the (example, log-posteriors) pairs of set `name`: (alignments, total log-likelihood,
        frames, the utterances without a path, the pronunciations chosen where words have several, the silences
        taken where the graphs tell: silences_taken)."""
        alignments, total_loglik, total_frames, skipped, choices, silences = {}, 0.0, 0, [], {}, {}
        for start in range(0, len(scored), self.tcfg.max_batch_utts):
            chunk = scored[start : start + self.tcfg.max_batch_utts]
            graphs = [self.graphs[name][e.utt] for e, _ in chunk]
            found = align_utterances(
                [lp for _, lp in chunk],
                graphs,
                self.topo,
                self.log_priors,
                self.vcfg.prior_scale,
                self.transitions,
                counts,
                nodes=True,
            )
            for (e, _), graph, (nodes, loglik) in zip(chunk, graphs, found, strict=True):  # on the CPU
                if nodes is None:
                    skipped.append(e.utt)
                    continue
                alignments[e.utt] = torch.tensor(graph.states)[nodes]
                total_loglik += loglik
                total_frames += len(nodes)
                if e.pronunciations is not None:
                    choices[e.utt] = chosen_pronunciations(graph, nodes.tolist(), len(e.pronunciations))
                    if isinstance(graph, BranchedGraph) and self.optional_silence:
                        silences[e.utt] = silences_taken(graph, nodes.tolist(), len(e.pronunciations))
        if skipped:
            log.warning(
                "%s: %d utterances have fewer frames than their graph needs, skipped: %s",
                name,
                len(skipped),
                " ".join(skipped[:10]),
            )
        return alignments, total_loglik, total_frames, skipped, choices, silences

    def alignment_accuracy(self) -> dict:
        """The current alignments against the hand-labelled segments, where a set has them (TIMIT)."""
        return {name: self._accuracy(name, self.alignments[name]) for name in self.reference}

    def _accuracy(self, name: str, alignments: dict[str, torch.Tensor]) -> dict:
        hyp = {
            utt: state_segments(ali.tolist(), self.topo, self.id2phone, self.frame_shift, self.frame_offset)
            for utt, ali in alignments.items()
        }
        return evaluate_alignment(self.reference[name], hyp, self.frame_shift)

    def _variant_shares(self) -> dict:
        """The share of word occurrences whose best path took another pronunciation than the first, per set
        with variants (the round statistics)."""
        shares = {}
        for name in self.sets:
            if self._has_variants(name):
                taken = [k for choice in self.choices[name].values() for k in choice]
                shares[f"{name}_other_pronunciation_percent"] = 100 * sum(k > 0 for k in taken) / max(len(taken), 1)
        return shares

    def _coverage(self) -> dict:
        return {f"{name}_aligned": len(self.alignments[name]) for name in self.sets} | {
            f"{name}_utterances": len(examples) for name, examples in self.sets.items()
        }

    @property
    def criterion(self) -> str:
        return self.vcfg.criterion

    def _plot(self, model):
        """The first dev utterance's state posteriors along its alignment: a row per HMM state the alignment
        passes, in the transcript's order (a phone spoken twice has its rows twice), so the path runs diagonally;
        sized to the utterance (about 40 frames an inch across, a tenth of an inch a row, within limits), the path
        a thin line that leaves the posteriors visible, each phone named once, at its middle state."""
        example = self.sets["dev"][0]
        _, log_probs = next(self._posteriors(model, [example]))
        posteriors = log_probs.cpu().exp()
        ali = self.alignments["dev"].get(example.utt)
        frames = len(posteriors)
        states_per_phone, state_to_phone = self.topo.states_per_phone, self.topo.state_to_phone()
        if ali is None:  # not aligned (too short for its transcript): every state, in id order
            rows, path = list(range(posteriors.shape[1])), None
        else:
            starts = [0] + [t for t in range(1, len(ali)) if ali[t] != ali[t - 1]]
            rows = [int(ali[t]) for t in starts]
            path = [
                k
                for k, (start, end) in enumerate(zip(starts, [*starts[1:], len(ali)], strict=True))
                for _ in range(start, end)
            ]
        width = min(max(6.0, frames / 40 + 1.5), 40.0)
        height = min(max(3.0, len(rows) / 10 + 1.2), 30.0)
        fig = Figure(figsize=(width, height))
        ax = fig.subplots()
        image = posteriors[:, rows].T.numpy()
        ax.imshow(image, origin="lower", aspect="auto", cmap="Greys", interpolation="nearest", vmin=0.0, vmax=1.0)
        if path is not None:
            ax.plot(range(len(path)), path, color="red", linewidth=0.6, alpha=0.5, label="alignment")
            ax.legend(loc="upper left", fontsize=7)
        middle = [k for k, state in enumerate(rows) if state % states_per_phone == states_per_phone // 2]
        ax.set_yticks(middle, [self.id2phone[state_to_phone[rows[k]]] for k in middle], fontsize=7)
        for k, state in enumerate(rows):
            if k and state % states_per_phone == 0:  # a phone's first state: a faint line between phones
                ax.axhline(k - 0.5, color="0.85", linewidth=0.4)
        ax.set_xlabel("frame")
        ax.set_ylabel("HMM states of the transcript, in order" if path is not None else "HMM state")
        ax.set_title(f"{example.utt}: state posteriors (grey) and alignment (red), round {self.round}", fontsize=9)
        fig.tight_layout()
        return fig
