"""Run every benchmark of the project and write one results table: benchmarks/results/results.{md,json}.

The convention: each benchmark module exposes `run(quick: bool) -> dict` of figures (and prints them as JSON
when run as a script). Each runs here in its own Python process, one after the other (they time things, so
never two at once), so that one benchmark's crash, threads or memory cannot touch the next; a benchmark that
fails is recorded with its error and the others still run. A module without `run` is run as a script and the
last JSON object it prints is taken as its figures.

    .venv/bin/python benchmarks/run_all.py            # full sizes (see each benchmark; tens of minutes)
    .venv/bin/python benchmarks/run_all.py --quick    # smaller sizes, a few minutes
    .venv/bin/python benchmarks/run_all.py --only mfu checkpoint
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import inspect
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULT_MARKER = "@@BENCHMARK_RESULT@@ "

# (name, script, what it measures), in the order they run and appear in the table.
BENCHMARKS = [
    ("prepare", "prepare.py", "shard writing: audio hours sharded per minute, synth speed"),
    ("pipeline", "pipeline.py", "data pipeline: decode throughput, padding vs HF length grouping, resume skip time"),
    ("frontend", "frontend.py", "filterbank front end per DataLoader worker: torchaudio Kaldi fbank vs HF extractor"),
    ("families", "families.py", "encoder families from scratch, same data and updates: audio-s/s, loss, dev CER"),
    ("train_throughput", "train_throughput.py", "training throughput vs the HF recipe (ratio), memory per rank"),
    ("checkpoint", "checkpoint.py", "checkpoint save/load time and size per rank: DDP, ZeRO-2, ZeRO-3"),
    ("mfu", "mfu.py", "model FLOPs utilization against the measured matmul peak (fp32, bf16)"),
]


# ----------------------------------------------------------------------------- one benchmark


def child_main(script: Path, quick: bool, kwargs: dict[str, Any]) -> int:
    """Inside the benchmark's own process: import it, call run(), print the figures behind a marker line."""
    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    accepted = inspect.signature(module.run).parameters
    result = module.run(quick=quick, **{k: v for k, v in kwargs.items() if k in accepted})
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


def has_run_function(script: Path) -> bool:
    """Whether the module defines a top-level `run` (read from the source: importing would cost seconds)."""
    import ast

    tree = ast.parse(script.read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in tree.body)


def last_json_object(text: str) -> dict | None:
    """The last line, or block of lines, of `text` that parses as a JSON object."""
    lines = text.splitlines()
    for end in range(len(lines), 0, -1):
        for start in range(end - 1, -1, -1):
            if not lines[start].lstrip().startswith("{"):
                continue
            try:
                value = json.loads("\n".join(lines[start:end]))
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def run_benchmark(name: str, script: Path, quick: bool, timeout_s: float, kwargs: dict[str, Any]) -> dict[str, Any]:
    """{"status": "ok"|"failed"|"missing", "seconds", "figures" or "error", "log"}: never raises."""
    if not script.is_file():
        return {"status": "missing", "error": f"{script.relative_to(REPO)} does not exist yet", "seconds": 0.0}
    if has_run_function(script):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(script), "--kwargs", json.dumps(kwargs)]
    else:
        cmd = [sys.executable, str(script)]
    if quick:
        cmd.append("--quick")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {"status": "failed", "error": f"timed out after {timeout_s:.0f} s", "seconds": timeout_s, "log": out[-3000:]}
    seconds = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    figures = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            figures = json.loads(line[len(RESULT_MARKER):])
    if figures is None and proc.returncode == 0:
        figures = last_json_object(proc.stdout)
    if proc.returncode != 0 or figures is None:
        reason = f"exit code {proc.returncode}" if proc.returncode else "printed no JSON object of figures"
        last_error = next((ln for ln in reversed(output.strip().splitlines()) if ln.strip()), "")
        return {"status": "failed", "error": f"{reason}: {last_error}", "seconds": seconds, "log": output[-3000:]}
    return {"status": "ok", "seconds": seconds, "figures": figures}


# ----------------------------------------------------------------------------- the table


# The figures a reader looks for first: (benchmark, flattened key, what it is, unit). Keys a benchmark did not
# report are left out; every figure is also in the full tables below.
HEADLINES = [
    ("prepare", "synth.x_real_time", "demo corpus synthesis speed", "x real time"),
    ("prepare", "prepare[workers=2].audio_hours_per_minute", "shard writing, 2 workers", "audio hours / min"),
    ("prepare", "prepare[workers=1].audio_hours_per_minute", "shard writing, 1 worker", "audio hours / min"),
    ("pipeline", "padding_60s_32.ours.padding_fraction", "padding, asr_dist duration buckets (60 s, 32 samples)", "%"),
    ("pipeline", "padding_60s_32.hf_group_by_length.padding_fraction", "padding, HF group_by_length, same sizes", "%"),
    ("pipeline", "decode.workers_1.audio_s_per_s", "decode throughput, 1 worker", "audio s / s"),
    ("pipeline", "decode.workers_2.audio_s_per_s", "decode throughput, 2 workers", "audio s / s"),
    ("pipeline", "resume_first_batch_s.ours_10pct", "first batch after resume at 10% of the epoch", "s"),
    ("pipeline", "resume_first_batch_s.ours_90pct", "first batch after resume at 90% of the epoch", "s"),
    ("pipeline", "resume_first_batch_s.naive_skip_90pct", "same at 90%, decoding and skipping (naive)", "s"),
    ("train_throughput", "throughput_bf16.asr_dist.audio_sec_per_sec", "training, asr_dist, 2 processes, bf16", "audio s / s"),
    ("train_throughput", "throughput_bf16.hf_recipe.audio_sec_per_sec", "training, HF recipe, same model/data, bf16", "audio s / s"),
    ("train_throughput", "ratio_bf16", "asr_dist / HF recipe, bf16", "x"),
    ("train_throughput", "ratio_fp32", "asr_dist / HF recipe, fp32", "x"),
    ("train_throughput", "ratio_ours_bf16_vs_recipe_default_fp32", "asr_dist bf16 / HF recipe's CPU default (fp32)", "x"),
    ("train_throughput", "hf_recipe_1proc_fp32.audio_sec_per_sec", "training, HF recipe as published (1 process, fp32)", "audio s / s"),
    ("train_throughput", "ratio_ours_default_vs_recipe_as_published", "asr_dist (2 processes, bf16) / HF recipe as published", "x"),
    ("train_throughput", "memory_mb_per_rank.ddp.after_training", "memory per rank after training, DDP", "MB"),
    ("train_throughput", "memory_mb_per_rank.zero2.after_training", "memory per rank after training, ZeRO-2", "MB"),
    ("train_throughput", "memory_mb_per_rank.zero3.after_training", "memory per rank after training, ZeRO-3", "MB"),
    ("checkpoint", "ddp.save_s_per_rank", "checkpoint save, DDP", "s per rank"),
    ("checkpoint", "zero2.save_s_per_rank", "checkpoint save, ZeRO-2", "s per rank"),
    ("checkpoint", "zero3.save_s_per_rank", "checkpoint save, ZeRO-3", "s per rank"),
    ("checkpoint", "ddp.load_s_per_rank", "checkpoint load, DDP", "s per rank"),
    ("checkpoint", "zero2.load_s_per_rank", "checkpoint load, ZeRO-2", "s per rank"),
    ("checkpoint", "zero3.load_s_per_rank", "checkpoint load, ZeRO-3", "s per rank"),
    ("checkpoint", "zero2.load_on_1_rank_s", "2-rank ZeRO-2 checkpoint loaded on 1 rank", "s"),
    ("checkpoint", "zero3.mb_per_rank", "checkpoint size, ZeRO-3", "MB per rank"),
    ("mfu", "peak_matmul_gflops_fp32", "matmul peak, fp32", "GFLOP/s"),
    ("mfu", "peak_matmul_gflops_bf16", "matmul peak, bf16", "GFLOP/s"),
    ("mfu", "train_gflop_per_audio_second", "training work of the demo model", "GFLOP / audio s"),
    ("mfu", "mfu_trainer_bf16", "MFU of the trainer, bf16", "%"),
    ("mfu", "mfu_trainer_fp32", "MFU of the trainer, fp32", "%"),
    ("mfu", "mfu_train_step_bf16", "MFU of a bare train step, bf16", "%"),
    ("mfu", "mfu_train_step_fp32", "MFU of a bare train step, fp32", "%"),
]

LABEL_KEYS = ("name", "config", "mode", "backend", "stage", "world_size", "workers")  # what names a list entry


def flatten(figures: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts become dotted names; lists of dicts (one per configuration) are indexed by their 'name'."""
    rows: list[tuple[str, Any]] = []
    if isinstance(figures, dict):
        for key, value in figures.items():
            rows += flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(figures, list) and figures and all(isinstance(v, dict) for v in figures):
        for i, value in enumerate(figures):
            key = next((k for k in LABEL_KEYS if k in value), None)
            label = f"{key}={value[key]}" if key and key not in ("name", "config") else str(value.get(key, i))
            rows += flatten({k: v for k, v in value.items() if k != key}, f"{prefix}[{label}]")
    else:
        rows.append((prefix, figures))
    return rows


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.4g}"
        return f"{value:.3e}"
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def headline_rows(results: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """(benchmark, what, formatted value, unit) for each HEADLINES figure the benchmarks reported."""
    rows = []
    for name, key, what, unit in HEADLINES:
        result = results.get(name, {})
        if result.get("status") != "ok":
            continue
        value = dict(flatten(result["figures"])).get(key)
        if value is None:
            continue
        if unit == "%":
            value = [100 * v for v in value] if isinstance(value, list) else 100 * value
        rows.append((name, what, format_value(value), unit))
    return rows


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_results(results: dict[str, dict], info: dict[str, Any], quick: bool, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    payload = {"date": stamp, "quick": quick, "machine": info, "benchmarks": results}
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str))

    lines = [f"# Benchmark results ({'quick' if quick else 'full'} run, {stamp})", "",
             f"Machine: {info['cpu']}, {info['cores']} cores" + (f", {info['cuda']}" if info.get("cuda") else "")
             + f"; torch {info['torch']}, Python {info['python']}.", "",
             f"Load average (1 min) before and after each benchmark is listed: on a busy machine ({info['cores']} "
             "cores) other processes' load slows every timing.", "",
             "| benchmark | status | time | load before / after |", "|---|---|---|---|"]
    for name, result in results.items():
        detail = result["status"] if result["status"] == "ok" else f"**{result['status']}**: {format_value(result['error'])}"
        loads = result.get("load_average_1min", [])
        load = " / ".join(f"{x:.1f}" for x in loads) + (" (busy: timings unreliable)" if loads and max(loads) > info["cores"] + 1 else "")
        lines.append(f"| {name} | {detail} | {result['seconds']:.0f} s | {load} |")
    lines.append("")
    headlines = headline_rows(results)
    if headlines:
        lines += ["## Headline figures", "", "| figure | value | unit | benchmark |", "|---|---|---|---|"]
        lines += [f"| {what} | {value} | {unit} | {name} |" for name, what, value, unit in headlines]
        lines.append("")
    for name, _, what in BENCHMARKS:
        if name not in results or results[name]["status"] != "ok":
            continue
        lines += [f"## {name}", "", what, "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {format_value(value)} |" for key, value in flatten(results[name]["figures"])]
        lines.append("")
    md_path = out_dir / "results.md"
    md_path.write_text("\n".join(lines))
    return md_path, json_path


# ----------------------------------------------------------------------------- main


def trainer_speed(train_figures: dict | None) -> dict[str, Any]:
    """What mfu.py needs from train_throughput.py: asr_dist's measured audio seconds per second, per precision."""
    out: dict[str, Any] = {}
    for key, value in flatten(train_figures or {}):
        if not isinstance(value, (int, float)) or not key.endswith("asr_dist.audio_sec_per_sec"):
            continue
        if "bf16" in key:
            out["trainer_audio_sec_per_sec_bf16"] = float(value)
        elif "_no." in key or "fp32" in key:
            out["trainer_audio_sec_per_sec_fp32"] = float(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: minutes instead of tens of minutes")
    parser.add_argument("--only", nargs="+", choices=[b[0] for b in BENCHMARKS], help="run just these")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results folder (default {RESULTS_DIR})")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default 600 quick, 2400 full)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child, args.quick, json.loads(args.kwargs))

    timeout = args.timeout or (600 if args.quick else 2400)
    results: dict[str, dict] = {}
    for name, script, what in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        kwargs = trainer_speed(results.get("train_throughput", {}).get("figures")) if name == "mfu" else {}
        print(f"[run_all] {name}: {what} ...", flush=True)
        load_before = os.getloadavg()[0]
        try:
            results[name] = run_benchmark(name, BENCH_DIR / script, args.quick, timeout, kwargs)
        except Exception:  # a bug here must not lose the other benchmarks' figures
            results[name] = {"status": "failed", "error": traceback.format_exc(limit=3), "seconds": 0.0}
        r = results[name]
        # Timings are only as good as the machine was quiet: keep the load next to them.
        r["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(f"[run_all] {name}: {r['status']} in {r['seconds']:.0f} s" + (f" ({r['error']})" if r["status"] != "ok" else ""),
              flush=True)
    md_path, json_path = write_results(results, machine_info(), args.quick, args.out)
    print(md_path.read_text())
    print(f"[run_all] wrote {md_path} and {json_path}")
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
