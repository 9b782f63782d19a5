"""The character vocabulary: a standard transformers Wav2Vec2Processor (Wav2Vec2CTCTokenizer).

The vocabulary is built from the *training* transcripts only (a character seen only in dev data must
not get a label the model never trained), for any script: thousands of CJK characters are normal.
Characters seen fewer than `min_count` times get no label of their own and map to [UNK]. The
tokenizer records the language of its text rules (`asr_dist_language` in tokenizer_config.json), so
evaluation and export know it from the processor alone; transformers ignores the extra key.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is imported on use: prepare's worker processes only normalize text
    from transformers import Wav2Vec2Processor

PAD_TOKEN = "[PAD]"  # id 0, also the CTC blank
UNK_TOKEN = "[UNK]"
WORD_DELIMITER = "|"  # stands for the space between words
LANGUAGE_KEY = "asr_dist_language"  # in tokenizer_config.json


def ctc_label_count(text: str) -> int:
    """Frames CTC needs for `text`: one per character (space = word delimiter) plus a blank
    between each pair of equal neighbours (the "LL" in HELLO cannot be emitted without one)."""
    repeats = sum(1 for a, b in zip(text, text[1:]) if a == b)
    return len(text) + repeats


@dataclass(frozen=True)
class VocabReport:
    """What `min_count` cost: characters left without a label, and their share of the text."""

    vocab_size: int  # labels, special tokens included
    rare_chars: str  # the characters mapped to [UNK], most frequent first
    rare_occurrences: int
    total_chars: int  # characters of the texts, spaces excluded

    @property
    def rare_share(self) -> float:
        return self.rare_occurrences / max(self.total_chars, 1)


def char_counts(texts: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for t in texts:
        counts.update(t)
    counts.pop(" ", None)
    return counts


def build_vocab(texts: Iterable[str], min_count: int = 1) -> dict[str, int]:
    """Character vocabulary: [PAD]=0 (CTC blank), [UNK]=1, |=2 (space), then the sorted characters seen
    at least `min_count` times (rarer ones are spelled [UNK] by the tokenizer)."""
    return _vocab(char_counts(texts), min_count)


def _vocab(counts: Counter, min_count: int) -> dict[str, int]:
    if min_count < 1:
        raise ValueError(f"min_count = {min_count}: expected an integer >= 1")
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1, WORD_DELIMITER: 2}
    for c in sorted(c for c, n in counts.items() if n >= min_count):
        if c in vocab:
            raise ValueError(f"transcripts contain {c!r}, which is reserved for the word delimiter")
        vocab[c] = len(vocab)
    return vocab


def vocab_report(texts: Iterable[str], min_count: int = 1) -> VocabReport:
    counts = char_counts(texts)
    rare = [(c, n) for c, n in counts.most_common() if n < min_count]
    return VocabReport(vocab_size=len(_vocab(counts, min_count)), rare_chars="".join(c for c, _ in rare),
                       rare_occurrences=sum(n for _, n in rare), total_chars=sum(counts.values()))


def build_processor(texts: Iterable[str], out_dir: str | Path | None = None,
                    sample_rate: int = 16000, *, min_count: int = 1,
                    language: str | None = None) -> "Wav2Vec2Processor":
    """Wav2Vec2Processor whose tokenizer spells exactly the characters of `texts` (already normalized
    *training* transcripts; those seen fewer than `min_count` times become [UNK]); saved with
    `save_pretrained` into `out_dir` when given. `language` is recorded in the tokenizer's config."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    vocab = build_vocab(texts, min_count)
    if len(vocab) == 3:
        raise ValueError("no characters in the transcripts: cannot build a vocabulary"
                         + (f" (min_count {min_count})" if min_count > 1 else ""))
    extra = {LANGUAGE_KEY: language} if language else {}
    with tempfile.TemporaryDirectory(prefix="asr_dist_vocab_") as scratch:  # the tokenizer reads it at init
        vocab_file = Path(scratch) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=1))
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file), unk_token=UNK_TOKEN, pad_token=PAD_TOKEN, word_delimiter_token=WORD_DELIMITER,
            bos_token=None, eos_token=None, do_lower_case=False,  # no <s></s>: the CTC head has len(vocab) outputs
            **extra,
        )
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sample_rate, padding_value=0.0, do_normalize=True, return_attention_mask=True,
    )
    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    if out_dir is not None:
        processor.save_pretrained(str(out_dir))
    return processor


def processor_language(processor, default: str | None = None) -> str | None:
    """The language a processor's vocabulary was built for; `default` when it records none (processors
    from before languages, which are English, or other tools' processors)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    return (getattr(tokenizer, "init_kwargs", {}) or {}).get(LANGUAGE_KEY) or default


def load_processor(path: str | Path) -> "Wav2Vec2Processor":
    """Load a processor folder written by `build_processor` (or any save_pretrained folder)."""
    from transformers import Wav2Vec2Processor

    path = Path(path)
    if not (path / "vocab.json").is_file():
        raise FileNotFoundError(f"{path} is not a processor folder (no vocab.json); "
                                "write one with `asr-dist prepare ... --processor`")
    return Wav2Vec2Processor.from_pretrained(str(path))

