"""The decoders of stage 4, one class each behind one interface, and the one registry that finds them.

A decoder turns one model's log-posteriors into hypotheses. It says which config keys it reads (`keys`, added to
the decode stage's own, so its settings are hashed), what it is tuned over (`grid()`: the points of its tuning
grid on dev; untuned decoders have the one empty point), how to decode at one point (`decode`), and how it is
scored (`metric`: a PhoneDecoder is scored by PER on phones, a WordDecoder by WER on words).
phonerec.pipeline.decode_stages runs every decoder the same way: a tuned one is tuned on dev (the first split of
decode.splits, as run.sh passes them), and the other splits are decoded once with the values chosen there.

A new decoder is a subclass of PhoneDecoder or WordDecoder with its name, kind and title, its settings in
conf/decode/, and its name in decode.decoders; the stage and run.sh stay as they are.

    name    greedy   lm                                      words
    ctc     CTCGreedy  CTCBeamLM (prefix beam search + phone LM)  CTCLexiconWords (lexicon beam search + word LM)
    viterbi FrameArgmax  HybridPhoneLM (hybrid Viterbi, phone loop)  HybridWordLoop (hybrid Viterbi, word loop)
"""

import contextlib
import functools
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import ClassVar

import torch
from omegaconf import DictConfig
from torchaudio.models.decoder import ctc_decoder

from phonerec.base.config import StageKeys
from phonerec.base.errors import RecipeError
from phonerec.base.schema import DECODERS
from phonerec.data.data_dir import read_table
from phonerec.data.dataset import Example, make_batches
from phonerec.data.lang import (
    Lexicon,
    ignored_in_scoring,
    read_id2phone,
    read_lexicon,
    read_pronunciation_probabilities,
    read_topology,
)
from phonerec.decoding import hybrid
from phonerec.decoding.ctc_beam import PronunciationLMScorer, ctc_beam_decode, make_ctc_beam_decoder
from phonerec.decoding.greedy import ctc_greedy, frame_argmax
from phonerec.decoding.lm import NgramLM
from phonerec.hmm.align import Topology, align_utterances, chosen_pronunciations, utterance_graph
from phonerec.hmm.align_eval import Segment, alignment_gap, ctc_scored_segments, graph_segments
from phonerec.hmm.fullsum import ctc_min_frames
from phonerec.hmm.timing import FRAME_TIMING, frame_timing
from phonerec.hmm.transitions import Transitions
from phonerec.scoring.error_rate import PHONE_SCORING, score, scoring_fold, word_error_rates

log = logging.getLogger(__name__)

Hyps = dict[str, list[str]]
_REGISTRY: dict[tuple[str, str], type["Decoder"]] = {}


class Decoder:
    """name    its entry in decode.decoders, and its decode dirs: decode_<split>_<name>
    kind       the model it decodes: "viterbi" or "ctc" (a checkpoint's kind)
    title      how tuning.json, decoder.json and RESULTS.md name it
    metric     "per" or "wer": what it is scored by (a PhoneDecoder or a WordDecoder)
    tuned      whether `grid()` is tuned on dev (else it is decoded with its one point everywhere)
    uses_lm    whether it reads the LM dir (its digest then covers the LMs)
    word_ends  whether it needs where words end (for optional silence between words; hmm.optional_silence)
    keys       the config keys it reads besides the decode stage's
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    title: ClassVar[str]
    metric: ClassVar[str]
    tuned: ClassVar[bool] = True
    uses_lm: ClassVar[bool] = True
    word_ends: ClassVar[bool] = False
    keys: ClassVar[StageKeys] = StageKeys(hashed=())

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name not in DECODERS:  # the config's check of decode.decoders knows the names from there
                raise TypeError(f"decoder '{cls.name}': declare its name in phonerec.base.schema.DECODERS")
            _REGISTRY[(cls.kind, cls.name)] = cls

    def __init__(self, cfg: DictConfig, lang_dir: Path, lm_dir: Path, checkpoint: dict):
        self.cfg, self.lang_dir, self.lm_dir, self.checkpoint = cfg, lang_dir, lm_dir, checkpoint
        self.id2phone = read_id2phone(lang_dir)
        self.tokens = [self.id2phone[i] for i in range(len(self.id2phone))]  # the model's outputs, blank first

    @functools.cached_property
    def transitions(self) -> Transitions | None:
        """A Viterbi model's HMM transition probabilities (its checkpoint's), None for a model without them."""
        state = self.checkpoint.get("task", {}).get("transitions")
        return None if state is None else Transitions.from_state_dict(state)

    @functools.cached_property
    def topo(self) -> Topology:
        """The HMM topology of a Viterbi model's outputs (lang/states.txt, hmm.states_per_phone)."""
        return read_topology(self.lang_dir, self.cfg)

    def grid(self) -> list[dict]:
        return [{}]

    def decode(self, point: dict, examples: list[Example], posteriors: list[torch.Tensor]) -> Hyps:
        """Hypotheses of every utterance at one grid point."""
        raise NotImplementedError

    def references(self, feat_dir: Path, examples: list[Example]) -> Hyps:
        raise NotImplementedError

    def figures(self, refs: Hyps, hyps: Hyps, utt2spk: dict[str, str]) -> dict:
        """What tuning scores at a grid point; the first value is the one minimised."""
        raise NotImplementedError

    def aligned_segments(self, examples: list[Example], posteriors: list[torch.Tensor]) -> dict | None:
        """Each utterance's transcript (its phones and word ends) aligned to its frames, where the decoder's model
        gives alignments (None otherwise): utterance -> [(phone segment, index of the phone in the transcript, or
        None for an optional silence)], utterances that the alignment cannot fit left out."""
        return None

    def scored_alignments(
        self, examples: list[Example], posteriors: list[torch.Tensor]
    ) -> tuple[dict | None, dict, dict]:
        """aligned_segments, utterance -> (the log-likelihood per frame of its alignment, and how far that lies
        below the best path through the frames free of any transcript, per frame: align_eval.alignment_gap) where the
        decoder's model scores one (the Viterbi model: the path's scaled log-likelihoods, as MFA reports them; the
        CTC model: the forced path's log-posteriors), and utterance -> the
        pronunciation its path chose for each word, where the example has several (Example.pronunciations; the
        segments' phone indices are into the phones of those)."""
        return self.aligned_segments(examples, posteriors), {}, {}


def decoder_names(kind: str) -> list[str]:
    """The decoders there are for a model of this kind."""
    return sorted(n for k, n in _REGISTRY if k == kind)


def decoder_class(kind: str, name: str) -> type[Decoder]:
    """The decoder called `name` for a model of this kind."""
    found = _REGISTRY.get((kind, name))
    if found is None:
        names = ", ".join(decoder_names(kind))
        raise RecipeError(f"decode.decoders: no decoder '{name}' for a {kind} model (there are: {names})")
    return found


def decoder_metric(name: str) -> str:
    """The metric of the decoders called `name` (the same for both model kinds)."""
    metrics = {cls.metric for (_, n), cls in _REGISTRY.items() if n == name}
    if len(metrics) != 1:
        raise RecipeError(f"no decoder '{name}' (there are: {', '.join(sorted({n for _, n in _REGISTRY}))})")
    return metrics.pop()


class PhoneDecoder(Decoder):
    """Hypotheses are phone sequences, scored by PER after the scoring fold and ignored phones (score.*)."""

    metric = "per"
    SCORING_KEYS = PHONE_SCORING

    def references(self, feat_dir: Path, examples: list[Example]) -> Hyps:
        return {e.utt: self._phones(e.phones) for e in examples}

    @functools.cached_property
    def _fold(self):
        return scoring_fold(self.cfg)  # read once, not at every grid point

    def figures(self, refs: Hyps, hyps: Hyps, utt2spk: dict[str, str]) -> dict:
        ignore = ignored_in_scoring(self.cfg, self.lang_dir)
        return {"per": score(refs, hyps, utt2spk, fold=self._fold, ignore=ignore)["total"]["per"]}

    def _phones(self, ids: list[int]) -> list[str]:
        return [self.id2phone[p] for p in ids]


class WordDecoder(Decoder):
    """Hypotheses are word sequences (the digit corpora), scored by WER and sentence error rate against text.words."""

    metric = "wer"

    def references(self, feat_dir: Path, examples: list[Example]) -> Hyps:
        return {u: v.split() for u, v in read_table(feat_dir / "text.words").items()}

    def figures(self, refs: Hyps, hyps: Hyps, utt2spk: dict[str, str]) -> dict:
        rates = word_error_rates(refs, hyps)
        return {"wer": rates["wer"], "ser": rates["ser"]}

    @functools.cached_property
    def lexicon(self) -> Lexicon:
        return read_lexicon(self.lang_dir / "lexicon.txt")


# -- greedy -----------------------------------------------------------------------------------------------------


class CTCGreedy(PhoneDecoder):
    name, kind, title = "greedy", "ctc", "CTC best path"
    tuned, uses_lm = False, False
    keys = StageKeys(hashed=FRAME_TIMING)

    def decode(self, point, examples, posteriors) -> Hyps:
        return {
            e.utt: self._phones(ctc_greedy(lp.unsqueeze(0), torch.tensor([len(lp)]))[0])
            for e, lp in zip(examples, posteriors, strict=True)
        }

    def aligned_segments(self, examples, posteriors) -> dict[str, list[tuple[Segment, int]]]:
        """torchaudio's CTC forced alignment (utterances too short for their labels are left out)."""
        return self.scored_alignments(examples, posteriors)[0]

    def scored_alignments(self, examples, posteriors) -> tuple[dict[str, list[tuple[Segment, int]]], dict, dict]:
        shift, offset = frame_timing(self.cfg, self.checkpoint["model_args"]["subsample"])
        segments, scores = {}, {}
        for e, lp in zip(examples, posteriors, strict=True):
            if len(lp) >= ctc_min_frames(e.phones):
                found, per_frame = ctc_scored_segments(lp, e.phones, 0, shift, self.id2phone, offset)
                scores[e.utt] = alignment_gap(per_frame * len(lp), lp)
                segments[e.utt] = list(zip(found, range(len(found)), strict=True))
        return segments, scores, {}


class FrameArgmax(PhoneDecoder):
    name, kind, title = "greedy", "viterbi", "frame argmax, repeats merged"
    tuned, uses_lm, word_ends = False, False, True
    keys = StageKeys(
        hashed=(
            "hmm.states_per_phone",
            "hmm.optional_silence",
            "decode.prior_scale",
            *FRAME_TIMING,
        )
    )

    def decode(self, point, examples, posteriors) -> Hyps:
        state_to_phone = self.topo.state_to_phone()
        return {
            e.utt: self._phones(frame_argmax(lp.unsqueeze(0), torch.tensor([len(lp)]), state_to_phone)[0])
            for e, lp in zip(examples, posteriors, strict=True)
        }

    def aligned_segments(self, examples, posteriors) -> dict[str, list[tuple[Segment, int | None]]]:
        """Viterbi through each utterance's graph on scaled likelihoods (the priors of the model's last
        alignment), in the batches of the forward pass (utterances with no path are left out)."""
        return self.scored_alignments(examples, posteriors)[0]

    def scored_alignments(self, examples, posteriors) -> tuple[dict[str, list[tuple[Segment, int | None]]], dict, dict]:
        shift, offset = frame_timing(self.cfg, self.checkpoint["model_args"]["subsample"])
        priors = self.checkpoint["task"].get("log_priors")
        segments, scores, choices = {}, {}, {}
        lengths = [e.feats.shape[0] for e in examples]
        for batch in make_batches(lengths, self.cfg.decode.batch_frames, self.cfg.decode.max_batch_utts):
            graphs = [
                utterance_graph(e.phones, e.word_ends, e.pronunciations, self.topo, self.cfg.hmm.optional_silence)
                for e in (examples[i] for i in batch)
            ]
            found = align_utterances(
                [posteriors[i] for i in batch],
                graphs,
                self.topo,
                priors,
                self.cfg.decode.prior_scale,
                self.transitions,
                nodes=True,
            )
            for i, graph, (nodes, loglik) in zip(batch, graphs, found, strict=True):
                if nodes is not None:
                    e = examples[i]
                    segments[e.utt] = graph_segments(nodes.tolist(), graph, self.topo, self.id2phone, shift, offset)
                    lp = posteriors[i]
                    scaled = lp if priors is None else lp - self.cfg.decode.prior_scale * priors.to(lp.device)
                    scores[e.utt] = alignment_gap(float(loglik), scaled)
                    if e.pronunciations is not None:
                        choices[e.utt] = chosen_pronunciations(graph, nodes.tolist(), len(e.pronunciations))
        return segments, scores, choices


# -- with the phone LM ------------------------------------------------------------------------------------------


class CTCBeamLM(PhoneDecoder):
    name, kind, title = "lm", "ctc", "CTC prefix beam search + phone LM"
    keys = StageKeys(hashed=("decode.lm_order", "decode.ctc_beam")) | PhoneDecoder.SCORING_KEYS

    def grid(self) -> list[dict]:
        beam = self.cfg.decode.ctc_beam
        return [{"lm_weight": w, "insertion_bonus": b} for w in beam.lm_weights for b in beam.insertion_bonuses]

    @functools.cached_property
    def lm(self) -> NgramLM:
        return NgramLM.read_arpa(self.lm_dir / f"phones.{self.cfg.decode.lm_order}gram.arpa")

    def decode(self, point, examples, posteriors) -> Hyps:
        beam = self.cfg.decode.ctc_beam
        decoder = make_ctc_beam_decoder(
            self.tokens, self.lm, point["lm_weight"], point["insertion_bonus"], beam.beam_size, beam.beam_size_token
        )
        return {
            e.utt: self._phones(ctc_beam_decode(decoder, lp.unsqueeze(0), torch.tensor([len(lp)]))[0])
            for e, lp in zip(examples, posteriors, strict=True)
        }


class _HybridSearch:
    """What the hybrid decoders share: each utterance's best path through a loop graph on its scaled
    likelihoods (decode.prior_scale, the acoustic scale), a batch of similar lengths at a time
    (decode.hybrid.batch_frames)."""

    KEYS = StageKeys(
        hashed=("decode.hybrid.beam", "decode.hybrid.acoustic_scales", "decode.prior_scale", "hmm.states_per_phone"),
        unhashed=("decode.hybrid.batch_frames",),
    )

    def _search(self, examples, posteriors, acoustic_scale: float, graph: hybrid.LoopGraph) -> list[hybrid.LoopPath]:
        hcfg = self.cfg.decode.hybrid
        priors = self.checkpoint["task"].get("log_priors")
        scaled = [
            hybrid.scaled_log_likelihoods(lp, priors, self.cfg.decode.prior_scale, acoustic_scale) for lp in posteriors
        ]
        paths = [None] * len(scaled)
        for batch in make_batches([len(s) for s in scaled], hcfg.batch_frames, len(scaled)):
            found = hybrid.loop_search_batch(
                [scaled[i] for i in batch], graph, hcfg.beam, names=[examples[i].utt for i in batch]
            )
            for i, path in zip(batch, found, strict=True):
                paths[i] = path
        return paths


class HybridPhoneLM(_HybridSearch, PhoneDecoder):
    name, kind, title = "lm", "viterbi", "hybrid Viterbi (posteriors / priors) + phone LM"
    keys = _HybridSearch.KEYS | StageKeys(hashed=("decode.hybrid.insertion_bonuses",)) | PhoneDecoder.SCORING_KEYS

    def grid(self) -> list[dict]:
        hcfg = self.cfg.decode.hybrid
        return [
            {"acoustic_scale": a, "insertion_bonus": b} for a in hcfg.acoustic_scales for b in hcfg.insertion_bonuses
        ]

    @functools.cached_property
    def lm(self) -> NgramLM:
        return NgramLM.read_arpa(self.lm_dir / "phones.2gram.arpa")  # the phone loop takes the bigram

    def decode(self, point, examples, posteriors) -> Hyps:
        graph, phone_ids = hybrid.phone_loop(
            self.lm,
            self.id2phone,
            self.topo,
            lm_weight=1.0,
            insertion_bonus=point["insertion_bonus"],
            transitions=self.transitions,
        )
        paths = self._search(examples, posteriors, point["acoustic_scale"], graph)
        return {
            e.utt: self._phones(hybrid.path_labels(path, phone_ids)) for e, path in zip(examples, paths, strict=True)
        }


# -- words through the lexicon ----------------------------------------------------------------------------------


UNKNOWN = "<unk>"  # the lexicon's unknown word, as flashlight's search is told


class CTCLexiconWords(WordDecoder):
    name, kind, title = "words", "ctc", "CTC lexicon beam search + word bigram"
    keys = StageKeys(hashed=("decode.words.beam_size", "decode.words.lm_weights", "decode.words.word_scores"))

    def grid(self) -> list[dict]:
        wcfg = self.cfg.decode.words
        return [{"lm_weight": w, "word_score": b} for w in wcfg.lm_weights for b in wcfg.word_scores]

    @functools.cached_property
    def lexicon_file(self) -> str:
        """The lexicon as read_lexicon reads it, written out for flashlight, which reads a file itself: a line
        repeated in lang/lexicon.txt (an edit after stage 0) would otherwise change its hypotheses."""
        self._lexicon_dir = tempfile.TemporaryDirectory(prefix="lexicon-")  # removed with the decoder
        path = Path(self._lexicon_dir.name) / "lexicon.txt"
        path.write_text(self.lexicon.text(), encoding="utf-8")
        return str(path)

    @functools.cached_property
    def pronunciations(self) -> tuple[str, str, dict[str, tuple[str, float]]] | None:
        """Where lang/lexiconp.txt weighs the pronunciations: the lexicon written with a word per pronunciation
        (`u<k>`; `<unk>` keeps its name, the search's unknown word), its lm_dict, and each unit's (word,
        log-probability) by name, for PronunciationLMScorer; None without."""
        probabilities = read_pronunciation_probabilities(self.lang_dir)
        if probabilities is None:
            return None
        units, lines = {}, []
        for word, prons in self.lexicon.items():
            for pron, p in zip(prons, probabilities.get(word, [1.0] * len(prons)), strict=True):
                name = word if word == UNKNOWN else f"u{len(units)}"
                lines.append(f"{name} {' '.join(pron)}\n")
                units[name] = (word, math.log(p))
        units.setdefault(UNKNOWN, (UNKNOWN, 0.0))  # flashlight looks the unknown word up in lm_dict
        self._units_dir = tempfile.TemporaryDirectory(prefix="lexicon-")  # removed with the decoder
        lexicon, lm_dict = (Path(self._units_dir.name) / name for name in ("lexicon.txt", "lm_dict.txt"))
        lexicon.write_text("".join(lines), encoding="utf-8")
        lm_dict.write_text("".join(f"{name}\n" for name in units), encoding="utf-8")
        return str(lexicon), str(lm_dict), units

    def decode(self, point, examples, posteriors) -> Hyps:
        common = {
            "tokens": self.tokens,
            "word_score": point["word_score"],
            "beam_size": self.cfg.decode.words.beam_size,
            "blank_token": self.tokens[0],
            "sil_token": self.tokens[1],
            "unk_word": UNKNOWN,
        }
        units = None
        if self.pronunciations is None:
            lm = str(self.lm_dir / "words.2gram.arpa")
            with _native_stderr_below_debug():  # KenLM's "Loading the LM will be faster ...", "Reading ...", bar
                decoder = ctc_decoder(lexicon=self.lexicon_file, lm=lm, lm_weight=point["lm_weight"], **common)
        else:  # each pronunciation a word of the search, the word LM scoring it with its probability
            lexicon, lm_dict, units = self.pronunciations
            lm = PronunciationLMScorer(list(units.values()), self.word_lm, point["lm_weight"])
            decoder = ctc_decoder(lexicon=lexicon, lm=lm, lm_dict=lm_dict, lm_weight=1.0, **common)
        hyps = {}
        for e, lp in zip(examples, posteriors, strict=True):
            best = decoder(lp.unsqueeze(0).float().contiguous(), torch.tensor([len(lp)], dtype=torch.int32))[0]
            words = list(best[0].words) if best else []
            hyps[e.utt] = [units[w][0] for w in words] if units else words
        return hyps

    @functools.cached_property
    def word_lm(self) -> NgramLM:
        return NgramLM.read_arpa(self.lm_dir / "words.2gram.arpa")


class HybridWordLoop(_HybridSearch, WordDecoder):
    name, kind, title = "words", "viterbi", "hybrid Viterbi word loop + word bigram"
    keys = _HybridSearch.KEYS | StageKeys(hashed=("decode.words.word_scores", "hmm.optional_silence"))

    def grid(self) -> list[dict]:
        return [
            {"acoustic_scale": a, "word_score": b}
            for a in self.cfg.decode.hybrid.acoustic_scales
            for b in self.cfg.decode.words.word_scores
        ]

    @functools.cached_property
    def lm(self) -> NgramLM:
        return NgramLM.read_arpa(self.lm_dir / "words.2gram.arpa")

    def decode(self, point, examples, posteriors) -> Hyps:
        phone2id = {p: i for i, p in self.id2phone.items()}
        graph, words = hybrid.word_loop(
            self.lexicon,
            phone2id,
            self.topo,
            self.lm,
            lm_weight=1.0,
            word_score=point["word_score"],
            optional_silence=self.cfg.hmm.optional_silence,
            transitions=self.transitions,
            probabilities=read_pronunciation_probabilities(
                self.lang_dir, self.lexicon, self.checkpoint["task"].get("pronunciation_probs")
            ),
        )
        paths = self._search(examples, posteriors, point["acoustic_scale"], graph)
        return {e.utt: hybrid.path_labels(path, words) for e, path in zip(examples, paths, strict=True)}


@contextlib.contextmanager
def _native_stderr_below_debug():
    """What native code writes to the process's stderr (file descriptor 2) dropped while the block runs, unless
    the log shows debug messages (the model tools' --verbose): KenLM prints its loading progress there, which
    Python's logging cannot silence."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
