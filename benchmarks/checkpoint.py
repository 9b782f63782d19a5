"""Checkpoint save/load time and size per rank for DDP, ZeRO-2 and ZeRO-3 (2 ranks on this machine).

Each backend: one 2-rank run that trains a few steps and saves after each (the save time is the median over
those saves, measured on every rank around CheckpointManager.save: write + agreement + publication), then a
2-rank resume (load time per rank: CheckpointManager.load), and for ZeRO a 1-rank resume of the same
checkpoint (includes the one-off conversion to DeepSpeed's universal format). Bytes per rank: the files each
rank writes (ZeRO: its optimizer shard; rank 0 also the model states and the small metadata).

    .venv/bin/python benchmarks/checkpoint.py [--quick]
Model: the tests' tiny Wav2Vec2ForCTC made wider (hidden 256, 4 layers, ~2.7M parameters; --quick: 128, 2).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from _ranks import logs, run_ranks  # noqa: E402  (the tests' srun-like launcher)

WORKER = str(REPO / "tests" / "ckpt_worker.py")
BACKENDS = ("ddp", "zero2", "zero3")


def rank_of(file: Path, checkpoint: Path) -> int:
    """Which rank wrote `file`: per-rank names carry the rank; everything else is the main process's."""
    rel = str(file.relative_to(checkpoint))
    for pattern in (r"zero_pp_rank_(\d+)_", r"random_states_(\d+)\.pkl", r"extra_state/rank-(\d+)\.pt"):
        m = re.search(pattern, rel)
        if m:
            return int(m.group(1))
    return 0


def timings(run_dir: Path, event: str, ranks: int, prefix: str = "timings") -> list[list[float]]:
    """Seconds of each `event` ("save"/"load") per rank, as the worker logged them."""
    out = []
    for rank in range(ranks):
        lines = (run_dir / f"{prefix}-rank-{rank}.jsonl").read_text().splitlines()
        out.append([json.loads(line)["seconds"] for line in lines if json.loads(line)["event"] == event])
    return out


def measure(backend: str, hidden: int, layers: int, saves: int, work: Path) -> dict:
    run_dir, log_dir = work / backend, work / f"{backend}-logs"
    model = ["--backend", backend, "--hidden", str(hidden), "--layers", str(layers), "--keep-last", "1"]
    started = time.perf_counter()
    codes = run_ranks([WORKER, str(run_dir), *model, "--steps", str(saves), "--save-every", "1"], 2, log_dir, "save")
    if codes != [0, 0]:
        raise RuntimeError(f"{backend} save run failed {codes}:\n{logs(log_dir, 'save')}")
    checkpoint = run_dir / "checkpoints" / f"step-{saves}"
    size = [0, 0]
    for file in checkpoint.rglob("*"):
        if file.is_file():
            size[rank_of(file, checkpoint)] += file.stat().st_size
    shutil.copytree(checkpoint, work / f"{backend}-copy")  # the 2-rank resume below saves over it otherwise

    for rank in range(2):
        (run_dir / f"timings-rank-{rank}.jsonl").rename(run_dir / f"save-timings-rank-{rank}.jsonl")
    save_s = [statistics.median(t) for t in timings(run_dir, "save", 2, prefix="save-timings")]
    codes = run_ranks([WORKER, str(run_dir), *model, "--steps", str(saves + 1), "--save-every", "0"], 2, log_dir, "load")
    if codes != [0, 0]:
        raise RuntimeError(f"{backend} load run failed {codes}:\n{logs(log_dir, 'load')}")
    load_s = [t[0] for t in timings(run_dir, "load", 2)]
    result = {"save_s_per_rank": rounded(save_s), "load_s_per_rank": rounded(load_s),
              "mb_per_rank": [round(b / 1e6, 2) for b in size], "total_mb": round(sum(size) / 1e6, 2)}

    if backend != "ddp":  # a 2-rank ZeRO checkpoint on 1 rank: universal conversion + load
        one = work / f"{backend}-one-rank"
        (one / "checkpoints").mkdir(parents=True)
        shutil.copytree(work / f"{backend}-copy", one / "checkpoints" / f"step-{saves}")
        codes = run_ranks([WORKER, str(one), *model, "--steps", str(saves + 1), "--save-every", "0"], 1, log_dir, "one")
        if codes != [0]:
            raise RuntimeError(f"{backend} 1-rank resume failed {codes}:\n{logs(log_dir, 'one')}")
        result["load_on_1_rank_s"] = rounded([timings(one, "load", 1)[0][0]])[0]
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def rounded(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]


def run(quick: bool = False) -> dict:
    hidden, layers, saves = (128, 2, 2) if quick else (256, 4, 3)
    from ckpt_worker import tiny_model

    params = sum(p.numel() for p in tiny_model(hidden, layers=layers).parameters())
    result = {"model_parameters_m": round(params / 1e6, 2), "ranks": 2, "saves_per_backend": saves}
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        for backend in BACKENDS:
            result[backend] = measure(backend, hidden, layers, saves, Path(tmp))
            print(backend, json.dumps(result[backend]), flush=True)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=1))
