"""Utterances as the models see them (features after CMVN and deltas, phone ids, word ends, and with
hmm.pronunciations=variants every pronunciation of each word) and length-bucketed batches."""

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from phonerec.base.errors import RecipeError
from phonerec.data.data_dir import read_table, validate_data_dir
from phonerec.data.features import FeatureReader
from phonerec.data.lang import (
    read_lexicon,
    read_phones,
    read_pronunciation_probabilities,
    read_silence_probabilities,
)
from phonerec.hmm.align import Pronunciation, word_variants

log = logging.getLogger(__name__)


@dataclass
class Example:
    utt: str
    speaker: str
    feats: torch.Tensor  # (frames, dim), float32
    phones: list[int]  # ids of lang/phones.txt, as `text` has them (with silence for TIMIT, without for digits)
    word_ends: list[int] | None  # indices into `phones` where a word ends; None: unknown
    # every pronunciation of each word, the first as `phones` spells it (hmm.pronunciations=variants); None: the
    # alignment graph is `phones`' chain
    pronunciations: list[list[Pronunciation]] | None = None
    words: list[str] | None = None  # the words of `pronunciations` (text.words), where it is set


def word_ends(words: list[str], phones: list[str], lexicon: dict[str, list[list[str]]]) -> list[int] | None:
    """Where each word ends in the phone sequence, if some choice of pronunciations spells it exactly."""
    ends, pos = [], 0
    for word in words:
        for pron in lexicon.get(word, []):
            if phones[pos : pos + len(pron)] == pron:
                pos += len(pron)
                ends.append(pos - 1)
                break
        else:
            return None
    return ends if pos == len(phones) else None


def load_examples(
    feat_dir: Path, lang_dir: Path, fcfg: DictConfig, word_boundaries: bool = True, variants: bool = False
) -> list[Example]:
    """Every utterance of a feature dir, in memory (FSDD and TIMIT fit easily). word_boundaries: find where
    words end (from text.words and the lexicon), for optional silence between words. variants: each word's
    every pronunciation (lang/lexicon.txt), with its log-probability (lang/lexiconp.txt's, or 0), the one that
    `text` spells first; it needs word_boundaries and text.words."""
    validate_data_dir(feat_dir, lang_dir, check_audio=False)
    phone_ids = read_phones(lang_dir)
    lexicon = read_lexicon(lang_dir / "lexicon.txt")
    if variants and not (word_boundaries and (feat_dir / "text.words").is_file()):
        raise RecipeError(
            f"{feat_dir}: hmm.pronunciations=variants needs word transcripts (text.words) and hmm.optional_silence"
        )
    probabilities = read_pronunciation_probabilities(lang_dir) if variants else None
    silence = read_silence_probabilities(lang_dir) if variants else None
    reader = FeatureReader(feat_dir, fcfg)
    text = read_table(feat_dir / "text")
    has_words = word_boundaries and (feat_dir / "text.words").is_file()
    words = read_table(feat_dir / "text.words") if has_words else {}
    utt2spk = read_table(feat_dir / "utt2spk")
    # A validated table has one line per utterance, in order: the line of each utterance, for messages.
    word_lines = {utt: lineno for lineno, utt in enumerate(words, 1)}
    examples = []
    for utt, transcript in text.items():
        phones = transcript.split()
        for word in words.get(utt, "").split():
            lexicon.pronunciations(word, f"{feat_dir}/text.words:{word_lines[utt]}: '{utt}'")
        ends = word_ends(words[utt].split(), phones, lexicon) if utt in words else None
        if utt in words and ends is None:
            raise RecipeError(f"{feat_dir}/text: '{utt}': phones do not spell text.words by {lang_dir}/lexicon.txt")
        feats = torch.from_numpy(reader[utt])
        ids = [phone_ids[p] for p in phones]
        variant_lists = None
        if variants:  # the pronunciation text spells first
            spelled = word_spellings(phones, ends)
            variant_lists = word_variants(words[utt].split(), lexicon, phone_ids, probabilities, spelled, silence)
        examples.append(
            Example(utt, utt2spk[utt], feats, ids, ends, variant_lists, words[utt].split() if variants else None)
        )
    return examples


def word_spellings(phones: list[str], ends: list[int]) -> list[list[str]]:
    """Each word's phones, cut from the phone sequence at its word ends (word_ends')."""
    return [phones[a + 1 : b + 1] for a, b in zip([-1, *ends[:-1]], ends, strict=True)]


def make_batches(lengths: list[int], batch_frames: int, max_utts: int, rng: random.Random | None = None):
    """Indices grouped by similar length so that padding stays small: sorted by length, cut where the padded
    size (longest x count) would pass `batch_frames`; the batch order is shuffled when `rng` is given."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > batch_frames or len(current) == max_utts:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def collate(examples: list[Example], transform=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded (batch, frames, dim) features and their lengths; `transform` (a training augmentation such as
    phonerec.training.augment.SpecAugment) maps the padded batch and its lengths to new features of its shape."""
    lengths = torch.tensor([e.feats.shape[0] for e in examples])
    feats = torch.nn.utils.rnn.pad_sequence([e.feats for e in examples], batch_first=True)
    return (feats if transform is None else transform(feats, lengths)), lengths
