"""A Kaldi per-frame phone alignment as the first alignment of Viterbi training (train.viterbi.init_alignment),
instead of the flat start.

The file is the text that `ali-to-phones --per-frame=true final.mdl ark:ali.*.gz ark,t:-` prints: one line per
utterance, `<utt> <phone id> <phone id> ...`, one id per feature frame, ids of Kaldi's phones.txt
(train.viterbi.init_alignment_phones). Kaldi's word-position-dependent phones (`ah_B`, `ah_E`, `ah_I`, `ah_S`)
lose their suffix; the phone names are then looked up in our lang/phones.txt (as they are, else lower-cased, so
Kaldi's `SIL` is our `sil`). Each run of frames of one phone is spread evenly over that phone's HMM states.
"""

import re
from pathlib import Path

from phonerec.base.errors import RecipeError
from phonerec.hmm.align import Topology

_POSITION = re.compile(r"_[BEIS]$")


def _rows(path: Path):
    """(line number, fields) of each non-blank line of a text file."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if fields := line.split():
                yield lineno, fields


def read_kaldi_phones(path: Path, phone_ids: dict[str, int]) -> dict[int, int]:
    """Kaldi's phones.txt (`<symbol> <id>`) -> {Kaldi id: our phone id}, for the symbols that are phones of ours;
    Kaldi's disambiguation symbols (#0 ...) and <eps> are left out."""
    mapping = {}
    for lineno, fields in _rows(path):
        if len(fields) != 2 or not fields[1].isdigit():
            raise RecipeError(f"{path}:{lineno}: expected '<phone> <id>', got {' '.join(fields)!r}")
        symbol = _POSITION.sub("", fields[0])
        ours = phone_ids.get(symbol, phone_ids.get(symbol.lower()))
        if ours is not None and ours != 0:
            mapping[int(fields[1])] = ours
    return mapping


def read_kaldi_alignment(path: Path, phones_path: Path, phone_ids: dict[str, int]) -> dict[str, tuple[list[int], int]]:
    """utterance -> (our phone id per frame, the line it is on). A phone id that Kaldi's phones.txt lacks, or whose
    phone is not one of ours, is a RecipeError naming the file, line and phone."""
    kaldi_to_ours = read_kaldi_phones(phones_path, phone_ids)
    found = {}
    for lineno, fields in _rows(path):
        utt, ids = fields[0], fields[1:]
        if not ids or not all(i.isdigit() for i in ids):
            raise RecipeError(f"{path}:{lineno}: expected '<utt> <phone id>...' (integers), utterance '{utt}'")
        unknown = sorted({int(i) for i in ids} - kaldi_to_ours.keys())
        if unknown:
            raise RecipeError(
                f"{path}:{lineno}: utterance '{utt}': phone ids {unknown} are not phones of {phones_path} that "
                "lang/phones.txt has (word-position suffixes _B/_E/_I/_S stripped)"
            )
        if utt in found:
            raise RecipeError(f"{path}:{lineno}: utterance '{utt}' again (first on line {found[utt][1]})")
        found[utt] = ([kaldi_to_ours[int(i)] for i in ids], lineno)
    if not found:
        raise RecipeError(f"{path}: no alignments")
    return found


def phones_to_states(frame_phones: list[int], topo: Topology) -> list[int]:
    """HMM states per frame: each run of frames of one phone spread evenly over the phone's states (a run
    shorter than the phone's states takes its first ones)."""
    states, start = [], 0
    for t in range(1, len(frame_phones) + 1):
        if t == len(frame_phones) or frame_phones[t] != frame_phones[start]:
            run, phone_states = t - start, topo.states(frame_phones[start])
            states += [phone_states[k * len(phone_states) // run] for k in range(run)]
            start = t
    return states
