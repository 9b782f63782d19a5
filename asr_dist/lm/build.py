"""Build an n-gram LM folder from text files and/or shard transcripts, with KenLM's `lmplz` and `build_binary`.

Every sentence goes through the corpus' own normalization (`normalize_for_lm`, one place to plug the per-language
rules in), so the LM spells words exactly as the acoustic model's transcripts do. Units are words (English) or
characters (`units="char"`, for scripts without a word delimiter such as Chinese: each character is one LM token,
and a space between words, if any, becomes the token "|").

Dev and test sentences must never reach an LM that is then scored on them: `build_lm` takes the shard folders to
protect and refuses (LMLeakError) when any training sentence has the same normalized-text hash as one of theirs.

The estimator is KenLM's (modified Kneser-Ney). `lmplz`/`build_binary` are not on PyPI as programs, so
`make kenlm` compiles them from the `kenlm` sdist (the same source as the Python module) into .venv/bin.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from asr_dist.text import UnnormalizableText, normalize_text

UNITS = ("word", "char")
CHAR_SPACE = "|"  # the word delimiter as an LM token in character units (the tokenizer's delimiter too)
META_FILE = "lm.json"
ARPA_FILE = "lm.arpa"
BINARY_FILE = "lm.bin"
UNIGRAMS_FILE = "unigrams.txt"


class LMBuildError(RuntimeError):
    """The LM cannot be built (no text, missing KenLM tools, lmplz failure); the message says why."""


class LMLeakError(LMBuildError):
    """Sentences of a protected (dev/test) shard folder are in the LM's training text."""


def normalize_for_lm(text: str) -> str:
    """The corpus' normalization (asr_dist.text); the single entry point to switch to per-language rules."""
    return normalize_text(text)


def to_units(sentence: str, units: str) -> str:
    """A normalized sentence as LM tokens separated by spaces: words as they are, or one token per character."""
    if units == "word":
        return sentence
    return " ".join(CHAR_SPACE if c == " " else c for c in sentence)


def sentence_hash(normalized: str) -> str:
    """Hash of a normalized sentence (spaces squeezed, so spacing never hides an overlap)."""
    return hashlib.sha1(" ".join(normalized.split()).encode("utf-8")).hexdigest()


def shard_transcripts(shard_dir: str | Path) -> list[str]:
    """The transcripts of a shard folder, from its index.json (no audio is read)."""
    index = Path(shard_dir) / "index.json"
    if not index.is_file():
        raise LMBuildError(f"{shard_dir}: not a shard folder (no index.json)")
    data = json.loads(index.read_text())
    return [s["text"] for sh in data.get("shards", []) for s in sh.get("samples", []) if s.get("text")]


def text_file_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise LMBuildError(f"{path}: no such text file")
    return path.read_text(encoding="utf-8").splitlines()


@dataclass
class Corpus:
    """Normalized LM training sentences and what was dropped on the way."""

    sentences: list[str] = field(default_factory=list)
    unnormalizable: int = 0  # sentences with characters the corpus rules cannot spell (skipped, as prepare does)
    empty: int = 0


def normalize_all(lines: Iterable[str], normalize: Callable[[str], str] = normalize_for_lm) -> Corpus:
    corpus = Corpus()
    for line in lines:
        try:
            s = normalize(line)
        except UnnormalizableText:
            corpus.unnormalizable += 1
            continue
        if s:
            corpus.sentences.append(s)
        elif line.strip():
            corpus.empty += 1
    return corpus


def check_no_leak(sentences: list[str], protected: dict[str, list[str]]) -> None:
    """Refuse when a sentence's normalized hash equals one of a protected set's (name -> its normalized texts)."""
    ours = {sentence_hash(s): s for s in sentences}
    problems = []
    for name, texts in protected.items():
        overlap = sorted({ours[h] for h in map(sentence_hash, texts) if h in ours})
        if overlap:
            shown = "; ".join(repr(s) for s in overlap[:3])
            problems.append(f"{len(overlap)} sentence(s) of {name} (e.g. {shown})")
    if problems:
        raise LMLeakError("the LM text contains evaluation sentences: " + ", ".join(problems) +
                          ". Remove them from the text files (or pass --drop-overlap to leave them out)")


def find_tool(name: str) -> str:
    """Path of a KenLM program: $KENLM_BIN/NAME, next to this Python, or on PATH."""
    candidates = [Path(os.environ["KENLM_BIN"]) / name] if os.environ.get("KENLM_BIN") else []
    candidates.append(Path(sys.executable).parent / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise LMBuildError(f"KenLM's `{name}` was not found (looked in $KENLM_BIN, {Path(sys.executable).parent}, PATH); "
                       "build it with `make kenlm`")


@dataclass
class LMBuildConfig:
    order: int = 4
    units: str = "word"
    prune: tuple[int, ...] = ()  # lmplz --prune thresholds per order, e.g. (0, 0, 1)
    binary: bool = True  # also write KenLM's binary format (faster to load)
    memory: str = "20%"  # lmplz -S

    def __post_init__(self) -> None:
        if self.units not in UNITS:
            raise LMBuildError(f"units {self.units!r}: choose one of {UNITS}")
        if not 1 <= self.order <= 6:
            raise LMBuildError(f"order {self.order}: choose 1..6 (KenLM is built with max order 6)")


def build_lm(out_dir: str | Path, text_files: Iterable[str | Path] = (), train_shards: Iterable[str | Path] = (),
             protect_shards: Iterable[str | Path] = (), cfg: LMBuildConfig | None = None,
             sentences: Iterable[str] = (), drop_overlap: bool = False,
             normalize: Callable[[str], str] = normalize_for_lm) -> dict:
    """Write OUT_DIR/{lm.arpa, lm.bin, unigrams.txt, lm.json}; returns lm.json's content.

    `sentences` are raw strings (for callers that hold text already, like the demo). `protect_shards` are the
    dev/test shard folders whose sentences must not be in the LM: an overlap raises LMLeakError, or is left out
    and counted with `drop_overlap`.
    """
    cfg = cfg or LMBuildConfig()
    started = time.perf_counter()
    lines: list[str] = list(sentences)
    sources: list[str] = ["<sentences>"] if lines else []
    for f in text_files:
        lines += text_file_lines(f)
        sources.append(str(f))
    for d in train_shards:
        lines += shard_transcripts(d)
        sources.append(str(d))
    corpus = normalize_all(lines, normalize)
    if not corpus.sentences:
        raise LMBuildError(f"no sentence left to build an LM from (sources: {sources or 'none given'})")
    protected = {str(d): normalize_all(shard_transcripts(d), normalize).sentences for d in protect_shards}
    dropped = 0
    if drop_overlap:
        banned = {sentence_hash(s) for texts in protected.values() for s in texts}
        kept = [s for s in corpus.sentences if sentence_hash(s) not in banned]
        dropped, corpus.sentences = len(corpus.sentences) - len(kept), kept
    check_no_leak(corpus.sentences, protected)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unit_lines = [to_units(s, cfg.units) for s in corpus.sentences]
    _run_lmplz(unit_lines, out / ARPA_FILE, cfg)
    model_file = ARPA_FILE
    if cfg.binary:
        _run([find_tool("build_binary"), str(out / ARPA_FILE), str(out / BINARY_FILE)], "build_binary")
        model_file = BINARY_FILE
    vocab = sorted({t for line in unit_lines for t in line.split()})
    (out / UNIGRAMS_FILE).write_text("\n".join(vocab) + "\n", encoding="utf-8")
    meta = {
        "format_version": 1, "order": cfg.order, "units": cfg.units, "model_file": model_file,
        "estimator": "KenLM lmplz (modified Kneser-Ney)", "prune": list(cfg.prune),
        "sentences": len(corpus.sentences), "tokens": sum(len(u.split()) for u in unit_lines),
        "vocabulary": len(vocab), "alphabet": sorted({c for s in corpus.sentences for c in s} - {" "}),
        "skipped_unnormalizable": corpus.unnormalizable, "dropped_overlap": dropped,
        "sources": sources, "protected": sorted(protected), "alpha": 0.5, "beta": 1.0, "tuned": None,
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    return meta


def _run_lmplz(unit_lines: list[str], arpa: Path, cfg: LMBuildConfig) -> None:
    cmd = [find_tool("lmplz"), "-o", str(cfg.order), "-S", cfg.memory, "-T", str(arpa.parent),
           "--arpa", str(arpa), "--discount_fallback"]  # fallback: tiny corpora have too few singletons for KN
    if cfg.prune:
        cmd += ["--prune", *map(str, cfg.prune)]
    _run(cmd, "lmplz", stdin="\n".join(unit_lines) + "\n")


def _run(cmd: list[str], what: str, stdin: str | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LMBuildError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
