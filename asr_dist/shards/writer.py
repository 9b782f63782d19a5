"""Shard writing and index.json: the on-disk contract between `asr-dist prepare` and the data pipeline
(which reads it with asr_dist.data.index).

The index lists every shard with its samples' keys, durations, transcripts and speakers, so that the
pipeline can plan length-bucketed batches and resume mid-epoch without opening any audio. Format in
docs/architecture.md ("Shard folder"). Shards are written with webdataset's TarWriter with fixed
member metadata (mtime 0, fixed owner, mode 0444), so the same samples in the same order give
byte-identical tars.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from webdataset import TarWriter

from asr_dist.shards.encode import EncodedSample

INDEX_NAME = "index.json"
INDEX_VERSION = 1
SHARD_PATTERN = "{prefix}-{number:06d}.tar"


def shard_name(prefix: str, number: int) -> str:
    return SHARD_PATTERN.format(prefix=prefix, number=number)


class ShardSink:
    """Writes samples, in the order given, into PREFIX-NNNNNN.tar shards of about `target_bytes` each,
    and records what went where. Each tar is written under a temporary name and renamed when complete."""

    def __init__(self, out_dir: str | Path, prefix: str, target_bytes: int, sample_rate: int):
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.target_bytes = target_bytes
        self.sample_rate = sample_rate
        self.shards: list[dict] = []
        self._writer: TarWriter | None = None
        self._file = None
        self._bytes = 0

    def add(self, sample: EncodedSample) -> None:
        json_bytes = sample.json_bytes()
        size = len(sample.flac) + len(json_bytes)
        if self._writer is not None and self._bytes + size > self.target_bytes:
            self._close_shard()
        if self._writer is None:
            self._open_shard()
        self._writer.write({"__key__": sample.key, "flac": sample.flac, "json": json_bytes})
        self._bytes += size
        shard = self.shards[-1]
        shard["samples"].append({"key": sample.key, "duration": sample.duration, "text": sample.text,
                                 "speaker": sample.speaker})
        shard["num_samples"] += 1
        shard["total_seconds"] += sample.duration

    def finish(self) -> dict:
        """Close the last shard and return the index (not yet written: see `write_index`)."""
        if self._writer is not None:
            self._close_shard()
        for shard in self.shards:
            shard["total_seconds"] = round(shard["total_seconds"], 6)
        return {
            "version": INDEX_VERSION,
            "sample_rate": self.sample_rate,
            "num_samples": sum(s["num_samples"] for s in self.shards),
            "total_seconds": round(sum(s["total_seconds"] for s in self.shards), 6),
            "shards": self.shards,
        }

    def _open_shard(self) -> None:
        name = shard_name(self.prefix, len(self.shards))
        self._file = open(self.out_dir / (name + ".tmp"), "wb")
        self._writer = TarWriter(self._file, encoder=False, user="asr_dist", group="asr_dist", mode=0o444,
                                 mtime=0, format="PAX_FORMAT")  # PAX: keys longer than 100 characters work
        self.shards.append({"name": name, "num_samples": 0, "num_bytes": 0, "total_seconds": 0.0, "samples": []})
        self._bytes = 0

    def _close_shard(self) -> None:
        self._writer.close()
        self._file.close()
        name = self.shards[-1]["name"]
        tmp = self.out_dir / (name + ".tmp")
        self.shards[-1]["num_bytes"] = tmp.stat().st_size
        os.replace(tmp, self.out_dir / name)
        self._writer = self._file = None


def write_index(out_dir: str | Path, index: dict) -> Path:
    """Write index.json atomically: its presence means every shard it lists is complete."""
    path = Path(out_dir) / INDEX_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    from asr_dist.data.flat_plan import write_flat_index  # the planning arrays for large corpora (index.npz)
    write_flat_index(out_dir, index)
    return path


def remove_stale_shards(out_dir: str | Path, prefix: str, keep: set[str]) -> list[str]:
    """Delete PREFIX-NNNNNN.tar files an earlier run left that the new index does not list."""
    pattern = re.compile(re.escape(prefix) + r"-\d{6}\.tar(\.tmp)?")
    removed = []
    for path in sorted(Path(out_dir).iterdir()):
        if pattern.fullmatch(path.name) and path.name not in keep:
            path.unlink()
            removed.append(path.name)
    return removed
