"""Corpus readers: turn a LibriSpeech tree or a JSONL/TSV manifest into `Utterance` records.

Readers only list what a corpus claims to hold; they open no audio. Checking the audio (unreadable,
truncated, too short for its transcript ...) is `asr-dist prepare`'s job, which reports every bad
input instead of stopping at the first. So a reader yields an utterance even when its audio file is
missing or its transcript empty, and prepare rejects it with the reason. A manifest that cannot be
parsed at all raises `CorpusError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class CorpusError(ValueError):
    """A corpus source that cannot be read at all (unknown kind, malformed manifest line)."""


@dataclass
class Utterance:
    """One audio file and its transcript, as the corpus states them (nothing verified yet)."""

    key: str  # unique, no dots (WebDataset splits keys at the first dot), e.g. "103-1240-0000"
    audio: str  # path to a file libsndfile reads
    text: str  # raw transcript (normalized by prepare)
    duration: float | None = None
    speaker: str = ""
    meta: dict = field(default_factory=dict)  # extra JSON-able fields (voice, engine, condition ...) -> KEY.json
    offset: float = 0.0  # seconds into `audio` where it starts (NeMo segments); `duration` is then its length


def make_key(name: str) -> str:
    """A WebDataset-safe key: letters, digits, '-' and '_' only (a dot would split the sample)."""
    key = _KEY_UNSAFE.sub("_", name.replace("/", "-").replace("\\", "-")).strip("_")
    if not key:
        raise CorpusError(f"cannot make a sample key from {name!r}")
    return key


# ----------------------------------------------------------------------------- LibriSpeech


def read_librispeech(root: str | Path) -> Iterator[Utterance]:
    """Utterances of a LibriSpeech-layout tree: SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt lines
    "KEY TRANSCRIPT" next to KEY.flac (or another audio suffix).

    Every audio file is accounted for: one without a transcript line comes out with an empty text
    (and `meta["problem"]`), a transcript line without audio with the path where audio should be.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root} is not a folder")
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise CorpusError(f"{root}: no *.trans.txt files found; is this a LibriSpeech-layout tree?")
    for trans in transcripts:
        folder = trans.parent
        audio_by_stem = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES}
        seen: set[str] = set()
        for line_no, line in enumerate(trans.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            name, _, text = line.strip().partition(" ")
            seen.add(name)
            audio = audio_by_stem.get(name, folder / f"{name}.flac")
            meta = {} if name in audio_by_stem else {"problem": f"no audio file for line {line_no} of {trans}"}
            yield Utterance(key=make_key(name), audio=str(audio), text=text.strip(),
                            speaker=_librispeech_speaker(name, trans, root), meta=meta)
        for name in sorted(set(audio_by_stem) - seen):
            yield Utterance(key=make_key(name), audio=str(audio_by_stem[name]), text="",
                            speaker=_librispeech_speaker(name, trans, root),
                            meta={"problem": f"no transcript line in {trans}"})


def _librispeech_speaker(name: str, trans: Path, root: Path) -> str:
    """Speaker id: the first dash field of the key (103 in 103-1240-0000), else the speaker folder."""
    if "-" in name:
        return name.split("-", 1)[0]
    rel = trans.parent.relative_to(root).parts
    return rel[0] if rel else ""


# ----------------------------------------------------------------------------- manifests


# Other manifests' names for our fields (NeMo: audio_filepath, duration, text, offset; speaker ids as `speaker`
# in some NeMo recipes, `speaker_id`/`client_id` elsewhere). The first name present wins; docs/data_sources.md.
FIELD_ALIASES = {
    "audio": ("audio", "audio_filepath", "audio_path", "path"),
    "text": ("text", "transcript", "sentence"),
    "speaker": ("speaker", "speaker_id", "client_id"),
}
MANIFEST_SUFFIXES = (".jsonl", ".json", ".tsv")


def read_manifest(path: str | Path) -> Iterator[Utterance]:
    """Utterances of a JSON-lines manifest (.jsonl, or NeMo's .json: one object per line) or a .tsv
    manifest (header row). Fields and their accepted names: docs/data_sources.md.

    `audio` (or NeMo's `audio_filepath`) and `text` are required; `key`, `duration`, `speaker`, `offset`
    optional; any other field goes into `meta` and on into KEY.json. Relative audio paths resolve against
    the manifest's folder. Without a key, the key is the audio path (relative to the manifest folder) minus
    its suffix (plus the offset in ms for a NeMo segment, `offset` > 0).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"manifest {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    elif suffix == ".tsv":
        rows = _tsv_rows(path)
    else:
        raise CorpusError(f"manifest {path}: expected a .jsonl, .json (JSON lines, NeMo) or .tsv file")
    for where, row in rows:
        yield _utterance_from_row(row, path.parent, where)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def _tsv_rows(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise CorpusError(f"{path}: empty TSV manifest (expected a header row with audio and text)")
        header = [h.strip() for h in header]
        for line_no, cells in enumerate(reader, 2):
            if not any(c.strip() for c in cells):
                continue
            where = f"{path}:{line_no}"
            if len(cells) != len(header):
                raise CorpusError(f"{where}: {len(cells)} columns, the header has {len(header)}")
            yield where, dict(zip(header, cells))


def _utterance_from_row(row: dict, base: Path, where: str) -> Utterance:
    fields = {ours: next((name for name in names if name in row), None) for ours, names in FIELD_ALIASES.items()}
    missing = [f"{ours} (or {', '.join(FIELD_ALIASES[ours][1:])})" for ours in ("audio", "text")
               if fields[ours] is None]
    if missing:
        raise CorpusError(f"{where}: missing field(s) {'; '.join(missing)} (have: {', '.join(row) or 'none'}); "
                          "see docs/data_sources.md")
    audio = Path(str(row[fields["audio"]]))
    if not audio.is_absolute():
        audio = base / audio
    duration = _seconds(row.get("duration"), "duration", where)
    offset = _seconds(row.get("offset"), "offset", where) or 0.0
    if offset < 0:
        raise CorpusError(f"{where}: offset {offset} is negative")
    if offset and duration is None:
        raise CorpusError(f"{where}: offset {offset} needs a duration (the segment's length in seconds)")
    if row.get("key"):
        key = make_key(str(row["key"]))
    else:
        relative = audio.relative_to(base) if audio.is_relative_to(base) else Path(audio.name)
        key = make_key(str(relative.with_suffix("")) + (f"-{round(offset * 1000):09d}" if offset else ""))
    used = {fields["audio"], fields["text"], fields["speaker"], "key", "duration", "offset"}
    meta = {k: v for k, v in row.items() if k not in used}
    if offset:
        meta["offset"] = offset  # where the segment starts in the audio file (seconds)
    return Utterance(key=key, audio=str(audio), text=str(row[fields["text"]] or ""), duration=duration,
                     speaker=str(row.get(fields["speaker"]) or "") if fields["speaker"] else "", meta=meta,
                     offset=offset)


def _seconds(value, name: str, where: str) -> float | None:
    if value in ("", None):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CorpusError(f"{where}: {name} {value!r} is not a number of seconds") from None


# ----------------------------------------------------------------------------- any source


def open_corpus(source: str | Path) -> Iterator[Utterance]:
    """Utterances of `source`: a Hugging Face dataset folder (save_to_disk), else a folder is read as a
    LibriSpeech tree; a .jsonl/.json/.tsv file as a manifest."""
    source = Path(source)
    if source.is_dir():
        from asr_dist.corpus import hf
        if hf.is_hf_dataset(source):
            return hf.read_hf_dataset(source)
        return read_librispeech(source)
    if source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        return read_manifest(source)
    if not source.exists():
        raise CorpusError(f"corpus {source} does not exist")
    raise CorpusError(f"corpus {source}: expected a LibriSpeech-layout folder or a .jsonl/.json/.tsv manifest")
