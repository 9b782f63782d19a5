"""The languages asr_dist knows: one table entry per ISO 639-1 code, no per-language code paths.

An entry says which Unicode scripts the language's letters come from (the `regex` library's
`\\p{Script_Extensions=...}`, so that marks shared by scripts, such as Japanese `ー`, count), whether
the script has case and which way it is folded, which scripts are written without spaces between
words (Chinese, Japanese, Thai: no word delimiter there; a Latin word inside them stays a word), the
default for stripping accents, and the metric a model is ranked by. Adding a language is adding a
line; `asr-dist prepare --language CODE` picks it and records the code in index.json.

English is LibriSpeech's convention and nothing more: the 26 letters A-Z, uppercase, accents
stripped (CAFÉ -> CAFE). Every other language keeps its own letters and accents, lowercased
(the Common Voice / XLS-R fine-tuning convention) where the script has case.
"""

from __future__ import annotations

from dataclasses import dataclass

CASES = ("upper", "lower", "keep")
METRICS = ("wer", "cer", "mer")


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1
    name: str
    scripts: tuple[str, ...]  # Unicode script names whose letters (and marks) are kept
    case: str = "lower"  # "upper" | "lower" | "keep" (for scripts without case it changes nothing)
    unspaced: tuple[str, ...] = ()  # scripts written without spaces between words
    strip_accents: bool = False  # default of `--strip-accents`
    keep_apostrophes: bool = True  # inner apostrophes (DON'T, l'anno) stay
    letters: str = ""  # a narrower regex class than `scripts` (English: LibriSpeech's A-Z), or ""
    primary_metric: str = "wer"  # what eval.json ranks by and checkpoint.keep_best keeps

    @property
    def spaced(self) -> bool:
        """True when words are separated by spaces (WER is meaningful)."""
        return not self.unspaced


_CJK = ("Han",)
_JAPANESE = ("Han", "Hiragana", "Katakana")

LANGUAGES: dict[str, Language] = {lang.code: lang for lang in (
    Language("en", "English", ("Latin",), case="upper", strip_accents=True, letters="[A-Z]"),
    Language("es", "Spanish", ("Latin",)),
    Language("de", "German", ("Latin",)),
    Language("fr", "French", ("Latin",)),
    Language("it", "Italian", ("Latin",)),
    Language("pt", "Portuguese", ("Latin",)),
    Language("nl", "Dutch", ("Latin",)),
    Language("ca", "Catalan", ("Latin",)),
    Language("pl", "Polish", ("Latin",)),
    Language("cs", "Czech", ("Latin",)),
    Language("sv", "Swedish", ("Latin",)),
    Language("fi", "Finnish", ("Latin",)),
    Language("tr", "Turkish", ("Latin",)),
    Language("vi", "Vietnamese", ("Latin",)),
    Language("id", "Indonesian", ("Latin",)),
    Language("ru", "Russian", ("Cyrillic",)),
    Language("uk", "Ukrainian", ("Cyrillic",)),
    Language("el", "Greek", ("Greek",)),
    Language("ar", "Arabic", ("Arabic",), keep_apostrophes=False),
    Language("fa", "Persian", ("Arabic",), keep_apostrophes=False),
    Language("he", "Hebrew", ("Hebrew",), keep_apostrophes=False),
    Language("hi", "Hindi", ("Devanagari",), keep_apostrophes=False),
    Language("ko", "Korean", ("Hangul",), keep_apostrophes=False, primary_metric="cer"),
    # Written without spaces: Latin words (code-switching) stay words, scored as one token each by MER.
    Language("zh", "Chinese (Mandarin)", _CJK + ("Latin",), unspaced=_CJK, keep_apostrophes=False,
             primary_metric="cer"),
    Language("ja", "Japanese", _JAPANESE + ("Latin",), unspaced=_JAPANESE, keep_apostrophes=False,
             primary_metric="cer"),
    Language("th", "Thai", ("Thai", "Latin"), unspaced=("Thai",), keep_apostrophes=False, primary_metric="cer"),
)}

DEFAULT_LANGUAGE = "en"


class UnknownLanguage(ValueError):
    """A language code that is not in LANGUAGES."""


def get_language(code: str | None) -> Language:
    """The table entry for `code` (None or "" = English, what an index.json without the field means)."""
    code = (code or DEFAULT_LANGUAGE).strip().lower()
    try:
        return LANGUAGES[code]
    except KeyError:
        raise UnknownLanguage(f"unknown language {code!r}; known: {', '.join(sorted(LANGUAGES))} "
                              "(add a line to asr_dist/text/languages.py for another)") from None
