"""CTC training (torch.nn.functional.ctc_loss, or with train.ctc.loss=own phonerec.hmm.fullsum.ctc_loss, the same
value and gradient by the full-sum forward-backward): outputs are the phones of lang/phones.txt with the blank as
output 0."""

import logging

import torch
import torch.nn.functional as F

from phonerec.data.dataset import Example
from phonerec.decoding.greedy import ctc_greedy
from phonerec.hmm.fullsum import ctc_loss, ctc_min_frames
from phonerec.model.posteriors import batched_posteriors

log = logging.getLogger(__name__)


class CTCTask:
    """CTC on the phone sequences (phonerec.training.loop.Task); utterances too short for their labels are
    reported and left out."""

    kind = "ctc"
    criterion = "ctc"

    def __init__(self, train: list[Example], dev: list[Example], tcfg, model, id2phone, dev_per):
        """dev_per(refs, hyps): the PER of validation (phonerec.scoring.error_rate.dev_per_scorer)."""
        self.tcfg, self.id2phone, self.dev_per = tcfg, id2phone, dev_per
        self.dev = dev
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
        return {}

    def load_state(self, state: dict) -> None:
        pass

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
        log_probs, out_lengths = model(feats, lengths)
        # Per utterance, divided by its label count (CTCLoss "mean"): comparable across batches.
        return self._loss(log_probs, out_lengths, examples, "mean"), len(examples)

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
        pass
