#!/usr/bin/env python3
"""CTC prefix beam search with a phone bigram: the LM through torchaudio's custom-LM interface
(phonerec.decoding.ctc_beam.PhoneLMScorer, which carries the insertion bonus) against the same LM as an ARPA
file read by flashlight's KenLM (no insertion bonus possible; with its word ids in token order by lm_dict, and
without, as torchaudio builds them by default), with every token tried per frame and with the 10 most likely
(decode.ctc_beam.beam_size_token), on the same synthetic posteriors in one run.

  PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_ctc_beam.py [--utts 20] [--frames 300] [--phones 48]

The posteriors: random phone sequences (a bigram-like walk), each phone 1-3 frames then 1-4 blank frames, with
log-posteriors noised so that some frames are ambiguous. Prints ms per 1,000 frames, the ratio to KenLM with all
tokens, the PER against the drawn sentences, and how far each output is from the KenLM decoder's (edit
distance, % of its phones); both score LM weight 1 on ln P (the ARPA's log10 weight is scaled by ln 10 to
match). Record them in benchmarks/RESULTS.md."""

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from torchaudio.models.decoder import ctc_decoder

from phonerec.decoding.ctc_beam import ctc_beam_decode, make_ctc_beam_decoder
from phonerec.decoding.lm import NgramLM
from phonerec.scoring.error_rate import score


def synthetic(num_utts: int, frames: int, num_phones: int, gen: torch.Generator):
    """(log-posteriors (frames, V) per utterance, the phone sentences they were drawn from); V = num_phones + 1."""
    vocab = num_phones + 1
    utts, sentences = [], []
    for _ in range(num_utts):
        labels, sentence = [], []
        while len(labels) < frames:
            phone = int(torch.randint(1, vocab, (1,), generator=gen))
            sentence.append(phone)
            labels += [phone] * int(torch.randint(1, 4, (1,), generator=gen))
            labels += [0] * int(torch.randint(1, 5, (1,), generator=gen))
        logits = torch.randn(frames, vocab, generator=gen) * 1.5
        logits[torch.arange(frames), torch.tensor(labels[:frames])] += 5.0
        utts.append(logits.log_softmax(-1))
        sentences.append(sentence)
    return utts, sentences


def timed(decoder, utts) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    hyps = [ctc_beam_decode(decoder, u.unsqueeze(0), torch.tensor([len(u)]))[0] for u in utts]
    return time.perf_counter() - start, hyps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=int, default=20)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--phones", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    phones = ["<blk>"] + [f"p{i}" for i in range(1, args.phones + 1)]
    utts, sentences = synthetic(args.utts, args.frames, args.phones, gen)
    truth = {str(i): [phones[p] for p in s] for i, s in enumerate(sentences)}
    lm = NgramLM.estimate([[phones[p] for p in s] for s in sentences], order=2, vocab=phones[1:])
    with tempfile.TemporaryDirectory() as tmp:
        arpa = Path(tmp) / "lm.arpa"
        lm.write_arpa(arpa)
        lm_dict = Path(tmp) / "lm_dict.txt"  # KenLM's word ids in token order (see phonerec.decoding.ctc_beam)
        lm_dict.write_text("\n".join([*phones, "<unk>"]) + "\n")

        def kenlm(beam_size_token, word_dict=lm_dict):
            return ctc_decoder(
                lexicon=None,
                tokens=phones,
                lm=str(arpa),
                lm_dict=word_dict and str(word_dict),
                lm_weight=math.log(10),
                beam_size=50,
                beam_size_token=beam_size_token,
                blank_token=phones[0],
                sil_token=phones[0],
                unk_word="<unk>",
            )

        rows, reference_hyps = [], None
        for name, decoder in [
            ("KenLM ARPA, all tokens", kenlm(None)),  # the reference
            ("KenLM ARPA, 10 tokens", kenlm(10)),
            ("KenLM ARPA, no lm_dict (ids mixed up)", kenlm(None, word_dict=None)),
            ("PhoneLMScorer, all tokens", make_ctc_beam_decoder(phones, lm, 1.0, 0.0, 50, None)),
            ("PhoneLMScorer, 20 tokens", make_ctc_beam_decoder(phones, lm, 1.0, 0.0, 50, 20)),
            ("PhoneLMScorer, 10 tokens", make_ctc_beam_decoder(phones, lm, 1.0, 0.0, 50, 10)),
            ("PhoneLMScorer, 10 tokens, bonus 1", make_ctc_beam_decoder(phones, lm, 1.0, 1.0, 50, 10)),
        ]:
            seconds, hyps = timed(decoder, utts)
            hyps = {str(i): [phones[p] for p in h] for i, h in enumerate(hyps)}
            reference_hyps = reference_hyps or hyps
            per = score(truth, hyps)["total"]["per"]
            differs = score(reference_hyps, hyps)["total"]["per"]
            rows.append((name, seconds, per, differs))
    frames = args.utts * args.frames
    print(f"{args.utts} utterances x {args.frames} frames, {args.phones} phones + blank, beam 50, 1 thread")
    print(f"{'decoder':40s} {'ms/1000 frames':>15s} {'ratio':>7s} {'PER %':>7s} {'differs %':>10s}")
    for name, seconds, per, differs in rows:
        print(f"{name:40s} {1e6 * seconds / frames:15.1f} {seconds / rows[0][1]:7.2f} {per:7.2f} {differs:10.2f}")


if __name__ == "__main__":
    main()
