"""A Kaldi dict dir read and checked as utils/validate_dict_dir.pl checks it: every problem by file and line."""

import logging

import pytest

from phonerec.base.errors import DictDirError
from phonerec.data.dict_dir import read_dict_dir
from phonerec.data.lang import prepare_lang, read_silence_probabilities
from phonerec.hmm.align import word_variants

GOOD = {
    "silence_phones.txt": "sil\nspn nsn\n",
    "optional_silence.txt": "sil\n",
    "nonsilence_phones.txt": "ah\nb\nk t\n",
    "lexicon.txt": "<unk> spn\nbat b ah t\ncat k ah t\ncat k ah\n",
}


def make_dict_dir(root, **files):
    """GOOD with `files` replacing (or, None, removing) its files; names use _ for the dot: lexicon_txt."""
    root.mkdir(parents=True, exist_ok=True)
    contents = dict(GOOD)
    for key, text in files.items():
        contents[key.replace("_txt", ".txt")] = text
    for name, text in contents.items():
        if text is not None:
            (root / name).write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return root


def test_a_good_dict_dir_is_read_with_its_silence_phones_and_lexicon(tmp_path, caplog):
    dict_dir = make_dict_dir(tmp_path / "dict", extra_questions_txt="sil spn nsn\nah b k t\n")
    with caplog.at_level(logging.INFO, logger="phonerec.data.dict_dir"):
        read = read_dict_dir(dict_dir)
    assert read.silence_phones == ["sil", "spn", "nsn"] and read.optional_silence == "sil"
    assert read.nonsilence_phones == ["ah", "b", "k", "t"]
    assert read.lexicon["cat"] == [["k", "ah", "t"], ["k", "ah"]] and read.lexicon["<unk>"] == [["spn"]]
    assert read.probabilities is None
    assert "extra_questions.txt: not read" in caplog.text


def test_lexiconp_probabilities_are_kept_max_normalised_per_word(tmp_path):
    dict_dir = make_dict_dir(
        tmp_path / "dict",
        lexicon_txt=None,
        lexiconp_txt="<unk> 1.0 spn\nbat 0.5 b ah t\ncat 0.6 k ah t\ncat 0.2 k ah\n",
    )
    read = read_dict_dir(dict_dir)
    assert read.lexicon["cat"] == [["k", "ah", "t"], ["k", "ah"]]
    assert read.probabilities == {"<unk>": [1.0], "bat": [1.0], "cat": [1.0, pytest.approx(1 / 3)]}


def test_silence_probabilities_are_read_into_the_lang_dir_and_the_pronunciations(tmp_path):
    """lexiconp_silprob.txt (Kaldi's, MFA's columns): read by (word, pronunciation), written into the lang dir,
    and given to the pronunciations of a word sequence (hmm.align.word_variants); a pronunciation without a
    line has none of its own."""
    silprob = "bat 1.0 0.3 1.2 0.9 b ah t\ncat 1.0 0.25 0.8 1.1 k ah\n"
    read = read_dict_dir(make_dict_dir(tmp_path / "dict", lexiconp_silprob_txt=silprob))
    assert read.silence_probabilities == {
        ("bat", ("b", "ah", "t")): (0.3, 1.2, 0.9),
        ("cat", ("k", "ah")): (0.25, 0.8, 1.1),
    }
    lang = tmp_path / "lang"
    prepare_lang(
        read.lexicon, lang, silence_phones=["sil", "spn", "nsn"], silence_probabilities=read.silence_probabilities
    )
    silence = read_silence_probabilities(lang)
    assert silence == read.silence_probabilities
    ids = {p: i for i, p in enumerate(["<blk>", "sil", "ah", "b", "k", "nsn", "spn", "t"])}
    cat = word_variants(["cat"], read.lexicon, ids, None, silence=silence)[0]
    assert cat[0].silence_after is None and cat[1].silence_after == 0.25 and cat[1].no_silence_before == 1.1
    prepare_lang(read.lexicon, lang, silence_phones=["sil", "spn", "nsn"])  # another dict dir without: gone
    assert read_silence_probabilities(lang) == {}


@pytest.mark.parametrize(
    ("files", "where", "says"),
    [
        ({"lexiconp_silprob_txt": "cat 1.0 1.5 1 1 k ah\n"}, "lexiconp_silprob.txt:1", "must be in [0, 1]"),
        ({"lexiconp_silprob_txt": "cat 1.0 0.5 k ah\n"}, "lexiconp_silprob.txt:1", "expected <word>"),
        ({"lexiconp_silprob_txt": "cat 1.0 0.5 1 1 k t\n"}, "lexiconp_silprob.txt:1", "not a pronunciation"),
        ({"silence_phones_txt": "sil\r\nspn nsn\r\n"}, "silence_phones.txt:1", "carriage return"),
        ({"nonsilence_phones_txt": "ah\nb\nk t"}, "nonsilence_phones.txt:3", "does not end in a newline"),
        ({"nonsilence_phones_txt": "ah\n\nb\nk t\n"}, "nonsilence_phones.txt:2", "empty line"),
        ({"nonsilence_phones_txt": "ah\nb ah\nk t\n"}, "nonsilence_phones.txt:2", "phone 'ah' repeats"),
        ({"nonsilence_phones_txt": "ah\nb sil\nk t\n"}, "nonsilence_phones.txt:2", "also a silence phone"),
        ({"nonsilence_phones_txt": "ah\nb_B\nk t\n"}, "nonsilence_phones.txt:2", "word-position"),
        ({"silence_phones_txt": "sil\n#1\n"}, "silence_phones.txt:2", "disambiguation symbol"),
        ({"optional_silence_txt": "sil spn\n"}, "optional_silence.txt:1", "one phone expected, found 2"),
        ({"optional_silence_txt": "ah\n"}, "optional_silence.txt:1", "'ah' is not in silence_phones.txt"),
        ({"lexicon_txt": "bat b ah t\nbat b ah t\n"}, "lexicon.txt:2", "repeats line 1"),
        ({"lexicon_txt": "bat b ah t\n<s> sil\n"}, "lexicon.txt:2", "'<s>' is a reserved word"),
        ({"lexicon_txt": "bat b ah t\ncat\n"}, "lexicon.txt:2", "word 'cat' has an empty pronunciation"),
        ({"lexicon_txt": "bat b ah t\ncat k ae t\n"}, "lexicon.txt:2", "phone 'ae' is in neither"),
        ({"lexicon_txt": b"bat b ah t\n" + b"caf\xe9 k ah\n"}, "lexicon.txt:2", "not UTF-8"),
        ({"lexicon_txt": None, "lexiconp_txt": "bat 1.5 b ah t\n"}, "lexiconp.txt:1", "'1.5' is no pronunciation"),
        ({"lexiconp_txt": "<unk> 1 spn\nbat 1 b ah t\ncat 1 k ah\ncat 1 k ah t\n"}, "lexiconp.txt:3", "differs from"),
    ],
)
def test_each_problem_is_named_by_file_and_line(tmp_path, files, where, says):
    dict_dir = make_dict_dir(tmp_path / "dict", **files)
    with pytest.raises(DictDirError) as error:
        read_dict_dir(dict_dir)
    message = str(error.value)
    assert f"invalid dict dir {dict_dir}" in message
    line = next(
        line for line in message.splitlines() if f"{dict_dir}/{where}:" in line or f"{dict_dir}/{where} " in line
    )
    assert says in line, message


def test_every_problem_is_listed_at_once_and_missing_files_are_named(tmp_path):
    dict_dir = make_dict_dir(tmp_path / "dict", lexicon_txt="bat b ah x\ncat k ah y\n", optional_silence_txt="ah\n")
    with pytest.raises(DictDirError, match=r"\(3 problems\)"):
        read_dict_dir(dict_dir)
    with pytest.raises(DictDirError, match=r"missing or empty: optional_silence.txt, lexicon.txt \(or lexiconp.txt\)"):
        read_dict_dir(make_dict_dir(tmp_path / "other", optional_silence_txt="", lexicon_txt=None))
