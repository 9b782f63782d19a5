"""Sentences and voices for `asr-dist synth --language CODE` in languages other than English.

One table entry per language: the espeak-ng voices that speak it, and the Debian package and fortune
files its sentences come from. Sentences are kept only when a text-to-speech engine will read them as
written, checked with the language's own text rules (asr_dist/text): no digits or symbols (their spoken
form is a guess), no letters of another script, no acronyms, stray capitals or abbreviations ("Sr.",
"z.B."). The transcript is the sentence through `normalize_text(..., language=CODE)`, exactly what
`asr-dist prepare --language CODE` will produce, so prepare keeps every utterance.

Reserved for independent evaluation and never read: fortunes-zh's `tang300` and `song100` (only its
`chinese` file is used), the Spanish Bible, and mbrola voices.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from asr_dist.corpus.texts import FORTUNE_DIR, Sentence
from asr_dist.text import UnnormalizableText, get_language, normalize_text
from asr_dist.text.scoring import mixed_tokens

RESERVED_FORTUNES = ("tang300", "song100")  # fortunes-zh's classical poems: independent evaluation only


@dataclass(frozen=True)
class SynthLanguage:
    code: str  # ISO 639-1, an entry of asr_dist.text.languages
    espeak_voices: tuple[str, ...]  # espeak-ng voice names; variants (+m1, +f2 ...) are added to each
    package: str  # the Debian package with the texts
    fortunes: tuple[str, ...]  # files, or folders of *.fortunes / plain files, under FORTUNE_DIR


SYNTH_LANGUAGES: dict[str, SynthLanguage] = {lang.code: lang for lang in (
    SynthLanguage("zh", ("cmn",), "fortunes-zh", ("chinese",)),
    SynthLanguage("es", ("es", "es-419"), "fortunes-es", ("es",)),
    SynthLanguage("de", ("de",), "fortunes-de", ("de",)),
    SynthLanguage("it", ("it",), "fortunes-it", ("it",)),
    SynthLanguage("ru", ("ru",), "fortunes-ru", ("ru",)),
)}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A sentence ends after . ! ? (or their full-width forms, or ；) and any closing quotes.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？；…])[\"'»”’)）」』]*\s*")
# Punctuation a sentence may hold (for prosody); anything else that is not a letter goes through the
# language's rules, which reject digits and symbols.
_ABBREVIATION = re.compile(r"\b\w{1,3}\.\s*(?=\w)")  # "Sr. García", "z.B. das", "т.е. это"


def synth_language(code: str) -> SynthLanguage:
    try:
        return SYNTH_LANGUAGES[code]
    except KeyError:
        raise ValueError(f"synth: no voices and texts for language {code!r}; known: en, "
                         f"{', '.join(sorted(SYNTH_LANGUAGES))}") from None


def fortune_files(lang: SynthLanguage, fortune_dir: Path = FORTUNE_DIR) -> list[Path]:
    """The language's fortune files (sorted; the offensive `off/` folders and reserved files left out)."""
    files: list[Path] = []
    for name in lang.fortunes:
        path = fortune_dir / name
        if path.is_dir():
            files += [p for p in path.iterdir() if p.is_file() and p.suffix not in (".dat", ".u8")]
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: texts for --language {lang.code} missing (apt install {lang.package})")
    files = sorted(p for p in files if p.name not in RESERVED_FORTUNES)
    if not files:
        raise FileNotFoundError(f"{fortune_dir}: no fortune files for {lang.code} (apt install {lang.package})")
    return files


def cookie_texts(path: Path) -> list[str]:
    """The body of every cookie of a fortune file, attributions ("-- Someone") and color codes cut;
    lines joined with spaces (the rules drop spaces between CJK characters again)."""
    texts = []
    for cookie in _ANSI.sub("", path.read_text(encoding="utf-8", errors="replace")).split("\n%\n"):
        lines = []
        for line in cookie.splitlines():
            if line.strip().startswith(("--", "——", "－－")):
                break
            lines.append(line.strip())
        texts += [" ".join(p.split()) for p in "\n".join(lines).split("\n\n") if p.strip()]
    return texts


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def clean_sentence(text: str, code: str, min_tokens: int, max_tokens: int, source: str = "") -> Sentence | None:
    """A Sentence an engine reads as written in language `code`, or None.

    Tokens are words, or for scripts written without spaces characters (and Latin words), so
    the bounds mean about the same amount of speech."""
    spec = get_language(code)
    if _ABBREVIATION.search(text) or "..." in text or "…" in text:
        return None
    words = re.findall(r"[^\W\d_]+", text)
    for i, word in enumerate(words):
        if len(word) > 1 and word.isupper():
            return None  # acronym, roman numeral
        if len(word) == 1 and word.isupper() and i > 0:
            return None  # a stray capital: an initial, a roman numeral, a list letter
    try:
        transcript = normalize_text(text, language=code)
    except UnnormalizableText:
        return None
    if not transcript:
        return None
    tokens = len(mixed_tokens(transcript, code).split())
    scale = 1 if spec.spaced else 2  # ~2 characters of Chinese per word of a spaced language
    if not min_tokens * scale <= tokens <= max_tokens * scale:
        return None
    if code == "zh" and re.search(r"[A-Za-z]", transcript):
        return None  # cmn reads Latin letters as English, often one by one: keep the Mandarin pure
    return Sentence(spoken=text, transcript=transcript, source=source)


@functools.lru_cache(maxsize=8)
def load_language_sentences(code: str, min_words: int = 4, max_words: int = 24) -> tuple[Sentence, ...]:
    """Every clean sentence of the language's fortunes, one per transcript, sorted by transcript."""
    lang = synth_language(code)
    by_transcript: dict[str, Sentence] = {}
    for path in fortune_files(lang):
        for text in cookie_texts(path):
            for piece in split_sentences(text):
                sentence = clean_sentence(piece, code, min_words, max_words, f"{lang.package}:{path.name}")
                if sentence is not None:
                    by_transcript.setdefault(sentence.transcript, sentence)
    return tuple(by_transcript[t] for t in sorted(by_transcript))
