"""Many tiny synthetic shards for pipeline-mechanics tests (tones, not speech: cheap to write and decode).

Follows the shard-folder contract of docs/architecture.md: KEY.flac + KEY.json members in key order,
index.json next to the tars. Real speech shards come from conftest's `tiny_shards`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import soundfile
import webdataset as wds

from asr_dist.text import build_processor

WORDS = ["HELLO", "WORLD", "GOOD", "MORNING", "TEA", "RAIN"]


def flac_bytes(wave: np.ndarray, sample_rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, wave, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_tiny_shards(out: Path, shard_sizes: list[int], seed: int = 0, prefix: str = "train",
                      min_s: float = 0.1, max_s: float = 0.6) -> Path:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    shards, n = [], 0
    for i, size in enumerate(shard_sizes):
        name = f"{prefix}-{i:06d}.tar"
        samples = []
        with wds.TarWriter(str(out / name)) as tar:
            for _ in range(size):
                key = f"{prefix}-{n:05d}"
                frames = int(rng.uniform(min_s, max_s) * 16000)
                t = np.arange(frames) / 16000
                wave = (0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t)).astype(np.float32)
                text = " ".join(rng.choice(WORDS, size=rng.integers(1, 4)))
                meta = {"text": text, "duration": frames / 16000, "speaker": f"spk{n % 3}", "source": f"{key}.wav"}
                tar.write({"__key__": key, "flac": flac_bytes(wave), "json": json.dumps(meta).encode()})
                samples.append({"key": key, "duration": frames / 16000, "text": text, "speaker": meta["speaker"]})
                n += 1
        shards.append({"name": name, "num_samples": size, "samples": samples})
    index = {"version": 1, "sample_rate": 16000, "num_samples": n,
             "total_seconds": sum(s["duration"] for sh in shards for s in sh["samples"]), "shards": shards}
    (out / "index.json").write_text(json.dumps(index))
    return out


def tiny_processor():
    return build_processor(WORDS)
