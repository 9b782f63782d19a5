"""Data pipeline benchmark: padding against HF length grouping, decode throughput, resume cost.

1. Padding on a realistic duration distribution: the durations of a real shard folder's index.json
   (`--shards DIR`, e.g. the demo corpus) or, by default, one-sentence TTS-like durations (log-normal,
   median 3.1 s, p5-p95 about 1.5-7 s, like `asr-dist synth`; ~1,030 utterances = the 1-hour demo).
   asr_dist's plan (duration-bucketed batches bounded by padded seconds) against transformers'
   `LengthGroupedSampler` (`group_by_length`: megabatches of min(50, N / 4B) x batch size sorted by
   length; also forced to 50) with the same mean batch size, and against plain random batches. Padding is reported as a share of
   the real audio (the issue's bound: <= 5%) and per batch (p95).
2. Decode throughput: audio seconds per wall second through the whole pipeline (tar read, FLAC
   decode, normalization, tokenization, collation), in-process and per DataLoader worker.
3. Resume: time to the first batch after restoring the position at 10% and at 90% of an epoch,
   against the naive way (iterate and throw batches away until the position).

With `--shards DIR` every figure is measured on that folder (durations, audio, transcripts).
Run as a script to print the figures as JSON: `python benchmarks/pipeline.py [--quick] [--shards DIR]`.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import webdataset as wds
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from asr_dist.config import DataConfig
from asr_dist.data.index import DatasetIndex, SampleInfo, ShardInfo, load_index
from asr_dist.data.loader import build_train_loader
from asr_dist.data.plan import BatchRules, plan_train_epoch
from asr_dist.text import build_processor

SR = 16000
WORDS = "THE QUICK BROWN FOX JUMPS OVER A LAZY DOG IN WARM RAIN".split()


# ----------------------------------------------------------------------------- 1. padding


def tts_like_durations(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.exp(rng.normal(np.log(3.1), 0.47, n)), 0.8, 20.0)


def index_of(durations: np.ndarray, per_shard: int = 100) -> DatasetIndex:
    shards = []
    for i, start in enumerate(range(0, len(durations), per_shard)):
        samples = tuple(SampleInfo(f"u{j:06d}", float(durations[j]), "A", "")
                        for j in range(start, min(start + per_shard, len(durations))))
        shards.append(ShardInfo(f"s{i:06d}.tar", f"s{i:06d}.tar", samples))
    return DatasetIndex("synthetic", SR, tuple(shards))


def padding_of(batches: list[np.ndarray]) -> dict:
    audio = sum(float(b.sum()) for b in batches)
    padded = sum(len(b) * float(b.max()) for b in batches)
    per_batch = [len(b) * float(b.max()) / float(b.sum()) - 1 for b in batches]
    return {"padding_vs_audio": (padded - audio) / audio, "padding_fraction": 1 - audio / padded,
            "per_batch_p95": float(np.percentile(per_batch, 95)), "batches": len(batches),
            "max_padded_seconds": max(len(b) * float(b.max()) for b in batches)}


def compare_padding(index: DatasetIndex, max_batch_seconds: float, max_batch_samples: int, seed: int = 0) -> dict:
    rules = BatchRules(max_batch_seconds=max_batch_seconds, max_batch_samples=max_batch_samples)
    ours = plan_train_epoch(index, rules, seed=seed, epoch=0, world_size=1)
    durations = np.array([s.duration for shard in index.shards for s in shard.samples])
    batch_size = max(1, round(len(durations) / len(ours)))  # HF gets our mean batch size
    order = list(LengthGroupedSampler(batch_size, lengths=list(durations), generator=torch.Generator().manual_seed(seed)))
    hf = [durations[order[i:i + batch_size]] for i in range(0, len(order), batch_size)]
    order50 = get_length_grouped_indices(list(durations), batch_size, mega_batch_mult=50,
                                         generator=torch.Generator().manual_seed(seed))
    hf50 = [durations[order50[i:i + batch_size]] for i in range(0, len(order50), batch_size)]
    rand = np.random.default_rng(seed).permutation(len(durations))
    random_batches = [durations[rand[i:i + batch_size]] for i in range(0, len(rand), batch_size)]
    return {"ours": padding_of([np.array([s.duration for s in b.samples]) for b in ours]),
            "hf_group_by_length": padding_of(hf), "hf_megabatch_50": padding_of(hf50), "random": padding_of(random_batches), "hf_batch_size": batch_size}


# ----------------------------------------------------------------------------- 2./3. shards on disk


def write_shards(out: Path, num_shards: int, per_shard: int, seed: int = 0) -> Path:
    """Speech-like test audio (a voiced buzz with a syllable-rate envelope and a little noise), 16-bit FLAC."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    shards, n = [], 0
    for i in range(num_shards):
        name, samples = f"train-{i:06d}.tar", []
        with wds.TarWriter(str(out / name)) as tar:
            for _ in range(per_shard):
                d = float(tts_like_durations(1, seed=n)[0])
                t = np.arange(int(d * SR)) / SR
                f0 = rng.uniform(90, 220)
                wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8))
                wave = 0.2 * wave * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2) + 0.005 * rng.standard_normal(len(t))
                buf = io.BytesIO()
                soundfile.write(buf, (wave / np.abs(wave).max() * 0.5).astype(np.float32), SR, format="FLAC",
                                subtype="PCM_16")
                key = f"u{n:06d}"
                text = " ".join(rng.choice(WORDS, size=int(d * 3)))
                meta = {"text": text, "duration": len(t) / SR, "speaker": "s"}
                tar.write({"__key__": key, "flac": buf.getvalue(), "json": json.dumps(meta).encode()})
                samples.append({"key": key, "duration": len(t) / SR, "text": text, "speaker": "s"})
                n += 1
        shards.append({"name": name, "num_samples": per_shard, "samples": samples})
    (out / "index.json").write_text(json.dumps({"version": 1, "sample_rate": SR, "num_samples": n,
                                                "total_seconds": 0.0, "shards": shards}))
    return out


def decode_throughput(folder: Path, processor, num_workers: int) -> dict:
    cfg = DataConfig(train_shards=str(folder), num_workers=num_workers, bucket_shards=4)
    loader = build_train_loader(cfg, processor, seed=0, rank=0, world_size=1, grad_accum=1)
    t0 = time.perf_counter()
    audio = sum(batch["audio_seconds"] for batch in loader)
    elapsed = time.perf_counter() - t0
    return {"audio_s_per_s": audio / elapsed, "per_worker": audio / elapsed / max(1, num_workers), "seconds": elapsed}


def time_to_first_batch(folder: Path, processor, fraction: float, naive: bool) -> float:
    cfg = DataConfig(train_shards=str(folder), num_workers=1, bucket_shards=4)
    loader = build_train_loader(cfg, processor, seed=0, rank=0, world_size=1, grad_accum=1)
    position = int(fraction * len(loader))
    t0 = time.perf_counter()
    if naive:  # what a loader without a plan must do: produce and discard everything before the position
        it = iter(loader)
        for _ in range(position + 1):
            next(it)
    else:
        loader.load_state_dict({**loader.state_dict(), "batches_consumed": position})
        next(iter(loader))
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- run


def pipeline_timings(folder: Path, processor) -> tuple[dict, dict]:
    decode = {f"workers_{w}": decode_throughput(folder, processor, w) for w in (0, 1, 2)}
    resume = {f"{name}_{int(f * 100)}pct": time_to_first_batch(folder, processor, f, naive)
              for name, naive in (("ours", False), ("naive_skip", True)) for f in (0.1, 0.9)}
    return decode, resume


def run(quick: bool = False, shards: str = "") -> dict:
    """Every figure as a nested dict (see print_table for the side-by-side view)."""
    torch.set_num_threads(1)
    results: dict = {}
    if shards:
        index = load_index(shards)
        results["durations_from"] = index.path
    else:
        index = index_of(tts_like_durations(1030))
        results["durations_from"] = "log-normal TTS-like, 1030 utterances (median 3.1 s)"
    for mbs, samples in [(60.0, 32), (120.0, 64)]:
        results[f"padding_{int(mbs)}s_{samples}"] = compare_padding(index, mbs, samples)
    if shards:  # the real folder for all three measurements, with a vocabulary from its own transcripts
        processor = build_processor([s.text for shard in index.shards for s in shard.samples])
        results["decode"], results["resume_first_batch_s"] = pipeline_timings(Path(shards), processor)
    else:
        num_shards, per_shard = (12, 10) if quick else (40, 25)
        with tempfile.TemporaryDirectory(prefix="asr_dist_bench_") as tmp:
            folder = write_shards(Path(tmp) / "train", num_shards, per_shard)
            results["decode"], results["resume_first_batch_s"] = pipeline_timings(folder, build_processor(WORDS))
    return results


def print_table(r: dict) -> None:
    print(f"durations: {r['durations_from']}")
    for key, v in r.items():
        if key.startswith("padding_"):
            print(f"\n{key} (HF batch size {v['hf_batch_size']}): padding as % of audio | per-batch p95 | batches")
            for name in ("ours", "hf_group_by_length", "hf_megabatch_50", "random"):
                p = v[name]
                print(f"  {name:<20} {100 * p['padding_vs_audio']:6.2f}% | {100 * p['per_batch_p95']:6.2f}% | {p['batches']}")
    print("\ndecode throughput (audio s per s): " + ", ".join(
        f"{k}: {v['audio_s_per_s']:.0f} ({v['per_worker']:.0f}/worker)" for k, v in r["decode"].items()))
    t = r["resume_first_batch_s"]
    print("time to first batch after resume:  at 10%     at 90%")
    print(f"  ours (plan position)             {t['ours_10pct']:6.2f} s   {t['ours_90pct']:6.2f} s")
    print(f"  naive (decode and skip)          {t['naive_skip_10pct']:6.2f} s   {t['naive_skip_90pct']:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shards", default="", help="a real shard folder (e.g. the demo's) to measure on instead of "
                                                     "synthetic durations and audio")
    args = parser.parse_args()
    results = run(quick=args.quick, shards=args.shards)
    print_table(results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
