"""Silently wrong inputs refused or merged, naming the file and line (issue 27 item 3): the lexicon's repeated lines
and words in another case. TIMIT's segments and the feature arks are tested in test_timit.py and test_features.py.
"""

import logging
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, make_fsdd_copy, write_wav

from phonerec.base.config import load_config
from phonerec.base.errors import RecipeError
from phonerec.data.data_dir import Utterance, write_data_dir
from phonerec.data.dataset import load_examples
from phonerec.data.lang import prepare_lang, read_lexicon
from phonerec.decoding.ctc_beam import PronunciationLMScorer
from phonerec.decoding.decoders import CTCLexiconWords
from phonerec.decoding.lm import NgramLM
from phonerec.pipeline.features_stage import make_features
from phonerec.pipeline.prepare_stage import prepare_stage

# Five words over the phones a, b, c (tokens: <blk> sil a b c).
LEXICON = "v b c\nw c a\nx a\ny b\nz a b\n"


def lang_and_lm(tmp_path, lexicon: str):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "lexicon.txt").write_text(lexicon)
    prepare_lang(tmp_path / "lexicon.txt", tmp_path / "lang")
    sentences = [["x", "y"], ["z"], ["w", "v", "x"], ["y", "y", "z"]]
    (tmp_path / "lm").mkdir()
    NgramLM.estimate(sentences, order=2).write_arpa(tmp_path / "lm" / "words.2gram.arpa")
    return tmp_path / "lang", tmp_path / "lm"


def test_a_repeated_lexicon_line_is_read_once_with_a_warning_and_variants_are_kept(tmp_path, caplog):
    (tmp_path / "lexicon.txt").write_text(LEXICON + "x a\nx a b\n\nx a\n")
    with caplog.at_level(logging.WARNING):
        lexicon = prepare_lang(tmp_path / "lexicon.txt", tmp_path / "lang")
    assert lexicon["x"] == [["a"], ["a", "b"]]  # a variant is kept
    assert f"{tmp_path / 'lexicon.txt'}:6: 'x a' repeats line 3; read once" in caplog.text
    assert f"{tmp_path / 'lexicon.txt'}:9: 'x a' repeats line 3; read once" in caplog.text
    assert (tmp_path / "lang" / "lexicon.txt").read_text().count("x a\n") == 1


def test_a_repeated_lexicon_line_leaves_the_ctc_lexicon_search_unchanged(tmp_path, caplog):
    """flashlight's lexicon search reads lang/lexicon.txt itself: with a line repeated (an edit after stage 0) its
    trie held the pronunciation twice, and at a small beam about one hypothesis in eight changed, hypotheses
    without the repeated word included. flashlight's search is itself not repeatable on some inputs (the same
    decoder, called again, can give another result), so the lexicons are compared where it is."""
    cfg = load_config(["decode.words.beam_size=5"])
    point = {"lm_weight": 1.0, "word_score": 0.0}
    torch.manual_seed(0)
    posteriors = [(torch.randn(12, 5) * 2).log_softmax(-1) for _ in range(100)]
    examples = [SimpleNamespace(utt=f"u{k:02d}") for k in range(len(posteriors))]
    clean = CTCLexiconWords(cfg, *lang_and_lm(tmp_path / "clean", LEXICON), {})
    runs = [clean.decode(point, examples, posteriors) for _ in range(8)]
    repeatable = [e.utt for e in examples if all(run[e.utt] == runs[0][e.utt] for run in runs)]
    assert len(repeatable) > 60

    lang, lm = lang_and_lm(tmp_path / "repeated", LEXICON)
    with open(lang / "lexicon.txt", "a") as f:
        f.write("x a\n")
    with caplog.at_level(logging.WARNING):
        hyps = CTCLexiconWords(cfg, lang, lm, {}).decode(point, examples, posteriors)
    assert {u: hyps[u] for u in repeatable} == {u: runs[0][u] for u in repeatable}
    assert f"{lang / 'lexicon.txt'}:6: 'x a' repeats line 3; read once" in caplog.text


def test_a_word_in_another_case_is_an_error_naming_the_line_and_the_lexicons_spelling(tmp_path):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text(LEXICON.replace("z a b", "Z a b"))
    with pytest.raises(
        RecipeError,
        match=rf"t\.words:7: 'u7': the word 'z' is not in the lexicon {lexicon}; it has 'Z' \({lexicon}:5\)",
    ):
        read_lexicon(lexicon).pronunciations("z", "t.words:7: 'u7'")
    words = " ".join(read_lexicon(lexicon))
    with pytest.raises(RecipeError, match=rf"the word 'q' is not in the lexicon {lexicon}; its words: {words}$"):
        read_lexicon(lexicon).pronunciations("q", "t.words:7: 'u7'")


def test_a_word_not_in_a_large_lexicon_names_the_closest(tmp_path):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("".join(f"w{k:03d} a\n" for k in range(100)) + "seven s eh v ah n\nseventy s eh v ah n t iy\n")
    with pytest.raises(RecipeError, match=r"'sevn' is not in the lexicon \S+; the closest of its 102 words: seven "):
        read_lexicon(lexicon).pronunciations("sevn", "t.words:7: 'u7'")
    with pytest.raises(RecipeError, match=r"'zzz' is not in the lexicon \S+$"):  # nothing close: nothing listed
        read_lexicon(lexicon).pronunciations("zzz", "t.words:7: 'u7'")


def test_a_text_words_word_only_in_another_case_is_named_by_its_line_when_loading(tmp_path):
    """It was 'phones do not spell text.words' (FSDD's preparation: KeyError: 'zero')."""
    lang, _ = lang_and_lm(tmp_path, LEXICON.replace("x a", "X a"))
    utts = [
        Utterance(f"s_{k}", "s", str(write_wav(tmp_path / "wav" / f"{k}.wav", seed=k)), phones, words)
        for k, (phones, words) in enumerate([(["b"], ["y"]), (["a"], ["x"])])
    ]
    write_data_dir(tmp_path / "data", utts)
    cfg = load_config(["corpus.sample_rate=8000", "nj=1"])
    make_features(tmp_path / "data", tmp_path / "feats", cfg, lang_dir=lang)
    with pytest.raises(RecipeError, match=r"text\.words:2: 's_1': the word 'x' is not in .*it has 'X' \(.*:3\)"):
        load_examples(tmp_path / "feats", lang, cfg.features)


def test_fsdd_with_a_lexicon_word_in_another_case_names_the_recording_and_the_spelling(tmp_path):
    """It was `KeyError: 'zero'`."""
    manifest = make_fsdd_copy(tmp_path / "fsdd", speakers=("george", "theo", "nicolas"), digits=[0, 1], takes=[0])
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text((REPO / "local/digits/lexicon.txt").read_text().replace("zero ", "Zero "))
    overrides = [f"corpus.root={tmp_path / 'fsdd'}", f"corpus.manifest={manifest}", f"corpus.lexicon={lexicon}"]
    cfg = load_config([*overrides, f"paths.data={tmp_path}/data", f"paths.downloads={tmp_path}/downloads"])
    with pytest.raises(RecipeError, match=r"0_\w+_0\.wav: the word 'zero' is not in .*; it has 'Zero' \(.*:11\)"):
        prepare_stage(cfg, tmp_path / "data", "fsdd")


def test_the_ctc_lexicon_search_weighs_each_pronunciation_by_its_probability(tmp_path):
    """With lang/lexiconp.txt, flashlight's search gets a word per pronunciation and the word LM (a
    PronunciationLMScorer) scores each with its probability: lm_weight * ln P(word | history) + ln P(pron); the
    hypotheses are the words again."""
    lang, lm_dir = lang_and_lm(tmp_path, LEXICON + "x c\n")
    lexicon = read_lexicon(lang / "lexicon.txt")
    probabilities = {w: [1.0] * len(p) for w, p in lexicon.items()} | {"x": [1.0, 0.25]}
    prepare_lang(lexicon, lang, probabilities=probabilities)
    decoder = CTCLexiconWords(load_config(["decode.words.beam_size=5"]), lang, lm_dir, {})
    _, _, units = decoder.pronunciations
    found = sorted((w, round(lp, 9)) for w, lp in units.values() if w != "<unk>")
    assert found == sorted([(w, 0.0) for w in "vwxyz"] + [("x", round(math.log(0.25), 9))])
    scorer = PronunciationLMScorer(list(units.values()), decoder.word_lm, lm_weight=0.5)
    second_x = [k for k, (w, lp) in enumerate(units.values()) if w == "x" and lp < 0][0]
    state, score = scorer.score(scorer.start(False), second_x)
    assert score == pytest.approx(0.5 * decoder.word_lm.logprob("x", ["<s>"]) + math.log(0.25))
    assert scorer.finish(state)[1] == pytest.approx(0.5 * decoder.word_lm.logprob("</s>", ["x"]))
    torch.manual_seed(1)
    posteriors = [(torch.randn(12, 5) * 2).log_softmax(-1) for _ in range(20)]
    examples = [SimpleNamespace(utt=f"u{k:02d}") for k in range(len(posteriors))]
    hyps = decoder.decode({"lm_weight": 1.0, "word_score": 0.0}, examples, posteriors)
    assert any(hyps.values()) and {w for h in hyps.values() for w in h} <= set("vwxyz")
