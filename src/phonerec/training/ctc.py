"""CTC training (torch.nn.functional.ctc_loss, or with train.ctc.loss=own phonerec.hmm.fullsum.ctc_loss, the same
value and gradient by the full-sum forward-backward): outputs are the phones of lang/phones.txt with the blank as
output 0."""

import logging

import torch
import torch.nn.functional as F

from phonerec.data.dataset import Example
from phonerec.decoding.greedy import ctc_greedy
from phonerec.hmm.align import Topology, build_graph, soft_log_priors
from phonerec.hmm.fullsum import ctc_loss, ctc_min_frames, fullsum_loglik
from phonerec.model.blstm import pooled
from phonerec.model.posteriors import batched_posteriors

log = logging.getLogger(__name__)


class CTCTask:
    """CTC on the phone sequences (phonerec.training.loop.Task); utterances too short for their labels are
    reported and left out."""

    kind = "ctc"

    def __init__(self, train: list[Example], dev: list[Example], tcfg, model, id2phone, dev_per, guide=None):
        """dev_per(refs, hyps): the PER of validation (phonerec.scoring.error_rate.dev_per_scorer). guide: a second
        loss added to CTC's with a weight that falls from train.ctc.guide_weight to 0 over train.ctc.guide_epochs
        (FullSumGuide, SpikeGuide, DistillGuide below)."""
        self.tcfg, self.id2phone, self.dev_per = tcfg, id2phone, dev_per
        self.dev = dev
        self.guide = guide
        self.epoch = 1
        self._kernel_logged = False
        self.usable = set()
        too_short = []
        for e in train:
            frames = int(model.output_lengths(torch.tensor([e.feats.shape[0]]))[0])
            if frames >= ctc_min_frames(e.phones):
                self.usable.add(e.utt)
            else:
                too_short.append(e.utt)
        if too_short:
            log.warning(
                "CTC: %d training utterances are too short for their labels, skipped: %s",
                len(too_short),
                " ".join(too_short[:10]),
            )

    def start(self, model) -> None:
        pass

    def parameters(self) -> list[torch.nn.Parameter]:
        return []

    def state(self) -> dict:
        return {"epoch": self.epoch}

    def load_state(self, state: dict) -> None:
        self.epoch = state.get("epoch", 1)

    def guide_weight(self) -> float:
        ccfg = self.tcfg.ctc
        if self.guide is None or ccfg.guide_epochs <= 0:
            return 0.0
        return ccfg.guide_weight * max(0.0, 1.0 - (self.epoch - 1) / ccfg.guide_epochs)

    def train_examples(self, train: list[Example]) -> list[Example]:
        return [e for e in train if e.utt in self.usable]

    def _loss(self, log_probs, out_lengths, examples, reduction):
        if self.tcfg.ctc.loss == "own":
            targets = [e.phones for e in examples]
            return ctc_loss(log_probs, out_lengths, targets, blank=0, reduction=reduction, zero_infinity=True)
        # int64 targets on the log-posteriors' device: on CUDA that is torch's native kernel, chosen explicitly.
        # cuDNN's would need int32 targets on the CPU, every input length equal to T and labels below 256, which
        # length-bucketed padded batches rarely meet.
        device = log_probs.device
        targets = torch.tensor([p for e in examples for p in e.phones], device=device)
        target_lengths = torch.tensor([len(e.phones) for e in examples], device=device)
        if not self._kernel_logged:
            log.info("CTC loss: torch's %s kernel", "native CUDA" if device.type == "cuda" else "CPU")
            self._kernel_logged = True
        return F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            out_lengths,
            target_lengths,
            blank=0,
            reduction=reduction,
            zero_infinity=True,
        )

    def loss(self, model, feats, lengths, examples):
        weight = self.guide_weight()
        if not weight:
            log_probs, out_lengths = model(feats, lengths)
            # Per utterance, divided by its label count (CTCLoss "mean"): comparable across batches.
            return self._loss(log_probs, out_lengths, examples, "mean"), len(examples)
        states, out_lengths = model(feats, lengths, states=True)
        log_probs = pooled(states, self.guide.states_per_phone)
        loss = self._loss(log_probs, out_lengths, examples, "mean")
        guide = self.guide.loss(feats, lengths, states, log_probs, out_lengths, examples)
        return loss + weight * guide, len(examples)

    def validate(self, model) -> dict:
        total_loss, refs, hyps = 0.0, {}, {}
        batches = batched_posteriors(model, self.dev, self.tcfg.batch_frames, self.tcfg.max_batch_utts)
        for examples, log_probs, out_lengths in batches:
            total_loss += self._loss(log_probs, out_lengths, examples, "mean").item() * len(examples)
            for e, hyp in zip(examples, ctc_greedy(log_probs, out_lengths), strict=True):
                refs[e.utt] = [self.id2phone[p] for p in e.phones]
                hyps[e.utt] = [self.id2phone[p] for p in hyp]
        return {"loss": total_loss / max(len(self.dev), 1), "per": self.dev_per(refs, hyps)}

    def end_of_epoch(self, model, epoch: int, writer) -> None:
        self.epoch = epoch + 1


def _valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class FullSumGuide:
    """The first phase's criterion on the CTC model's state outputs (the CTC head read as an HMM: the states'
    log-posteriors renormalised without the blank, divided by the soft priors ^ prior_scale, summed over every path
    of each utterance's graph), per frame."""

    def __init__(self, examples, topo: Topology, optional_silence: bool, transitions, prior_scale: float):
        self.topo, self.transitions, self.prior_scale = topo, transitions, prior_scale
        self.states_per_phone = topo.states_per_phone
        self.graphs = {e.utt: build_graph(e.phones, topo, e.word_ends, optional_silence) for e in examples}

    def loss(self, feats, lengths, states, log_probs, out_lengths, examples):
        scores = states[..., 1:].log_softmax(-1)
        if self.prior_scale:
            scores = scores - self.prior_scale * soft_log_priors(scores.detach(), out_lengths)
        loglik = fullsum_loglik(
            scores, out_lengths, [self.graphs[e.utt] for e in examples], self.topo, self.transitions
        )
        found = torch.isfinite(loglik)
        return -loglik[found].sum() / max(int(out_lengths.to(found.device)[found].sum()), 1)


class SpikeGuide:
    """Cross-entropy towards each phone at the middle frame of its segment in the Viterbi model's alignment (where
    CTC would put its spike), per spike."""

    def __init__(self, alignments: dict[str, torch.Tensor], state_to_phone: list[int], states_per_phone: int):
        self.states_per_phone = states_per_phone
        self.spikes = {}
        to_phone = torch.tensor(state_to_phone)
        for utt, ali in alignments.items():
            phones = to_phone[ali]
            starts = torch.nonzero(torch.cat([torch.tensor([True]), phones[1:] != phones[:-1]])).squeeze(1)
            ends = torch.cat([starts[1:], torch.tensor([len(phones)])])
            middles = (starts + ends - 1) // 2
            self.spikes[utt] = (middles, phones[middles])

    def loss(self, feats, lengths, states, log_probs, out_lengths, examples):
        total, count = log_probs.new_zeros(()), 0
        for b, e in enumerate(examples):
            if e.utt in self.spikes:
                frames, phones = self.spikes[e.utt]
                keep = frames < int(out_lengths[b])
                total = total - log_probs[b, frames[keep], phones[keep].to(log_probs.device)].sum()
                count += int(keep.sum())
        return total / max(count, 1)


class DistillGuide:
    """The Kullback-Leibler divergence from a frozen teacher's outputs (blank + phones: the CTC model as it started
    from the Viterbi model) to the CTC model's, per frame."""

    def __init__(self, teacher, states_per_phone: int):
        self.teacher, self.states_per_phone = teacher.eval(), states_per_phone
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)

    def loss(self, feats, lengths, states, log_probs, out_lengths, examples):
        self.teacher.to(feats.device)
        with torch.no_grad():
            target, _ = self.teacher(feats, lengths)
        kl = (target.exp() * (target - log_probs)).sum(-1)
        return kl[_valid_frames(out_lengths, kl.shape[1])].mean()
