"""Model FLOPs utilization: the tiny Wav2Vec2ForCTC's training FLOPs against this machine's matmul peak.

Three measurements, all on this machine:
1. the peak: a large square matmul timed in fp32 and in bf16 (what the BLAS can reach at all);
2. the work: FLOPs of one training step (forward + backward) per second of audio, counted by
   `torch.utils.flop_counter.FlopCounterMode` on the model asr_dist.model builds for configs/train/demo.yaml
   (or the config defaults), frozen as that config says (a frozen CNN runs no backward);
3. the speed: audio seconds per second of a plain train step (forward, backward, AdamW) on one process in
   fp32 and under bf16 autocast; `run_all.py` also passes the trainer's own speeds (2 processes, data pipeline
   and all) from train_throughput.py, which trains the same config.
MFU = speed x FLOPs per audio second / peak. Attention is counted with the eager implementation, because the
counter does not know the CPU flash-attention kernel that SDPA picks (its math FLOPs are the same). The
counter's own formula for a convolution's backward ignores `groups` in the weight gradient (16x too much for
wav2vec2's grouped positional convolution), so `conv_backward_flops` below replaces it.

Run as a script to print the figures as JSON: `python benchmarks/mfu.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from asr_dist.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "train" / "demo.yaml"
SAMPLE_RATE = 16000
PANGRAM = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG'S BACK"  # every letter + apostrophe: the usual vocabulary
VOCAB_SIZE = 30  # A-Z, apostrophe, word delimiter, pad (the CTC blank), unk


def matmul_peak_flops(dtype: torch.dtype, size: int, seconds: float) -> float:
    """Best FLOP/s of an n x n x n matmul over repeated runs (best, not mean: other load only slows it)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def load_model_config() -> tuple[Config, str]:
    """The demo's training config when it exists, else the defaults (both are the 'tiny' model)."""
    if DEMO_CONFIG.is_file():
        return load_config(DEMO_CONFIG), str(DEMO_CONFIG.relative_to(REPO))
    return load_config(None), "config defaults"


def build_model(cfg: Config, attn_implementation: str | None = None) -> torch.nn.Module:
    """The model the trainer builds for this config (random weights), frozen as the config says."""
    from asr_dist.model import build_model as build_asr_model
    from asr_dist.model import freeze_parameters
    from asr_dist.text import build_processor

    processor = build_processor([PANGRAM])
    model = build_asr_model(cfg.model, processor)
    freeze_parameters(model, cfg.freezing)
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    return model.train()


def fake_batch(batch_size: int, seconds: float) -> dict[str, torch.Tensor]:
    """Random audio and labels at about 15 characters per second (read speech)."""
    g = torch.Generator().manual_seed(0)
    n = int(seconds * SAMPLE_RATE)
    labels = torch.randint(3, VOCAB_SIZE, (batch_size, int(seconds * 15)), generator=g)  # characters, not pad/unk
    return {"input_values": torch.randn(batch_size, n, generator=g), "labels": labels}


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape) -> int:
    """Each gradient (input, weight) of a convolution costs what its forward costs, groups included."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def train_flops_per_audio_second(cfg: Config, batch_size: int, seconds: float) -> tuple[float, float]:
    """(training FLOPs, forward FLOPs) per audio second of one forward + backward."""
    torch.manual_seed(0)
    model = build_model(cfg, attn_implementation="eager")
    batch = fake_batch(batch_size, seconds)
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})
    with counter:
        loss = model(**batch).loss
    forward = counter.get_total_flops()
    with counter:  # re-entering resets the counts
        loss = model(**batch).loss
        loss.backward()
    audio = batch_size * seconds
    return counter.get_total_flops() / audio, forward / audio


def train_audio_seconds_per_second(cfg: Config, batch_size: int, seconds: float, bf16: bool, steps: int) -> float:
    """Median throughput of forward + backward + AdamW steps (after one warm-up step)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = fake_batch(batch_size, seconds)
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - t0)
    times.sort()
    return batch_size * seconds / times[len(times) // 2]


def run(quick: bool = False, trainer_audio_sec_per_sec_bf16: float | None = None,
        trainer_audio_sec_per_sec_fp32: float | None = None) -> dict:
    """Every figure as a flat dict. The trainer_* speeds (asr_dist's own, measured by train_throughput.py on
    the same model config) add the MFU of the real trainer in that precision."""
    cfg, source = load_model_config()
    batch_size, seconds = (4, 4.0) if quick else (8, 4.0)
    peak_size, peak_time = (1024, 1.0) if quick else (2048, 3.0)
    steps = 2 if quick else 5
    load_start = os.getloadavg()[0]
    peak_fp32 = matmul_peak_flops(torch.float32, peak_size, peak_time)
    peak_bf16 = matmul_peak_flops(torch.bfloat16, peak_size, peak_time)
    flops_per_audio_s, fwd_per_audio_s = train_flops_per_audio_second(cfg, batch_size, seconds)
    speed_fp32 = train_audio_seconds_per_second(cfg, batch_size, seconds, bf16=False, steps=steps)
    speed_bf16 = train_audio_seconds_per_second(cfg, batch_size, seconds, bf16=True, steps=steps)
    # The peak is a property of the machine: measured again at the end, the better of the two counts (other
    # processes' load only ever lowers it).
    peak_fp32 = max(peak_fp32, matmul_peak_flops(torch.float32, peak_size, peak_time))
    peak_bf16 = max(peak_bf16, matmul_peak_flops(torch.bfloat16, peak_size, peak_time))
    load = max(load_start, os.getloadavg()[0])
    result = {
        "model_config": source,
        "feature_encoder_trained": not cfg.freezing.feature_encoder,
        "threads": torch.get_num_threads(),
        "batch": f"{batch_size} x {seconds:g} s",
        "peak_matmul_gflops_fp32": peak_fp32 / 1e9,
        "peak_matmul_gflops_bf16": peak_bf16 / 1e9,
        "train_gflop_per_audio_second": flops_per_audio_s / 1e9,
        "forward_gflop_per_audio_second": fwd_per_audio_s / 1e9,
        "train_step_audio_sec_per_sec_fp32": speed_fp32,
        "train_step_audio_sec_per_sec_bf16": speed_bf16,
        "mfu_train_step_fp32": speed_fp32 * flops_per_audio_s / peak_fp32,
        "mfu_train_step_bf16": speed_bf16 * flops_per_audio_s / peak_bf16,
    }
    for precision, speed, peak in (("bf16", trainer_audio_sec_per_sec_bf16, peak_bf16),
                                   ("fp32", trainer_audio_sec_per_sec_fp32, peak_fp32)):
        if speed:
            result[f"trainer_audio_sec_per_sec_{precision}"] = speed
            result[f"mfu_trainer_{precision}"] = speed * flops_per_audio_s / peak
    result["load_average_1min"] = round(load, 2)
    cores = len(os.sched_getaffinity(0))
    if load > cores + 1 or any(v > 1 for k, v in result.items() if k.startswith("mfu_")):  # +1: this process
        result["warning"] = (f"machine busy (load {load:.1f} on {cores} cores) or loaded differently while the "
                             "trainer's speed was measured: the peak and the speeds are not comparable, rerun on a "
                             "quiet machine")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller matmul and batch, fewer steps")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
