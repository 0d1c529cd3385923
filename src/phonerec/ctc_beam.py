"""CTC prefix beam search with a phone n-gram LM: torchaudio's ctc_decoder (flashlight-text), lexicon-free, so
the LM's words are the phones themselves (an ARPA file over phone symbols, see phonerec.lm).

The decoder's silence token is set to the blank: flashlight's lexicon-free search puts a silence token at both
ends of every hypothesis, and a real phone there (TIMIT's `sil`) would be indistinguishable from it; as the
blank, torchaudio drops it with the other blanks, and the outputs equal the greedy best path on peaky
posteriors when the LM weight is 0.

There is no insertion bonus: flashlight's lexicon-free search has no per-token score (its word score is for
lexicon words), and raising the LM's log-probabilities instead would make some positive, which KenLM refuses.
"""

from pathlib import Path

import torch
from torchaudio.models.decoder import ctc_decoder


def make_ctc_beam_decoder(phones: list[str], lm: Path | None, lm_weight: float, beam_size: int = 50):
    """phones: the output symbols by id, phones[0] the blank (lang/phones.txt order)."""
    return ctc_decoder(
        lexicon=None,
        tokens=phones,
        lm=str(lm) if lm is not None else None,
        lm_weight=lm_weight,
        beam_size=beam_size,
        blank_token=phones[0],
        sil_token=phones[0],
        unk_word="<unk>",
        nbest=1,
    )


def ctc_beam_decode(decoder, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best hypothesis (phone ids) of each utterance of a batch (B, T, V) of log-posteriors."""
    results = decoder(log_probs.detach().float().cpu().contiguous(), lengths.cpu().to(torch.int32))
    return [r[0].tokens.tolist() if r else [] for r in results]
