"""Shared fixtures: a tiny real-speech corpus (espeak-ng) and its shards, built once per test session.

`tiny_corpus`: 16 train + 4 dev utterances of 1-4 s, two en-us voices, 16 kHz mono 16-bit WAV, with
JSONL manifests (audio, text, speaker, voice). `tiny_shards`: the same written by `write_shards`, the
train split with its processor (vocabulary from the train transcripts) and small shards so that there
are several per split. Both are session-scoped and read-only: copy them before modifying anything.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# Normalized transcripts (A-Z, apostrophe, space); the dev set only uses letters the train set has.
TINY_TRAIN_TEXTS = [
    "THE SUN IS WARM",
    "A CAT SAT ON THE MAT",
    "WE WALKED HOME IN THE RAIN",
    "SHE OPENED THE DOOR AND SMILED",
    "GOOD MORNING",
    "THE OLD MAN READ A BOOK BY THE FIRE WHILE THE SNOW FELL OUTSIDE",
    "IT'S TIME TO GO",
    "BIRDS SING IN THE GREEN TREES",
    "HE DRANK A CUP OF HOT TEA",
    "PLEASE CLOSE THE WINDOW",
    "THE RIVER RUNS QUICKLY DOWN THE HILL TO THE COLD SEA",
    "DON'T FORGET YOUR COAT",
    "MY FRIEND LIVES NEAR THE PARK",
    "THE CHILDREN PLAYED ALL DAY AND THEN THEY WENT TO SLEEP",
    "JUMP OVER THE LAZY BOX",
    "THANK YOU VERY MUCH",
]
TINY_DEV_TEXTS = [
    "THE DOG SAT BY THE DOOR",
    "WE READ IN THE PARK",
    "HOT TEA IS GOOD",
    "THE BIRDS PLAYED IN THE RAIN",
]
TINY_VOICES = ["en-us+m3", "en-us+f2"]  # the two "speakers"


@dataclass(frozen=True)
class TinyCorpus:
    root: Path
    train_manifest: Path  # JSONL: {"key", "audio", "text", "speaker", "voice"}
    dev_manifest: Path
    texts: dict  # key -> normalized transcript (train and dev)


@dataclass(frozen=True)
class TinyShards:
    train: Path  # shard folder: train-NNNNNN.tar + index.json + rejects.jsonl + processor/
    dev: Path  # dev-NNNNNN.tar + index.json + rejects.jsonl
    processor: Path  # train/processor (Wav2Vec2Processor folder)


def synthesize(text: str, voice: str, speed: int, out_wav: Path) -> None:
    """espeak-ng speech resampled to 16 kHz mono 16-bit with `sox -R` (repeatable dither)."""
    raw = out_wav.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), "--", text], check=True)
    subprocess.run(["sox", "-R", "-G", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out_wav),
                    "gain", "-n", "-3"], check=True)
    raw.unlink()


def _write_split(root: Path, split: str, texts: list[str]) -> tuple[Path, dict]:
    rows = []
    for i, text in enumerate(texts):
        voice = TINY_VOICES[i % len(TINY_VOICES)]
        key = f"{split}-{i:03d}"
        wav = root / split / f"{key}.wav"
        synthesize(text, voice, speed=130 + 15 * (i % 4), out_wav=wav)
        rows.append({"key": key, "audio": f"{split}/{key}.wav", "text": text,
                     "speaker": voice.replace("+", "_"), "voice": voice})
    manifest = root / f"{split}.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, {r["key"]: r["text"] for r in rows}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> TinyCorpus:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.fail("espeak-ng and sox are needed for the test corpus: run `make deb`")
    root = tmp_path_factory.mktemp("tiny_corpus")
    for split in ("train", "dev"):
        (root / split).mkdir()
    train, train_texts = _write_split(root, "train", TINY_TRAIN_TEXTS)
    dev, dev_texts = _write_split(root, "dev", TINY_DEV_TEXTS)
    return TinyCorpus(root=root, train_manifest=train, dev_manifest=dev, texts={**train_texts, **dev_texts})


@pytest.fixture(scope="session")
def tiny_shards(tiny_corpus, tmp_path_factory) -> TinyShards:
    from asr_dist.corpus.readers import read_manifest
    from asr_dist.shards.prepare import write_shards

    root = tmp_path_factory.mktemp("tiny_shards")
    # ~0.15 MB shards: 2-5 samples each, so that shard-level sharding and resumption have something to do
    train = write_shards(read_manifest(tiny_corpus.train_manifest), root / "train", prefix="train",
                         target_shard_mb=0.15, num_workers=0, write_processor=True)
    dev = write_shards(read_manifest(tiny_corpus.dev_manifest), root / "dev", prefix="dev",
                       target_shard_mb=0.15, num_workers=0)
    assert train.num_rejected == 0 and dev.num_rejected == 0, "the tiny corpus must shard without rejects"
    return TinyShards(train=root / "train", dev=root / "dev", processor=root / "train" / "processor")


def pytest_collection_modifyitems(session, config, items):
    """CI order: unit tests first (seconds), then multi-process runs (`slow`), then the Slurm cluster (`slurm`):
    a broken unit fails fast, and the expensive parts run last. Stable within each group."""
    def group(item) -> int:
        return 2 if item.get_closest_marker("slurm") else 1 if item.get_closest_marker("slow") else 0

    items.sort(key=group)
