"""Transcript normalization and the character vocabulary (a transformers Wav2Vec2Processor).

A CTC model can only learn to emit characters it has labels for, and it can only be judged fairly
when reference and hypothesis are spelled alike. So every transcript goes through one
LibriSpeech-style normalization — uppercase A–Z, the apostrophe, single spaces — before it is
written into a shard, and the vocabulary is built from the *training* transcripts only (a character
seen only in dev data must not get a label the model never trained).

Text whose spoken form we cannot know (digits, symbols such as % or &, non-Latin letters) is not
guessed at: `normalize_text` raises `UnnormalizableText` and `asr-dist prepare` rejects the utterance.
"""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is imported on use: prepare's worker processes only normalize text
    from transformers import Wav2Vec2Processor

PAD_TOKEN = "[PAD]"  # id 0, also the CTC blank
UNK_TOKEN = "[UNK]"
WORD_DELIMITER = "|"  # stands for the space between words

_APOSTROPHES = "\u2019\u2018\u02bc\u0060\u00b4"  # ’ ‘ ʼ ` ´ -> '
_SPOKEN_PUNCTUATION = set("&%#@*/\\")  # punctuation by Unicode, yet read aloud ("and", "percent" ...)
_INNER_APOSTROPHE = re.compile(r"(?<=[A-Z])'(?=[A-Z])")


class UnnormalizableText(ValueError):
    """The transcript holds characters whose spoken form is unknown (digits, symbols, other scripts)."""


@dataclass(frozen=True)
class TextRules:
    """The normalization rules; the defaults are LibriSpeech's conventions."""

    keep_apostrophes: bool = True  # inner apostrophes (DON'T, O'BRIEN); quote-like ones at word edges go
    dashes_to_spaces: bool = True  # WELL-KNOWN -> WELL KNOWN (else the words are glued)
    strip_accents: bool = True  # CAFÉ -> CAFE
    unspeakable: str = "reject"  # digits/symbols/other letters: "reject" (raise) or "drop"

    def __post_init__(self) -> None:
        if self.unspeakable not in ("reject", "drop"):
            raise ValueError(f"TextRules.unspeakable = {self.unspeakable!r}; choose 'reject' or 'drop'")


def normalize_text(text: str, rules: TextRules | None = None, **overrides) -> str:
    """Return `text` in the training alphabet (A–Z, ', single spaces); "" when nothing is left.

    Rules come from `rules` and/or keyword overrides (`normalize_text(t, dashes_to_spaces=False)`).
    Punctuation is dropped; characters that would be spoken (digits, symbols, letters outside A–Z)
    raise `UnnormalizableText` unless `unspeakable="drop"`.
    """
    rules = rules or TextRules()
    if overrides:
        rules = TextRules(**{**rules.__dict__, **overrides})
    if rules.strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.upper()
    out: list[str] = []
    bad: list[str] = []
    for c in text:
        category = unicodedata.category(c)
        if "A" <= c <= "Z" or c == " ":
            out.append(c)
        elif c == "'" or c in _APOSTROPHES:
            out.append("'" if rules.keep_apostrophes else "")
        elif category == "Pd":  # hyphens and dashes
            out.append(" " if rules.dashes_to_spaces else "")
        elif category.startswith("P") and c not in _SPOKEN_PUNCTUATION:  # other punctuation is not spoken
            out.append("")
        elif category.startswith(("Z", "C")):  # other spaces, tabs, newlines, control characters
            out.append(" ")
        else:  # digits, symbols, letters of other scripts: their spoken form is unknown
            bad.append(c)
            out.append(" ")
    if bad and rules.unspeakable == "reject":
        chars = ", ".join(repr(c) for c in dict.fromkeys(bad))  # each character once, as they appear
        raise UnnormalizableText(f"cannot spell {chars} in A-Z: write them out in words, or drop them with "
                                 "`asr-dist prepare --unspeakable drop`")
    normalized = "".join(out)
    if rules.keep_apostrophes:  # keep only apostrophes between two letters
        normalized = _INNER_APOSTROPHE.sub("\0", normalized).replace("'", "").replace("\0", "'")
    return " ".join(normalized.split())


def ctc_label_count(text: str) -> int:
    """Frames CTC needs for `text`: one per character (space = word delimiter) plus a blank
    between each pair of equal neighbours (the "LL" in HELLO cannot be emitted without one)."""
    repeats = sum(1 for a, b in zip(text, text[1:]) if a == b)
    return len(text) + repeats


def build_vocab(texts: Iterable[str]) -> dict[str, int]:
    """Character vocabulary: [PAD]=0 (CTC blank), [UNK]=1, |=2 (space), then the sorted characters."""
    chars = sorted({c for t in texts for c in t} - {" "})
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1, WORD_DELIMITER: 2}
    for c in chars:
        if c in vocab:
            raise ValueError(f"transcripts contain {c!r}, which is reserved for the word delimiter")
        vocab[c] = len(vocab)
    return vocab


def build_processor(texts: Iterable[str], out_dir: str | Path | None = None,
                    sample_rate: int = 16000) -> "Wav2Vec2Processor":
    """Wav2Vec2Processor whose tokenizer spells exactly the characters of `texts` (already normalized
    *training* transcripts); saved with `save_pretrained` into `out_dir` when given."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    vocab = build_vocab(texts)
    if len(vocab) == 3:
        raise ValueError("no characters in the transcripts: cannot build a vocabulary")
    with tempfile.TemporaryDirectory(prefix="asr_dist_vocab_") as scratch:  # the tokenizer reads it at init
        vocab_file = Path(scratch) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=1))
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file), unk_token=UNK_TOKEN, pad_token=PAD_TOKEN, word_delimiter_token=WORD_DELIMITER,
            bos_token=None, eos_token=None, do_lower_case=False,  # no <s></s>: the CTC head has len(vocab) outputs
        )
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sample_rate, padding_value=0.0, do_normalize=True, return_attention_mask=True,
    )
    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    if out_dir is not None:
        processor.save_pretrained(str(out_dir))
    return processor


def load_processor(path: str | Path) -> "Wav2Vec2Processor":
    """Load a processor folder written by `build_processor` (or any save_pretrained folder)."""
    from transformers import Wav2Vec2Processor

    path = Path(path)
    if not (path / "vocab.json").is_file():
        raise FileNotFoundError(f"{path} is not a processor folder (no vocab.json); "
                                "write one with `asr-dist prepare ... --processor`")
    return Wav2Vec2Processor.from_pretrained(str(path))

