"""Transcript normalization, per language (the rules of asr_dist/text/languages.py).

A CTC model can only learn to emit characters it has labels for, and it can only be judged fairly
when reference and hypothesis are spelled alike. So every transcript goes through one normalization
before it is written into a shard: Unicode NFC, full-width/half-width forms folded (ＡＢＣ -> ABC),
case folded where the script has case, punctuation removed by Unicode category (full-width CJK
punctuation included), the language's letters kept with their accents (English: LibriSpeech's A-Z,
accents stripped), single spaces between words, and none between the characters of a script written
without spaces (Chinese, Japanese, Thai), where a Latin word still stays a word.

Text whose spoken form we cannot know (digits, symbols such as % or &, letters of a script foreign to
the language) is not guessed at: `normalize_text` raises `UnnormalizableText` naming the characters,
and `asr-dist prepare` rejects the utterance (or drops them with `--unspeakable drop`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, fields
from functools import lru_cache

import regex

from asr_dist.text.languages import DEFAULT_LANGUAGE, Language, get_language

_APOSTROPHES = "\u2019\u2018\u02bc\u0060\u00b4"  # ’ ‘ ʼ ` ´ -> '
_SPOKEN_PUNCTUATION = set("&%#@*/\\")  # punctuation by Unicode, yet read aloud ("and", "percent" ...)
_INNER_APOSTROPHE = regex.compile(r"(?<=[\p{L}\p{M}])'(?=\p{L})")


class UnnormalizableText(ValueError):
    """The transcript holds characters whose spoken form is unknown (digits, symbols, other scripts).

    `foreign` lists letters of a script the language does not use, `unspeakable` the digits and symbols."""

    def __init__(self, message: str, foreign: str = "", unspeakable: str = ""):
        super().__init__(message)
        self.foreign = foreign
        self.unspeakable = unspeakable


@dataclass(frozen=True)
class TextRules:
    """The normalization rules: the language's table entry, with these overrides (None = its default)."""

    language: str = DEFAULT_LANGUAGE  # ISO 639-1 code in asr_dist.text.languages.LANGUAGES
    keep_apostrophes: bool | None = None  # inner apostrophes (DON'T, O'BRIEN); quote-like ones at word edges go
    dashes_to_spaces: bool = True  # WELL-KNOWN -> WELL KNOWN (else the words are glued)
    strip_accents: bool | None = None  # CAFÉ -> CAFE (English's default)
    case: str | None = None  # "upper" | "lower" | "keep"
    unspeakable: str = "reject"  # digits/symbols/other letters: "reject" (raise) or "drop"

    def __post_init__(self) -> None:
        if self.unspeakable not in ("reject", "drop"):
            raise ValueError(f"TextRules.unspeakable = {self.unspeakable!r}; choose 'reject' or 'drop'")
        if self.case not in (None, "upper", "lower", "keep"):
            raise ValueError(f"TextRules.case = {self.case!r}; choose 'upper', 'lower' or 'keep'")
        get_language(self.language)  # unknown code: UnknownLanguage (a ValueError) now, not per transcript

    @property
    def spec(self) -> Language:
        return get_language(self.language)

    def resolved(self) -> "TextRules":
        """Every None replaced by the language's default: what index.json records."""
        spec = self.spec
        return TextRules(
            language=spec.code,
            keep_apostrophes=spec.keep_apostrophes if self.keep_apostrophes is None else self.keep_apostrophes,
            dashes_to_spaces=self.dashes_to_spaces,
            strip_accents=spec.strip_accents if self.strip_accents is None else self.strip_accents,
            case=spec.case if self.case is None else self.case,
            unspeakable=self.unspeakable)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "TextRules":
        """From index.json's "text_rules" (absent in indexes written before languages: English)."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@lru_cache(maxsize=None)
def _patterns(code: str) -> tuple[regex.Pattern, regex.Pattern | None]:
    """(kept letter, unspaced character) patterns of a language."""
    spec = get_language(code)
    if spec.letters:
        letter = regex.compile(spec.letters)
    else:
        scripts = "".join(rf"\p{{Script_Extensions={s}}}" for s in spec.scripts)
        # letters and marks of the scripts, plus combining marks shared by all scripts (an accent NFC cannot compose)
        letter = regex.compile(rf"(?V1)[[\p{{L}}\p{{M}}]&&[{scripts}]]|[\p{{M}}&&\p{{Script=Inherited}}]")
    unspaced = None
    if spec.unspaced:
        unspaced = regex.compile("[" + "".join(rf"\p{{Script_Extensions={s}}}" for s in spec.unspaced) + "]")
    return letter, unspaced


def _fold_width(text: str) -> str:
    """Full-width and half-width compatibility forms (ＡＢＣ１, ｶﾀｶﾅ) to their ordinary forms."""
    if text.isascii():
        return text
    return "".join(unicodedata.normalize("NFKC", c) if unicodedata.decomposition(c).startswith(("<wide>", "<narrow>"))
                   else c for c in text)


def normalize_text(text: str, rules: TextRules | None = None, **overrides) -> str:
    """Return `text` in the language's training alphabet, single spaces; "" when nothing is left.

    Rules come from `rules` and/or keyword overrides (`normalize_text(t, dashes_to_spaces=False)`,
    `normalize_text(t, language="es")`). Punctuation is dropped; characters that would be spoken
    (digits, symbols, letters the language does not use) raise `UnnormalizableText` unless
    `unspeakable="drop"`.
    """
    rules = rules or TextRules()
    if overrides:
        rules = TextRules(**{**rules.to_dict(), **overrides})
    rules = rules.resolved()
    letter, unspaced = _patterns(rules.language)
    text = _fold_width(text)
    if rules.strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = unicodedata.normalize("NFC", text)
    if rules.case == "upper":
        text = text.upper()
    elif rules.case == "lower":
        text = text.lower()
    out: list[str] = []
    foreign: list[str] = []
    unspeakable: list[str] = []
    for c in text:
        category = unicodedata.category(c)
        if c == " " or letter.fullmatch(c):
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
            (foreign if category.startswith(("L", "M")) else unspeakable).append(c)
            out.append(" ")
    if (foreign or unspeakable) and rules.unspeakable == "reject":
        raise _unnormalizable(rules.spec, foreign, unspeakable)
    normalized = "".join(out)
    if rules.keep_apostrophes:  # keep only apostrophes between two letters
        normalized = _INNER_APOSTROPHE.sub("\0", normalized).replace("'", "").replace("\0", "'")
    normalized = " ".join(normalized.split())
    if unspaced is not None:  # no space next to a character of a script written without spaces
        normalized = regex.sub(rf"(?<={unspaced.pattern}) | (?={unspaced.pattern})", "", normalized)
    return unicodedata.normalize("NFC", normalized)


def _unnormalizable(spec: Language, foreign: list[str], unspeakable: list[str]) -> UnnormalizableText:
    """A message that lists each character on its own (never '35' for a 3 and a 5 far apart)."""
    def listed(chars: list[str]) -> str:
        return ", ".join(repr(c) for c in dict.fromkeys(chars))

    parts = []
    if unspeakable:
        digits = [c for c in unspeakable if unicodedata.category(c).startswith("N")]
        symbols = [c for c in unspeakable if c not in digits]
        if digits:
            parts.append(f"digits {listed(digits)} (write numbers as words)")
        if symbols:
            parts.append(f"symbols {listed(symbols)} (read aloud, spelling unknown)")
    if foreign:
        scripts = sorted({_script_name(c) for c in foreign})
        alphabet = "A-Z" if spec.letters else "/".join(spec.scripts)
        parts.append(f"letters {listed(foreign)} ({', '.join(scripts)}) outside {spec.code} ({spec.name}): {alphabet}")
    return UnnormalizableText("cannot spell " + "; ".join(parts)
                              + ". Fix the transcript, or pass `--unspeakable drop` to drop such characters",
                              foreign="".join(dict.fromkeys(foreign)), unspeakable="".join(dict.fromkeys(unspeakable)))


def _script_name(c: str) -> str:
    """A readable script name from the character's Unicode name (CYRILLIC SMALL LETTER PE -> Cyrillic)."""
    name = unicodedata.name(c, "")
    return name.split()[0].title() if name else f"U+{ord(c):04X}"
