"""HMM transition probabilities: each state's self-loop and forward arc, and the optional silence's choice.

Every HMM state s has two outgoing arcs, a self-loop and a forward arc (to the next state of its phone, or out
of the phone), with P(loop | s) + P(forward | s) = 1; an optional silence block (phonerec.hmm.align.build_graph:
at the utterance's edges and between words) is taken with P(silence) and jumped over with 1 - P(silence), as
Kaldi's lexicon FST weighs its optional silence (--sil-prob). Both are a softmax over logits, so they stay
normalised whether they are

- fixed: from hmm.self_loop_prob and hmm.silence_prob (Kaldi's topology starts its states at 0.75 / 0.25 and its
  lexicon at a silence probability of 0.5);
- learned with full-sum training: the logits are parameters, trained with the network. The gradient of
  log p(X | graph) with respect to an arc's log-weight is the arc's expected count under the posterior over
  paths (phonerec.hmm.fullsum); through the softmax, a logit's gradient is that count minus the state's
  expected count of leaving arcs times the arc's probability;
- re-estimated with Viterbi (cross-entropy) training: after each re-alignment, each probability is the relative
  frequency of its arc on the training set's best paths (`TransitionCounts`), with one count added to each arc
  (so an arc never seen keeps a probability above 0), as Kaldi's `gmm-est` re-estimates its transition model
  from the counts of the alignments.

They weight the arcs of forced alignment, of the full-sum sum and of hybrid decoding alike, and travel in the
Viterbi model's checkpoint beside its state priors (`state_dict`).
"""

import torch

from phonerec.hmm.align import ArcWeights, GraphBatch, TransitionLogProbs, graph_weights


class Transitions(torch.nn.Module):
    """The transition log-probabilities of `num_states` HMM states and the optional silence."""

    def __init__(self, num_states: int, self_loop_prob: float = 0.75, silence_prob: float = 0.5, learn: bool = False):
        super().__init__()
        for name, p in (("self_loop_prob", self_loop_prob), ("silence_prob", silence_prob)):
            if not 0 < p < 1:
                raise ValueError(f"hmm.{name}={p}: a probability strictly between 0 and 1 is needed")
        loop = torch.tensor([self_loop_prob, 1 - self_loop_prob]).log()
        self.state_logits = torch.nn.Parameter(loop.repeat(num_states, 1), requires_grad=learn)  # [loop, forward]
        silence = torch.tensor([silence_prob, 1 - silence_prob]).log()
        self.silence_logits = torch.nn.Parameter(silence, requires_grad=learn)  # [silence, no silence]

    @classmethod
    def from_state_dict(cls, state: dict) -> "Transitions":
        transitions = cls(state["state_logits"].shape[0])
        transitions.load_state_dict(state)
        return transitions

    def log_probs(self) -> TransitionLogProbs:
        states = self.state_logits.log_softmax(-1)
        silence = self.silence_logits.log_softmax(-1)
        return TransitionLogProbs(states[:, 0], states[:, 1], silence[0], silence[1])

    def arc_weights(self, batch: GraphBatch, fill: float, dtype=torch.float32) -> ArcWeights:
        return graph_weights(batch, self.log_probs(), fill, dtype)

    @torch.no_grad()
    def estimate(self, counts: "TransitionCounts") -> None:
        """Set every probability to its arc's relative frequency in `counts`, plus one."""
        self.state_logits.copy_(torch.stack([counts.loop, counts.forward], dim=1).add(1).log())
        self.silence_logits.copy_(torch.stack([counts.silence, counts.no_silence]).add(1).log())

    def summary(self) -> dict:
        """Means and ranges of the probabilities, for the logs and the round statistics."""
        log_probs = self.log_probs()
        loop = log_probs.loop.exp()
        return {
            "self_loop_mean": loop.mean().item(),
            "self_loop_min": loop.min().item(),
            "self_loop_max": loop.max().item(),
            "silence_prob": log_probs.silence.exp().item(),
        }


class TransitionCounts:
    """How often each transition is taken, summed over alignments (phonerec.hmm.align.align_utterances `counts`)."""

    def __init__(self, num_states: int):
        self.loop = torch.zeros(num_states, dtype=torch.float64)
        self.forward = torch.zeros(num_states, dtype=torch.float64)
        self.silence = torch.zeros((), dtype=torch.float64)
        self.no_silence = torch.zeros((), dtype=torch.float64)

    def merge(self, other: "TransitionCounts") -> None:
        """Add another's counts (those of another training process's alignments)."""
        for total, more in zip(self._totals(), other._totals(), strict=True):
            total += more

    def _totals(self) -> tuple[torch.Tensor, ...]:
        return self.loop, self.forward, self.silence, self.no_silence

    def add(self, batch: GraphBatch, arc_counts: ArcWeights) -> None:
        """Add the counts of a GraphBatch's arcs: each arc's count goes to the transitions its weight is made of
        (the gradient of graph_weights, so the two cannot disagree)."""
        totals = self._totals()
        probe = TransitionLogProbs(*(torch.zeros_like(t, requires_grad=True) for t in totals))
        with torch.enable_grad():
            weights = graph_weights(batch, probe, 0.0, torch.float64)
            outputs = (weights.arcs, weights.start, weights.end)
            counts = tuple(c.double() for c in (arc_counts.arcs, arc_counts.start, arc_counts.end))
            grads = torch.autograd.grad(outputs, probe, counts)
        for total, grad in zip(totals, grads, strict=True):
            total += grad.cpu()
