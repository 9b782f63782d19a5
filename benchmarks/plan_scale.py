"""Can every rank read the index and plan an epoch of 10,000 hours (3.5 M utterances) in <= 10 s and <= 1 GB?

A synthetic index (no audio): log-normal durations around 10 s (3.5 M x ~10.3 s ~ 10,000 h), LibriSpeech-style
keys, 2,000 utterances per shard. Each measurement runs in a fresh process (peak RSS = ru_maxrss of that
process, the interpreter and numpy included) and does what one rank does at start-up:

  flat:   read index.npz, draw the epoch by weight (two sources 3:1, data/mix.py), plan it (data/flat_plan.py)
          and turn this rank's batches into PlannedBatch objects;
  json:   the object path: read index.json (asr_dist.data.index.load_index) and plan.plan_train_epoch,
          measured at --json-utterances (default 350 k: 3.5 M would need ~9 GB) to show why index.npz exists.

    .venv/bin/python benchmarks/plan_scale.py [--utterances 3500000] [--world-size 8] [--json-utterances 350000]
Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asr_dist.data.plan import BatchRules  # noqa: E402

SHARD_SIZE = 2000
# a production-like recipe: 200 padded seconds per micro-batch, up to 64 utterances, 8-shard windows
RULES = BatchRules(max_batch_seconds=200.0, max_batch_samples=64, bucket_shards=8, megabatch_factor=50,
                   min_duration=0.5, max_duration=30.0)


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    durations = np.clip(np.exp(rng.normal(np.log(10.0), 0.5, n)), 0.3, 35.0).round(3)
    keys = [f"{i // 50000}-{(i // 100) % 1000:06d}-{i:08d}".encode() for i in range(n)]
    sizes = [min(SHARD_SIZE, n - s) for s in range(0, n, SHARD_SIZE)]
    names = [f"train-{i:06d}.tar" for i in range(len(sizes))]
    return names, sizes, durations, keys


def write_flat(n: int, path: Path) -> None:
    from asr_dist.data.flat_plan import FlatIndex

    FlatIndex.build(*synthetic(n)).save(path)


def write_json(n: int, folder: Path) -> None:
    names, sizes, durations, keys = synthetic(n)
    shards, i = [], 0
    for name, size in zip(names, sizes):
        shards.append({"name": name, "num_samples": size, "samples": [
            {"key": keys[j].decode(), "duration": float(durations[j]),
             "text": "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG AND RUNS INTO THE WOODS", "speaker": str(j % 2000)}
            for j in range(i, i + size)]})
        i += size
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.json").write_text(json.dumps({"version": 1, "sample_rate": 16000, "num_samples": n,
                                                    "shards": shards}))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_flat(path: str, world_size: int) -> dict:
    from asr_dist.data.flat_plan import FlatIndex, plan_epoch, rank_batches
    from asr_dist.data.mix import flat_counts

    baseline = peak_rss_mb()  # interpreter + imports (torch: the
    t0, cpu0 = time.perf_counter(), time.process_time()  # data package imports the loader); a rank holds these anyway
    flat = FlatIndex.load(path)
    t1 = time.perf_counter()
    # two sources: the first 3/4 of the shards weighted 3, the rest 1 (the anchor's pass sets the epoch)
    cut = flat.offsets[min(max(round(len(flat.shard_names) * 0.75), 1), len(flat.shard_names) - 1)] \
        if len(flat.shard_names) > 1 else flat.num_samples * 3 // 4
    source = (np.arange(flat.num_samples) >= cut).astype(np.int32)
    counts = flat_counts((flat.durations, source, ["a", "b"]), {"a": 3.0, "b": 1.0}, RULES, seed=0, epoch=0)
    t2 = time.perf_counter()
    plan = plan_epoch(flat, RULES, seed=0, epoch=0, world_size=world_size, counts=counts)
    t3 = time.perf_counter()
    mine = rank_batches(flat, plan, 0, world_size)
    t4 = time.perf_counter()
    return {"path": "flat (index.npz)", "utterances": flat.num_samples,
            "hours": round(float(flat.durations.sum()) / 3600), "world_size": world_size,
            "read_s": round(t1 - t0, 2), "mix_s": round(t2 - t1, 2), "plan_s": round(t3 - t2, 2),
            "rank_batches_s": round(t4 - t3, 2), "total_s": round(t4 - t0, 2),
            "cpu_s": round(time.process_time() - cpu0, 2),  # wall time on a busy shared machine overstates
            "planned_samples": int(counts.sum()), "global_batches": len(plan), "rank0_batches": len(mine),
            "baseline_rss_mb": round(baseline),
            "peak_rss_mb": round(peak_rss_mb()),
            "added_by_index_and_plan_mb": round(peak_rss_mb() - baseline)}


def measure_json(folder: str, world_size: int) -> dict:
    from asr_dist.data.index import load_index
    from asr_dist.data.plan import plan_train_epoch

    baseline = peak_rss_mb()
    t0, cpu0 = time.perf_counter(), time.process_time()
    index = load_index(folder)
    t1 = time.perf_counter()
    plan = plan_train_epoch(index, RULES, seed=0, epoch=0, world_size=world_size)
    t2 = time.perf_counter()
    return {"path": "objects (index.json)", "utterances": index.num_samples, "world_size": world_size,
            "read_s": round(t1 - t0, 2), "plan_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
            "cpu_s": round(time.process_time() - cpu0, 2), "global_batches": len(plan),
            "baseline_rss_mb": round(baseline),
            "peak_rss_mb": round(peak_rss_mb()),
            "added_by_index_and_plan_mb": round(peak_rss_mb() - baseline)}


def in_fresh_process(what: str, path: Path, world_size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", what, str(path), "--world-size", str(world_size)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=3_500_000)
    parser.add_argument("--json-utterances", type=int, default=350_000, help="0 = skip the index.json path")
    parser.add_argument("--world-size", type=int, default=8)
    parser.add_argument("--measure", nargs=2, metavar=("PATH_KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kind, path = args.measure
        print(json.dumps((measure_flat if kind == "flat" else measure_json)(path, args.world_size)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "index.npz"
        t = time.perf_counter()
        write_flat(args.utterances, npz)
        print(json.dumps({"wrote": str(npz.name), "utterances": args.utterances, "mb": round(npz.stat().st_size / 1e6),
                          "seconds": round(time.perf_counter() - t, 1)}), flush=True)
        print(json.dumps(in_fresh_process("flat", npz, args.world_size)), flush=True)
        if args.json_utterances:
            write_json(args.json_utterances, Path(tmp) / "json")
            print(json.dumps(in_fresh_process("json", Path(tmp) / "json", args.world_size)), flush=True)


if __name__ == "__main__":
    main()
