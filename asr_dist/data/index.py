"""Reads and validates a shard folder's `index.json` (contract in docs/architecture.md).

The index is what makes planning cheap: it lists every sample's key, duration and transcript per
shard, so an epoch's batches are computed without opening any audio. This module also maps each
shard name to the URL it is read from, so that shards can live elsewhere than the index (a brace
pattern, or any URL form webdataset's `gopen` knows, such as `pipe:curl -s http://host/train-{000000..000127}.tar`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from webdataset.shardlists import expand_urls


class ShardIndexError(ValueError):
    """A bad index.json or shard specification (the message names the file and the reason)."""


@dataclass(frozen=True)
class SampleInfo:
    key: str
    duration: float  # seconds
    text: str
    speaker: str


@dataclass(frozen=True)
class ShardInfo:
    name: str  # as written in index.json
    url: str  # where it is read from: a local path or a webdataset URL
    samples: tuple[SampleInfo, ...]
    source: str = ""  # the data.train source it belongs to (data/mix.py); "" for a plain index


@dataclass(frozen=True)
class DatasetIndex:
    path: str  # the index.json file, for messages
    sample_rate: int
    shards: tuple[ShardInfo, ...]
    language: str = "en"  # the text rules the transcripts were normalized with (absent in old indexes: English)
    text_rules: dict | None = None  # asr_dist.text.TextRules.to_dict(), when recorded

    @property
    def num_samples(self) -> int:
        return sum(len(s.samples) for s in self.shards)

    @property
    def total_seconds(self) -> float:
        return sum(x.duration for s in self.shards for x in s.samples)

    def fingerprint(self) -> str:
        """Hash of shard names, keys and durations: a resumed run checks it plans over the same data."""
        h = hashlib.sha256()
        for shard in self.shards:
            h.update(shard.name.encode())
            for x in shard.samples:
                h.update(f"{x.key}\0{x.duration:.6f}\0".encode())
        return h.hexdigest()[:16]

    def without_shards(self, names: set[str]) -> DatasetIndex:
        return replace(self, shards=tuple(s for s in self.shards if s.name not in names))

    def without_samples(self, keys: set[str]) -> DatasetIndex:
        """The index less the samples of `keys` (shards left empty are left out)."""
        shards = (replace(s, samples=tuple(x for x in s.samples if x.key not in keys)) for s in self.shards)
        return replace(self, shards=tuple(s for s in shards if s.samples))  # language, rules and sources kept


def is_local(url: str) -> bool:
    """True for a plain path or file: URL (the forms whose existence can be checked up front)."""
    scheme = urlparse(url).scheme
    return scheme == "" or scheme == "file" or (len(scheme) == 1 and os.name == "nt")


def local_path(url: str) -> str:
    return urlparse(url).path if url.startswith("file:") else url


def load_index(shards: str, index_path: str = "") -> DatasetIndex:
    """Loads `index.json` and resolves each shard's URL.

    `shards` is either the shard folder (index.json inside, shard names relative to it) or a
    webdataset URL spec (brace patterns, `::`-joined lists, `pipe:` ...) whose expansion lists the
    index's shards in order; then `index_path` must name the index.json.
    """
    if not shards:
        raise ShardIndexError("no shards given: set data.train_shards / data.eval_shards to a shard folder or URL pattern")
    folder_given = is_local(shards) and Path(local_path(shards)).is_dir()
    if not index_path:
        if not folder_given:
            raise ShardIndexError(
                f"{shards}: not a folder with index.json; for a URL pattern also give the index file "
                "(data.train_index / data.eval_index)")
        index_path = str(Path(local_path(shards)) / "index.json")
    raw = _read_json(index_path)
    records = _validate(raw, index_path)
    if folder_given:
        root = Path(local_path(shards))
        urls = [str(root / rec["name"]) for rec in records]
    else:
        urls = expand_urls(shards)
        if len(urls) != len(records):
            raise ShardIndexError(f"{shards}: expands to {len(urls)} URLs but {index_path} lists {len(records)} shards")
        for url, rec in zip(urls, records):
            if rec["name"] not in url:
                raise ShardIndexError(f"{shards}: URL {url!r} does not name shard {rec['name']!r} of {index_path} "
                                  "(the pattern must list the shards in index order)")
    shard_infos = tuple(
        ShardInfo(rec["name"], url, tuple(SampleInfo(s["key"], float(s["duration"]), s["text"], str(s.get("speaker", "")))
                                          for s in rec["samples"]))
        for url, rec in zip(urls, records))
    return DatasetIndex(index_path, int(raw["sample_rate"]), shard_infos, raw.get("language") or "en",
                        raw.get("text_rules"))


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ShardIndexError(f"{path}: index file not found (was the folder written by `asr-dist prepare`?)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardIndexError(f"{path}: cannot read index: {exc}") from None
    if not isinstance(raw, dict):
        raise ShardIndexError(f"{path}: expected a JSON object at the top level")
    return raw


def _check_one_language(raw: dict, shards: list[dict], path: str) -> None:
    """One index, one language's text rules: shards merged from corpora prepared with different
    `--language` would train one model on two spellings."""
    language = raw.get("language") or "en"
    if not isinstance(language, str):
        raise ShardIndexError(f"{path}: 'language' must be a language code string, got {language!r}")
    by_language: dict[str, list[str]] = {}
    for rec in shards:
        by_language.setdefault(rec.get("language") or language, []).append(rec["name"])
    if len(by_language) > 1:
        listed = "; ".join(f"{code}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                           for code, names in sorted(by_language.items()))
        raise ShardIndexError(f"{path}: the shards mix the text rules of {len(by_language)} languages ({listed}); "
                              "prepare each language into its own shard folder")
    (only,) = by_language
    if only != language:
        raise ShardIndexError(f"{path}: index language {language!r} but its shards say {only!r}")


def _validate(raw: dict, path: str) -> list[dict]:
    if raw.get("version") != 1:
        raise ShardIndexError(f"{path}: unsupported index version {raw.get('version')!r} (this reader knows version 1)")
    if not isinstance(raw.get("sample_rate"), int) or raw["sample_rate"] <= 0:
        raise ShardIndexError(f"{path}: sample_rate must be a positive integer, got {raw.get('sample_rate')!r}")
    shards = raw.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ShardIndexError(f"{path}: 'shards' must be a non-empty list")
    seen_keys: set[str] = set()
    seen_names: set[str] = set()
    for i, rec in enumerate(shards):
        where = f"{path}: shards[{i}]"
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str) or not isinstance(rec.get("samples"), list):
            raise ShardIndexError(f"{where}: needs 'name' (string) and 'samples' (list)")
        if rec["name"] in seen_names:
            raise ShardIndexError(f"{where}: shard {rec['name']!r} listed twice")
        seen_names.add(rec["name"])
        if rec.get("num_samples", len(rec["samples"])) != len(rec["samples"]):
            raise ShardIndexError(f"{where} ({rec['name']}): num_samples {rec['num_samples']} != {len(rec['samples'])} samples listed")
        for s in rec["samples"]:
            if not isinstance(s, dict) or not isinstance(s.get("key"), str) or not isinstance(s.get("text"), str):
                raise ShardIndexError(f"{where} ({rec['name']}): every sample needs 'key' and 'text' strings, got {s!r}")
            d = s.get("duration")
            if not isinstance(d, (int, float)) or isinstance(d, bool) or not d > 0:
                raise ShardIndexError(f"{where} ({rec['name']}): sample {s['key']!r} has duration {d!r}; expected seconds > 0")
            if "." in s["key"]:
                raise ShardIndexError(f"{where} ({rec['name']}): key {s['key']!r} contains a dot (webdataset splits keys at dots)")
            if s["key"] in seen_keys:
                raise ShardIndexError(f"{where} ({rec['name']}): key {s['key']!r} appears twice in the index")
            seen_keys.add(s["key"])
    _check_one_language(raw, shards, path)
    if raw.get("num_samples", len(seen_keys)) != len(seen_keys):
        raise ShardIndexError(f"{path}: num_samples {raw['num_samples']} != {len(seen_keys)} samples listed")
    return shards
