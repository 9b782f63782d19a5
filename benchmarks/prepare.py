"""Shard-writing speed: audio hours sharded per minute by `write_shards`, and the synth speed.

Makes a corpus with `asr_dist.corpus.synth` (or takes --manifest), then times `write_shards` on the
train and dev manifests as `asr-dist prepare` runs them (train with its processor), with 1 and 2
worker processes (quick: 2 only). Figures: synth x real time, hours per minute per worker count, the
shards written and what was rejected (a clean synthetic corpus should have no rejects).

    .venv/bin/python benchmarks/prepare.py [--quick] [--hours H] [--manifest train.jsonl] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def shard_timing(manifests: dict[str, Path], out_root: Path, workers: int) -> dict:
    from asr_dist.corpus.readers import read_manifest
    from asr_dist.shards.prepare import write_shards

    started = time.perf_counter()
    seconds, kept, shards, rejected = 0.0, 0, 0, {}
    for split, manifest in manifests.items():
        summary = write_shards(read_manifest(manifest), out_root / split, prefix=split, num_workers=workers,
                               write_processor=(split == "train"))
        seconds += summary.kept_seconds
        kept += summary.num_kept
        shards += summary.num_shards
        for reason, count in summary.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + count
    wall = time.perf_counter() - started
    return {"name": f"workers={workers}", "workers": workers, "audio_hours": round(seconds / 3600, 4),
            "utterances": kept, "shards": shards, "rejected": rejected, "wall_seconds": round(wall, 2),
            "audio_hours_per_minute": round(seconds / 3600 / (wall / 60), 3)}


def run(quick: bool = False, hours: float | None = None, manifest: str | None = None, keep: str | None = None) -> dict:
    hours = hours if hours is not None else (0.25 if quick else 1.0)
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    figures: dict = {}
    try:
        if manifest:
            manifests = {"train": Path(manifest)}
            figures["corpus"] = str(manifest)
        else:
            from asr_dist.corpus.synth import synthesize

            stats = synthesize(work / "corpus", hours=hours, seed=0, workers=2, overwrite=True)
            manifests = {"train": Path(stats["train_manifest"]), "dev": Path(stats["dev_manifest"])}
            figures["synth"] = {"audio_hours": round(stats["audio_seconds"] / 3600, 4),
                                "utterances": stats["utterances"], "wall_seconds": stats["wall_seconds"],
                                "x_real_time": stats["x_real_time"], "workers": stats["workers"]}
            print(f"synth: {figures['synth']}", flush=True)
        figures["prepare"] = []
        for workers in ([2] if quick else [1, 2]):
            result = shard_timing(manifests, work / f"shards_w{workers}", workers)
            print(f"prepare: {result}", flush=True)
            figures["prepare"].append(result)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.25 h corpus, 2 workers only")
    parser.add_argument("--hours", type=float, default=None, help="corpus size to synthesize (default 1.0, quick 0.25)")
    parser.add_argument("--manifest", help="time this .jsonl/.tsv manifest instead of a synthesized corpus")
    parser.add_argument("--keep", help="work folder to keep (corpus and shards); default: a temporary one")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, hours=args.hours, manifest=args.manifest, keep=args.keep), indent=1))


if __name__ == "__main__":
    main()
