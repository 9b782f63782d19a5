"""Normalization rules and the character vocabulary (asr_dist/text.py)."""

from __future__ import annotations

import json

import pytest

from asr_dist.text import (
    TextRules,
    UnnormalizableText,
    build_processor,
    build_vocab,
    ctc_label_count,
    load_processor,
    normalize_text,
)


@pytest.mark.parametrize("raw, expected", [
    ("Hello, world!", "HELLO WORLD"),
    ("  many   spaces\tand\ttabs\n", "MANY SPACES AND TABS"),
    ("Don't stop", "DON'T STOP"),
    ("O\u2019Brien\u2019s hat", "O'BRIEN'S HAT"),  # curly apostrophes become '
    ("'Quoted' words", "QUOTED WORDS"),  # apostrophes used as quotes go
    ("well-known \u2014 indeed", "WELL KNOWN INDEED"),  # hyphen and em dash split words
    ("Caf\u00e9 na\u00efve r\u00e9sum\u00e9", "CAFE NAIVE RESUME"),
    ("U.S.A.", "USA"),
    ("(parentheses) [brackets] \"quotes\"; colons: ok?", "PARENTHESES BRACKETS QUOTES COLONS OK"),
    ("...", ""),
    ("", ""),
])
def test_normalize_librispeech_style(raw, expected):
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("raw", ["I have 3 cats", "ten % off", "salt & pepper", "and/or", "#1", "\u00a3 five", "\u041f\u0440\u0438\u0432\u0435\u0442"])
def test_unspeakable_characters_are_rejected_not_guessed(raw):
    with pytest.raises(UnnormalizableText):
        normalize_text(raw)


def test_the_rejection_names_each_character_and_the_way_out():
    with pytest.raises(UnnormalizableText) as error:
        normalize_text("320 km at 3 %")
    message = str(error.value)
    assert all(f"'{c}'" in message for c in "320%") and "320" not in message  # each character, not glued
    assert "--unspeakable drop" in message


def test_rules_are_configurable():
    assert normalize_text("I have 3 cats", unspeakable="drop") == "I HAVE CATS"
    assert normalize_text("well-known", dashes_to_spaces=False) == "WELLKNOWN"
    assert normalize_text("don't", keep_apostrophes=False) == "DONT"
    assert normalize_text("caf\u00e9", strip_accents=False, unspeakable="drop") == "CAF"
    rules = TextRules(keep_apostrophes=False)
    assert normalize_text("it's well-known", rules) == "ITS WELL KNOWN"
    with pytest.raises(ValueError):
        TextRules(unspeakable="guess")


def test_ctc_label_count_adds_a_blank_between_repeated_letters():
    assert ctc_label_count("CAT") == 3
    assert ctc_label_count("HELLO") == 6  # LL needs a blank between
    assert ctc_label_count("A  B") == 5  # (normalized text never has this; counted anyway)
    assert ctc_label_count("") == 0


def test_vocab_layout_from_training_texts_only():
    vocab = build_vocab(["HELLO WORLD", "IT'S"])
    assert list(vocab)[:3] == ["[PAD]", "[UNK]", "|"]
    assert list(vocab.values()) == list(range(len(vocab)))
    assert list(vocab)[3:] == sorted("HELOWRDITS'")  # sorted unique characters, no space
    with pytest.raises(ValueError, match="word delimiter"):
        build_vocab(["A|B"])


def test_processor_round_trip(tmp_path):
    train_texts = ["THE CAT SAT", "A DOG'S BONE"]
    processor = build_processor(train_texts, tmp_path / "processor")
    tok = processor.tokenizer
    vocab = json.loads((tmp_path / "processor" / "vocab.json").read_text())
    assert vocab == build_vocab(train_texts)
    assert len(tok) == len(vocab)  # no extra <s>/</s>: this is the CTC head size
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1 and tok.word_delimiter_token_id == 2

    ids = tok("THE CAT SAT").input_ids
    assert ids == [vocab[c] for c in "THE|CAT|SAT"]
    assert tok.decode(ids, group_tokens=False) == "THE CAT SAT"
    assert tok("ZEBRA").input_ids[0] == tok.unk_token_id  # Z is not in the training texts

    fe = processor.feature_extractor
    assert (fe.sampling_rate, fe.do_normalize, fe.return_attention_mask, fe.padding_value) == (16000, True, True, 0.0)

    loaded = load_processor(tmp_path / "processor")
    assert loaded.tokenizer.get_vocab() == tok.get_vocab()
    assert loaded.tokenizer("A DOG'S BONE").input_ids == tok("A DOG'S BONE").input_ids
    assert loaded.feature_extractor.to_dict() == fe.to_dict()


def test_build_processor_without_folder_and_errors(tmp_path):
    processor = build_processor(["AB"])
    assert len(processor.tokenizer) == 5
    with pytest.raises(ValueError, match="no characters"):
        build_processor(["", " "])
    with pytest.raises(FileNotFoundError, match="not a processor folder"):
        load_processor(tmp_path)
