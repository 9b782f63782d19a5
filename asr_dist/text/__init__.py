"""Text rules per language, the character vocabulary, and error rates that fit the language.

languages.py  the table: one entry per language (scripts, case, spaces, accents, primary metric)
normalize.py  `normalize_text` / `TextRules`: what `asr-dist prepare` applies to every transcript
vocab.py      the Wav2Vec2Processor built from the training transcripts (any script, [UNK] for rare characters)
scoring.py    CER, WER where words are spaced, mixed error rate for CJK + Latin text
"""

from asr_dist.text.languages import LANGUAGES, Language, UnknownLanguage, get_language
from asr_dist.text.normalize import TextRules, UnnormalizableText, normalize_text
from asr_dist.text.vocab import (
    LANGUAGE_KEY,
    PAD_TOKEN,
    UNK_TOKEN,
    WORD_DELIMITER,
    VocabReport,
    build_processor,
    build_vocab,
    ctc_label_count,
    load_processor,
    processor_language,
    vocab_report,
)

__all__ = [
    "LANGUAGES", "LANGUAGE_KEY", "Language", "PAD_TOKEN", "TextRules", "UNK_TOKEN", "UnknownLanguage",
    "UnnormalizableText", "VocabReport", "WORD_DELIMITER", "build_processor", "build_vocab", "ctc_label_count",
    "get_language", "load_processor", "normalize_text", "processor_language", "vocab_report",
]
