"""Sentences for the synthetic corpus: read from Debian's text packages, kept only when safe to speak.

A text-to-speech engine reads "Dr." as "doctor", "1951" as "nineteen fifty-one" and "NASA" letter by
letter or as a word, as it likes. A transcript cannot follow those choices, so instead of guessing we keep
only sentences whose every word is read as written: no digits or symbols, no abbreviations, acronyms,
roman numerals or stray single letters, and every word found in the `wamerican` word list (which also
drops typos and glued words). What is left is spoken and transcribed from the same tokens: `spoken` is
the sentence with its punctuation (for natural prosody), `transcript` the same words in upper case.

Sources (Debian main, offline): `fortunes` (+`fortunes-min`), the usage examples of WordNet
(`wordnet-base`) and, when `diatheke` and `sword-text-web` are installed, the World English Bible.
The Devil's Dictionary (`dict-devil`) is reserved for independent evaluation and is never read.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
DICTIONARY = Path("/usr/share/dict/american-english")
BIBLE_MODULE = "engWEB2015eb"

TEXT_SOURCES = ("fortunes", "wordnet", "bible")
DEFAULT_TEXT_SOURCES = ("fortunes", "wordnet")
RESERVED_TEXTS = ("devil",)  # the Devil's Dictionary (dict-devil): held out for independent evaluation
# fortunes-zh installs its files next to the English ones (tang300 and song100 are reserved for independent
# evaluation, chinese is `synth --language zh`'s), fortunes-it links its files there: never English text.
NOT_ENGLISH_FORTUNES = ("chinese", "tang300", "song100")

# Written forms a TTS engine expands or spells out; several are in wamerican, so the word list alone
# does not catch them. Lower case; matched whatever the case in the text.
ABBREVIATIONS = frozenset("""
    mr mrs ms messrs dr st jr sr esq prof capt sgt lt cpl pvt gov govt sen rep hon rev gen col cmdr adm
    etc vs viz cf ie eg ibid approx dept assn bros inc ltd corp co mt ft blvd ave rd hwy
    kg km cm mm lb lbs oz hr hrs mph rpm ml mg pm am
    jan feb apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri
    ii iii iv vi vii viii ix xi xii xiii xiv xv xvi xvii xviii xix xx
""".split())
# Real words that are also abbreviations when a period follows and the text goes on ("No. 5", "Mar. 3"):
# like the abbreviations above, such a period is no sentence end, so the pieces around it are dropped.
AMBIGUOUS_ABBREVIATIONS = ("no", "sat", "sun", "mar", "may", "fig", "vol", "ch", "pp", "op", "art", "sec",
                           "min", "max", "ed", "pl", "ms", "ma", "pa", "la", "ca")
SINGLE_LETTER_WORDS = frozenset("aio")  # "a", "I", "O" are words; any other lone letter is spelled out

# Characters a sentence may hold: anything else (digits, $ % & / * @ # ...) has a spoken form we
# would have to guess, so the sentence goes.
_ALLOWED = re.compile(r"[A-Za-z\s.,;:!?'\"()\-]*")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")  # inner apostrophes stay (DON'T); edge ones are quotes
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z])")
_ENDS_WITH_ABBREVIATION = re.compile(r"\b(?:%s)\.[\"')]*$" % "|".join(sorted(ABBREVIATIONS) + list(AMBIGUOUS_ABBREVIATIONS)),
                                     re.IGNORECASE)
_TYPOGRAPHIC = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "--", "\u2013": "-"})


@dataclass(frozen=True)
class Sentence:
    """One sentence: what the engine reads, and the words it will say, upper case."""

    spoken: str
    transcript: str
    source: str  # "fortunes", "wordnet" or "bible"


class Dictionary:
    """The wamerican word list, without its acronyms and abbreviations, case-aware.

    A word matches as written, in lower case (sentence-initial "The"), or capitalized ("paris" is read
    like "Paris"). All-caps entries (AIDS, ANSI) are left out: in running text those are acronyms.
    """

    def __init__(self, words: frozenset[str]):
        self.words = words

    @classmethod
    def from_file(cls, path: Path = DICTIONARY) -> Dictionary:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: word list missing (apt install wamerican)")
        words = frozenset(w for w in path.read_text(encoding="utf-8", errors="replace").split()
                          if not (len(w) > 1 and w.isupper()) and w.lower() not in ABBREVIATIONS)
        return cls(words)

    def __contains__(self, word: str) -> bool:
        return word in self.words or word.lower() in self.words or word.capitalize() in self.words


def reject_reason(word: str, dictionary: Dictionary) -> str | None:
    """Why `word` (a token of letters and inner apostrophes) may not be read as written, or None."""
    letters = word.replace("'", "")
    if len(letters) == 1:
        return None if letters.lower() in SINGLE_LETTER_WORDS else f"single letter {word!r}"
    if letters.isupper():
        return f"acronym {word!r}"
    if any(c.isupper() for c in letters[1:]):
        return f"mixed case {word!r}"
    if word.lower() in ABBREVIATIONS:
        return f"abbreviation {word!r}"
    if not any(c in "aeiouy" for c in letters.lower()):
        return f"no vowel in {word!r}, may be spelled out"  # hmm, shh, nth, tsk
    if word not in dictionary:
        return f"{word!r} not in {DICTIONARY.name}"
    return None


def clean_sentence(text: str, dictionary: Dictionary, min_words: int = 1, max_words: int = 1000,
                   source: str = "") -> Sentence | None:
    """A Sentence whose spoken words are exactly its transcript, or None when `text` is not safe.

    Dashes become spaces (or a comma for a double dash) in both the spoken text and the transcript,
    double quotes and parentheses are dropped from the spoken text; other punctuation stays there for
    prosody and is dropped from the transcript.
    """
    text = " ".join(text.translate(_TYPOGRAPHIC).split())
    if not text or not _ALLOWED.fullmatch(text):
        return None
    spoken = text.replace("--", ", ").replace("-", " ")
    spoken = re.sub(r"[\"()]", "", spoken)
    spoken = re.sub(r"\s+([,.;:!?])", r"\1", " ".join(spoken.split()))
    spoken = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", spoken).strip(" ,;:")
    if re.search(r"\.\S", spoken.rstrip(".!?'")):  # "e.g", "U.S", "..." glued to a word
        return None
    words = _WORD.findall(spoken)
    if not min_words <= len(words) <= max_words:
        return None
    if any(reject_reason(w, dictionary) for w in words):
        return None
    if any(w == "I" and prev[0].isupper() for prev, w in zip(words[1:], words[2:])):
        return None  # "Henry I", "Chapter I": festival and flite read a roman numeral ("the first")
    if spoken[-1] not in ".!?":
        spoken += "."
    return Sentence(spoken=spoken[0].upper() + spoken[1:], transcript=" ".join(w.upper() for w in words),
                    source=source)


# ----------------------------------------------------------------------------- sources


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph, split after . ! ? before a capital. A split after an abbreviation
    ("Gen. Lee", "No. 5") is not a sentence end: both pieces are dropped."""
    pieces = [s for s in _SENTENCE_END.split(" ".join(paragraph.translate(_TYPOGRAPHIC).split())) if s]
    bad = {j for i, piece in enumerate(pieces) if _ENDS_WITH_ABBREVIATION.search(piece) for j in (i, i + 1)}
    return [piece for i, piece in enumerate(pieces) if i not in bad]


def fortune_paragraphs(fortune_dir: Path = FORTUNE_DIR) -> list[str]:
    """The body of every fortune cookie (attributions cut), except cookies with indented lines
    (ASCII art, code, dialogue layouts) whose text is not prose."""
    files = sorted(p for p in fortune_dir.glob("*")
                   if p.is_file() and not p.is_symlink() and not p.suffix and p.with_name(p.name + ".dat").exists()
                   and not any(r in p.name for r in RESERVED_TEXTS) and p.name not in NOT_ENGLISH_FORTUNES)
    paragraphs = []
    for path in files:
        for cookie in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = []
            for line in cookie.splitlines():
                if line.strip().startswith("--"):  # attribution: it and what follows are not the quote
                    break
                lines.append(line)
            if lines and not any(line[:1].isspace() for line in lines):
                paragraphs.append("\n".join(lines))
    return paragraphs


def wordnet_examples(wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """The quoted usage examples in WordNet's glosses ("she choked with emotion")."""
    examples = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"data.{pos}"
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:  # license header
                continue
            examples.extend(re.findall(r'"([^"]+)"', line.split("|", 1)[1]))
    return examples


def bible_chapters(keys: str = "Gen 1:1-Rev 22:21") -> list[str]:
    """The World English Bible, one chapter per item, via diatheke (apt install diatheke sword-text-web)."""
    if shutil.which("diatheke") is None:
        raise FileNotFoundError("text source 'bible' needs diatheke and the WEB module "
                                "(apt install diatheke sword-text-web)")
    out = subprocess.run(["diatheke", "-b", BIBLE_MODULE, "-f", "plain", "-k", keys],
                         check=True, capture_output=True, text=True).stdout
    # "Genesis 1:1: In the beginning..." and poetry continues on the next lines; a chapter is joined
    # into one paragraph so that sentences running over verses stay whole.
    chapters: dict[str, list[str]] = {}
    parts = re.split(r"^((?:[1-3] )?[A-Z][A-Za-z ]* \d+):\d+: ", out, flags=re.MULTILINE)
    for chapter, verse in zip(parts[1::2], parts[2::2]):
        chapters.setdefault(chapter, []).append(verse.replace(f"({BIBLE_MODULE})", ""))
    return [" ".join(verses) for verses in chapters.values()]


def _source_texts(source: str) -> list[str]:
    if source == "fortunes":
        return [s for p in fortune_paragraphs() for s in split_sentences(p)]
    if source == "wordnet":
        return wordnet_examples()
    if source == "bible":
        return [s for c in bible_chapters() for s in split_sentences(c)]
    raise ValueError(f"unknown text source {source!r}; known: {', '.join(TEXT_SOURCES)}")


def check_sources(sources: tuple[str, ...]) -> None:
    """Refuse reserved and unknown text sources by name."""
    for source in sources:
        if any(r in source.lower() for r in RESERVED_TEXTS):
            raise ValueError(f"text source {source!r} is reserved for independent evaluation and never used")
        if source not in TEXT_SOURCES:
            raise ValueError(f"unknown text source {source!r}; known: {', '.join(TEXT_SOURCES)}")


@functools.lru_cache(maxsize=4)
def load_sentences(sources: tuple[str, ...] = DEFAULT_TEXT_SOURCES, min_words: int = 4,
                   max_words: int = 24) -> tuple[Sentence, ...]:
    """Every clean sentence of `sources`, one per transcript, sorted by transcript.

    Sorted so that the pool (and so the corpus) does not depend on file listing order; when two
    texts give the same transcript, the first source listed wins.
    """
    check_sources(sources)
    dictionary = Dictionary.from_file()
    by_transcript: dict[str, Sentence] = {}
    for source in sources:
        for text in _source_texts(source):
            sentence = clean_sentence(text, dictionary, min_words, max_words, source)
            if sentence is not None:
                by_transcript.setdefault(sentence.transcript, sentence)
    return tuple(by_transcript[t] for t in sorted(by_transcript))
