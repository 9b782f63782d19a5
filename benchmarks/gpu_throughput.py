"""GPU readiness figures: a wav2vec2-base-sized model (95 M parameters) trained by the real trainer under DDP and
DeepSpeed ZeRO-2 on every GPU of the machine, with MFU against the device's measured matmul peak in the precision
`auto` chose. Run by benchmarks/gpu_check.sh; prints JSON. Needs CUDA.

    python benchmarks/gpu_throughput.py [--steps 40] [--out runs/gpu-check]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from mfu import train_flops_per_audio_second  # noqa: E402
from train_throughput import LARGE_MODEL, make_shards  # noqa: E402

BASE_SIZED = [*LARGE_MODEL, "model.conv_dim=[512,512,512,512,512,512,512]",
              "model.conv_kernel=[10,3,3,3,3,2,2]", "model.conv_stride=[5,2,2,2,2,2,2]"]
LAUNCH = {"ddp": [], "zero2": ["--use_deepspeed", "--zero_stage", "2"]}


def device_peak_flops(dtype: torch.dtype, size: int = 8192, repeats: int = 20) -> float:
    a, b = torch.randn(size, size, device="cuda", dtype=dtype), torch.randn(size, size, device="cuda", dtype=dtype)
    torch.mm(a, b)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        torch.mm(a, b)
    end.record()
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (start.elapsed_time(end) / 1000)


def train(backend: str, shards: Path, run_dir: Path, steps: int) -> dict:
    gpus = torch.cuda.device_count()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", *LAUNCH[backend], "-m", "asr_dist.train",
           "--config", str(REPO / "configs" / "train" / "demo.yaml"), *BASE_SIZED, f"data.train_shards={shards}",
           "data.eval_shards=", "data.max_batch_seconds=160", "data.max_batch_samples=64", "data.num_workers=4",
           f"train.max_steps={steps}", "train.grad_accum=1", "train.log_every=1", "checkpoint.every_steps=0",
           f"train.run_dir={run_dir}", "train.if_run_exists=move_aside", "train.resume=none"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "train" and r["step"] > 5]  # after warm-up
    wall = rows[-1]["elapsed"] - rows[0]["elapsed"] + rows[0]["step_seconds"]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"audio_sec_per_sec": sum(r["audio_seconds"] for r in rows) / wall, "gpus": gpus,
            "precision": summary["precision"]["mode"], "peak_memory_mb": summary["peak_memory_mb"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default=str(REPO / "runs" / "gpu-check"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure", file=sys.stderr)
        return 2
    out = Path(args.out)
    shards = out / "data" / "shards"
    if not (shards / "index.json").exists():
        make_shards(out / "data", hours=0.3)
    from asr_dist.config import load_config

    cfg = load_config(REPO / "configs" / "train" / "demo.yaml", BASE_SIZED)
    flops_per_audio_s, _ = train_flops_per_audio_second(cfg, batch_size=2, seconds=4.0)
    results = {"device": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(),
               "train_gflops_per_audio_second": flops_per_audio_s / 1e9}
    for backend in ("ddp", "zero2"):
        r = train(backend, shards, out / backend, args.steps)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(r["precision"], torch.float32)
        peak = device_peak_flops(dtype) * r["gpus"]
        r["peak_tflops_all_gpus"] = peak / 1e12
        r["mfu"] = r["audio_sec_per_sec"] * flops_per_audio_s / peak
        results[backend] = r
    print(json.dumps(results, indent=1))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
