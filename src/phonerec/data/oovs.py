"""Words of the transcripts that the lexicon lacks (out of vocabulary), found before anything trains, reported as
MFA's validation reports them, and handled as `corpus.oov` says:

error  (the default) the corpus is refused, naming the report files and the commonest OOVs
skip   the utterances holding an OOV are left out, and the log says how many
unk    each OOV becomes `corpus.oov_word` (Kaldi's `<unk>`, as utils/prepare_lang.sh takes it), which the lexicon must
       have (a garbage phone such as spn)

oovs_found.txt      `<word> <count>` a line, the commonest first (ties in C-locale order)
utterance_oovs.txt  `<utterance> <word>...` a line, the utterance's OOVs in transcript order, in utterance order
"""

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from phonerec.base.errors import RecipeError
from phonerec.base.files import write_text_atomic
from phonerec.base.schema import OOV_POLICIES

log = logging.getLogger(__name__)

SHOWN = 10  # OOVs named in an error


@dataclass
class Oovs:
    counts: Counter  # word -> occurrences in the transcripts
    utterances: dict[str, list[str]]  # utterance -> its OOVs, in transcript order (utterances with none left out)

    def write_reports(self, folder: Path) -> tuple[Path, Path]:
        """oovs_found.txt and utterance_oovs.txt in `folder` (both written, empty when there are no OOVs)."""
        found, per_utterance = Path(folder) / "oovs_found.txt", Path(folder) / "utterance_oovs.txt"
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        write_text_atomic(found, "".join(f"{word} {count}\n" for word, count in ranked))
        write_text_atomic(per_utterance, "".join(f"{utt} {' '.join(w)}\n" for utt, w in self.utterances.items()))
        return found, per_utterance


def find_oovs(transcripts: dict[str, list[str]], vocabulary) -> Oovs:
    """The OOVs of `transcripts` (utterance -> words, in utterance order) against `vocabulary` (a Lexicon, or any
    container of words). Words are compared as written: no case folding, as Kaldi's are not."""
    counts: Counter = Counter()
    utterances = {}
    for utt, words in transcripts.items():
        missing = [word for word in words if word not in vocabulary]
        if missing:
            counts.update(missing)
            utterances[utt] = missing
    return Oovs(counts, utterances)


def handle_oovs(
    transcripts: dict[str, list[str]], vocabulary, policy: str, oov_word: str | None, report_dir: Path
) -> dict[str, list[str]]:
    """The transcripts as training reads them under `policy` (OOV_POLICIES); the reports are written to report_dir
    first, whatever the policy."""
    if policy not in OOV_POLICIES:
        raise RecipeError(f"corpus.oov={policy}: expected one of {', '.join(OOV_POLICIES)}")
    oovs = find_oovs(transcripts, vocabulary)
    found, per_utterance = oovs.write_reports(report_dir)
    if not oovs.counts:
        return transcripts
    total, words = sum(oovs.counts.values()), len(oovs.counts)
    summary = f"{total} words of {len(oovs.utterances)} utterances ({words} distinct) are not in the lexicon"
    if policy == "error":
        common = ", ".join(f"{w} ({c})" for w, c in sorted(oovs.counts.items(), key=lambda i: (-i[1], i[0]))[:SHOWN])
        raise RecipeError(
            f"{summary}: {common}{' ...' if words > SHOWN else ''}; they are listed in {found} and {per_utterance}. "
            "Add them to the lexicon, or set corpus.oov=skip (leave those utterances out) or corpus.oov=unk (map them "
            "to corpus.oov_word)"
        )
    if policy == "skip":
        log.warning("%s: %d utterances left out (corpus.oov=skip; %s)", summary, len(oovs.utterances), per_utterance)
        return {utt: words for utt, words in transcripts.items() if utt not in oovs.utterances}
    if oov_word is None or oov_word not in vocabulary:
        raise RecipeError(
            f"corpus.oov=unk maps OOVs to corpus.oov_word={oov_word}, which the lexicon lacks: add a line such as "
            f"'{oov_word or '<unk>'} spn' (a garbage phone of silence_phones.txt)"
        )
    log.warning("%s: each mapped to %s (corpus.oov=unk; %s)", summary, oov_word, found)
    return {utt: [w if w in vocabulary else oov_word for w in words] for utt, words in transcripts.items()}
