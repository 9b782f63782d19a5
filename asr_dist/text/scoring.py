"""Error rates that fit the language, all computed by jiwer over the whole set (never a mean of
per-utterance rates).

* CER, always: character edits / reference characters (spaces count, as jiwer counts them).
* WER, where words are separated by spaces.
* MER, the mixed error rate, where they are not (Chinese, Japanese, Thai): each character of the
  unspaced script is one token and each run of other letters (a Latin word in code-switched text) one
  token, as AISHELL / WenetSpeech results are reported. Not jiwer's `mer` (match error rate): this is
  jiwer's WER over those tokens. On text without Latin words it equals CER with spaces ignored.

The primary metric (what eval.json names, and `checkpoint.keep_best` ranks by) is the language's
(`Language.primary_metric`: WER for spaced languages, CER for Chinese and Japanese) unless
`eval.primary_metric` names another.
"""

from __future__ import annotations

from functools import lru_cache

import jiwer
import regex

from asr_dist.text.languages import METRICS, get_language


@lru_cache(maxsize=None)
def _token_pattern(code: str) -> regex.Pattern | None:
    spec = get_language(code)
    if spec.spaced:
        return None
    unspaced = "[" + "".join(rf"\p{{Script_Extensions={s}}}" for s in spec.unspaced) + "]"
    return regex.compile(rf"{unspaced}|(?:(?!{unspaced})\S)+")


def mixed_tokens(text: str, language: str) -> str:
    """`text` with one space between MER tokens: 我说hello world了 -> 我 说 hello world 了."""
    pattern = _token_pattern(language)
    if pattern is None:
        return " ".join(text.split())
    return " ".join(pattern.findall(text))


def error_rates(refs: list[str], hyps: list[str], language: str = "en") -> dict[str, float | None]:
    """{"cer", "wer" (None where words are not spaced), "mer" (None where they are)}."""
    spaced = get_language(language).spaced
    return {
        "wer": jiwer.wer(refs, hyps) if spaced else None,
        "cer": jiwer.cer(refs, hyps),
        "mer": None if spaced else jiwer.wer([mixed_tokens(r, language) for r in refs],
                                             [mixed_tokens(h, language) or "" for h in hyps]),
    }


def primary_metric(language: str = "en", override: str = "auto") -> str:
    """The metric a language's models are ranked by ("wer", "cer" or "mer")."""
    if override and override != "auto":
        if override not in METRICS:
            raise ValueError(f"primary metric {override!r}: choose auto, {', '.join(METRICS)}")
        spec = get_language(language)
        if override == "wer" and not spec.spaced:
            raise ValueError(f"primary metric 'wer' for {spec.code} ({spec.name}), which is written without spaces: "
                             "use cer or mer")
        if override == "mer" and spec.spaced:
            raise ValueError(f"primary metric 'mer' is for languages written without spaces, not {spec.code}")
        return override
    return get_language(language).primary_metric
