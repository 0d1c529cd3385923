"""What a Viterbi-stage model's outputs look like, and where CTC training starts from it (recipes/timit/README.md,
"CTC from the Viterbi model").

  . ./path.sh && python benchmarks/ctc_start.py exp/timit_sample/viterbi [more Viterbi exp dirs ...] \
      --data data/timit_sample/fbank40 --lang data/timit_sample/lang

For each Viterbi exp dir and each of its checkpoints best.pt and best_alignment.pt (where training kept one), on
the training and the dev set against the alignment of the last re-alignment round, it prints:

- the state posteriors as the network gives them: the mean per-frame entropy (nats) of the states and of the
  phones (each phone's states summed), the share of frames where one state (one phone) holds at least 0.9 of the
  mass, where silence's states together hold at least half, and where the argmax state is the alignment's;
  beside it, the share of silence in the alignment;
- the same after dividing by the alignment's state priors (as the hybrid decoder scores frames) and by the soft
  priors (the mean posterior over the set's frames, as full-sum training divides), renormalised per frame;
- where CTC starts from the checkpoint, for each way of making its output layer (phonerec.pipeline.train_stages,
  `ctc_from_viterbi`): the CTC loss on the training and the dev set (per label, as validation reports it) and dev's
  PER of the best path (greedy, repeats merged, blanks dropped), before any CTC training.
"""

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from phonerec.base.config import load_config
from phonerec.data.data_dir import read_table
from phonerec.data.dataset import load_examples
from phonerec.data.lang import ignored_in_scoring, read_id2phone, read_phones
from phonerec.hmm.align import Topology
from phonerec.model.posteriors import utterance_posteriors
from phonerec.pipeline.train_stages import ctc_from_viterbi
from phonerec.scoring.error_rate import dev_per_scorer
from phonerec.training.checkpoints import load_model
from phonerec.training.ctc import CTCTask

INITS = {  # name: the train.ctc keys that make it
    "fresh output layer": {"init": "fresh"},
    "pooled states": {"init": "viterbi"},
}


def output_figures(log_probs: list[torch.Tensor], alignments: list[torch.Tensor], topo: Topology) -> dict:
    """Entropy, dominance and agreement figures of per-utterance (frames, states) log-posteriors."""
    frames = torch.cat(log_probs)
    ali = torch.cat(alignments)
    probs = frames.exp()
    silence = torch.tensor(topo.states(topo.silence_phone))
    entropy = -(probs * frames).sum(-1)
    phone_probs = probs.reshape(len(probs), -1, topo.states_per_phone).sum(-1)
    phone_entropy = -(phone_probs * phone_probs.clamp(min=1e-30).log()).sum(-1)
    return {
        "entropy nats": entropy.mean().item(),
        "one state >= 0.9 %": 100 * (probs.max(-1).values >= 0.9).float().mean().item(),
        "phone entropy nats": phone_entropy.mean().item(),
        "one phone >= 0.9 %": 100 * (phone_probs.max(-1).values >= 0.9).float().mean().item(),
        "silence >= 0.5 %": 100 * (probs[:, silence].sum(-1) >= 0.5).float().mean().item(),
        "argmax = alignment %": 100 * (frames.argmax(-1) == ali).float().mean().item(),
        "silence in alignment %": 100 * torch.isin(ali, silence).float().mean().item(),
    }


def divided(log_probs: list[torch.Tensor], log_priors: torch.Tensor) -> list[torch.Tensor]:
    """Posteriors / priors, renormalised per frame."""
    return [(lp - log_priors).log_softmax(-1) for lp in log_probs]


def last_alignment(exp_dir: Path, name: str) -> dict[str, torch.Tensor]:
    rounds = sorted((exp_dir / "ali").glob("iter*"), key=lambda p: int(p.name[4:]))
    table = read_table(rounds[-1] / f"ali.{name}.txt")
    return {utt: torch.tensor([int(s) for s in states.split()]) for utt, states in table.items()}


def print_outputs(title: str, model, checkpoint: dict, exp_dir: Path, sets: dict, topo: Topology) -> None:
    for name, examples in sets.items():
        alignment = last_alignment(exp_dir, name)
        with torch.no_grad():
            scored = [(e, lp) for e, lp in utterance_posteriors(model, examples, 100000, 64) if e.utt in alignment]
        log_probs = [lp for _, lp in scored]
        alis = [alignment[e.utt] for e, _ in scored]
        soft = torch.cat(log_probs).exp().mean(0).clamp(min=1e-5).log()
        rows = {
            "posteriors": output_figures(log_probs, alis, topo),
            "/ alignment priors": output_figures(divided(log_probs, checkpoint["task"]["log_priors"]), alis, topo),
            "/ soft priors": output_figures(divided(log_probs, soft), alis, topo),
        }
        keys = list(rows["posteriors"])
        print(f"\n{title}, {name} ({len(scored)} utterances)\n")
        print("| outputs | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for row, figures in rows.items():
            print(f"| {row} | " + " | ".join(f"{figures[k]:.2f}" for k in keys) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp_dirs", nargs="+", type=Path, help="Viterbi exp dirs (best.pt, ali/)")
    parser.add_argument("--data", type=Path, required=True, help="the feature dir holding train/ and dev/")
    parser.add_argument("--lang", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    id2phone = read_id2phone(args.lang)
    num_phones = len(read_phones(args.lang))
    ctc_defaults = load_config([]).train.ctc  # the Viterbi checkpoints' config holds no train.ctc
    for exp_dir in args.exp_dirs:
        for checkpoint_name in ("best", "best_alignment"):
            path = exp_dir / f"{checkpoint_name}.pt"
            if not path.is_file():
                continue
            model, checkpoint = load_model(path)
            cfg = OmegaConf.create(checkpoint["config"])
            sets = {
                name: load_examples(args.data / name, args.lang, cfg.features, word_boundaries=False)
                for name in ("train", "dev")
            }
            topo = Topology(num_phones, checkpoint["model_args"]["num_outputs"] // (num_phones - 1))
            title = f"{path} (epoch {checkpoint['epoch']}, {cfg.train.viterbi.criterion})"
            print_outputs(title, model, checkpoint, exp_dir, sets, topo)
            dev_per = dev_per_scorer(cfg, ignored_in_scoring(cfg, args.lang))
            print(f"\nCTC from {title}\n")
            print("| output layer | train CTC loss | dev CTC loss | dev PER % (best path) |\n|---|---:|---:|---:|")
            for name, keys in INITS.items():
                tcfg = OmegaConf.merge(cfg.train, {"ctc": ctc_defaults}, {"ctc": keys})
                ctc_model, _ = load_model(path)
                torch.manual_seed(0)
                ctc_from_viterbi(ctc_model, checkpoint["model_args"], tcfg.ctc, num_phones)
                ctc_model.eval()
                with torch.no_grad():
                    train, dev = (
                        CTCTask([], sets[k], tcfg, ctc_model, id2phone, dev_per).validate(ctc_model)
                        for k in ("train", "dev")
                    )
                print(f"| {name} | {train['loss']:.2f} | {dev['loss']:.2f} | {dev['per']:.2f} |")


if __name__ == "__main__":
    main()
