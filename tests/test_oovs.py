"""Words the lexicon lacks: found, reported as MFA reports them, and refused, skipped or mapped (corpus.oov)."""

import logging

import pytest

from phonerec.base.errors import RecipeError
from phonerec.data.oovs import find_oovs, handle_oovs

LEXICON = {"<unk>", "one", "two", "three"}
TRANSCRIPTS = {
    "a_1": ["one", "two"],
    "a_2": ["one", "fourty", "two", "fourty", "Two"],
    "b_1": ["three", "five"],
}


def test_oovs_are_counted_per_word_and_listed_per_utterance_in_their_order(tmp_path):
    oovs = find_oovs(TRANSCRIPTS, LEXICON)
    assert dict(oovs.counts) == {"fourty": 2, "Two": 1, "five": 1}  # case kept: `Two` is not `two`
    assert oovs.utterances == {"a_2": ["fourty", "fourty", "Two"], "b_1": ["five"]}
    found, per_utterance = oovs.write_reports(tmp_path)
    assert found.read_text() == "fourty 2\nTwo 1\nfive 1\n"
    assert per_utterance.read_text() == "a_2 fourty fourty Two\nb_1 five\n"


def test_an_oov_refuses_the_corpus_by_default_naming_the_reports_and_the_commonest(tmp_path):
    with pytest.raises(RecipeError) as error:
        handle_oovs(TRANSCRIPTS, LEXICON, "error", "<unk>", tmp_path)
    message = str(error.value)
    assert message.startswith("4 words of 2 utterances (3 distinct) are not in the lexicon: fourty (2), Two (1), five")
    assert str(tmp_path / "oovs_found.txt") in message and "corpus.oov=skip" in message
    assert (tmp_path / "utterance_oovs.txt").is_file()


def test_skip_leaves_out_the_utterances_and_unk_maps_the_words(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        kept = handle_oovs(TRANSCRIPTS, LEXICON, "skip", None, tmp_path)
    assert kept == {"a_1": ["one", "two"]}
    assert "2 utterances left out" in caplog.text
    mapped = handle_oovs(TRANSCRIPTS, LEXICON, "unk", "<unk>", tmp_path)
    assert mapped["a_2"] == ["one", "<unk>", "two", "<unk>", "<unk>"] and mapped["a_1"] == ["one", "two"]
    with pytest.raises(RecipeError, match="corpus.oov_word=<oov>, which the lexicon lacks"):
        handle_oovs(TRANSCRIPTS, LEXICON, "unk", "<oov>", tmp_path)


def test_no_oov_writes_empty_reports_and_changes_nothing(tmp_path):
    clean = {"a_1": ["one", "two"]}
    assert handle_oovs(clean, LEXICON, "error", None, tmp_path) == clean
    assert (tmp_path / "oovs_found.txt").read_text() == "" and (tmp_path / "utterance_oovs.txt").read_text() == ""
