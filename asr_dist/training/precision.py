"""Which precision a run computes in, chosen from what this hardware measurably does.

bf16 autocast is the fastest choice where the device runs bf16 natively (CUDA GPUs with bf16; CPUs with AMX
or AVX512-BF16) and a trap elsewhere: on an AVX2-only CPU torch emulates bf16 and a matmul runs ~160x slower
than in fp32 (../docs/training.md, "Precision"). GPUs without bf16 (V100, T4) want fp16 with loss scaling.
`train.mixed_precision: auto` (the default) picks:

    CUDA with bf16 -> bf16;  CUDA without -> fp16;  CPU with amx_bf16/avx512_bf16 -> bf16;
    CPU without them -> a short timed probe (a few ms): bf16 only if it is not slower than fp32, else fp32.

A forced choice is kept, with a warning carrying the measured slowdown when the device emulates it. Every
rank of a node decides the same way from the same flags; the probe only breaks ties on unknown CPUs and
needs a 1.5x margin to pick bf16.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "no", "bf16", "fp16", "bf16_weights")
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
EMULATED_WARN_FACTOR = 2.0  # warn when a forced half precision is this many times slower than fp32


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses (`mode`: no | bf16 | fp16 | bf16_weights) and why."""

    mode: str
    requested: str
    device: str  # what was asked: "cuda: NVIDIA H100", "cpu: AMD EPYC (AVX512, avx512_bf16)"
    reason: str
    half_slowdown: float | None = None  # measured matmul time half/fp32 on a CPU, when probed

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_description() -> tuple[str, set[str]]:
    """('Intel Xeon ... (AVX512, amx_bf16)', {cpu flags}) from /proc/cpuinfo and torch's capability."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    native = [f for f in NATIVE_BF16_CPU_FLAGS if f in flags]
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{name} ({', '.join([capability, *native])})", flags


def device_description() -> str:
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {cpu_description()[0]}"


def measure_slowdown(dtype: torch.dtype, size: int = 512, rounds: int = 3) -> float:
    """Time of a size x size matmul in `dtype` over its time in fp32 on this CPU: the fastest of `rounds`
    alternating runs of each, so that a busy machine slows both alike (about 1 s where bf16 is emulated)."""
    a32, b32 = torch.randn(size, size), torch.randn(size, size)
    a, b = a32.to(dtype), b32.to(dtype)
    torch.mm(a32, b32), torch.mm(a, b)  # warm-up: kernel selection
    best32 = best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        torch.mm(a32, b32)
        t1 = time.perf_counter()
        torch.mm(a, b)
        t2 = time.perf_counter()
        best32, best = min(best32, t1 - t0), min(best, t2 - t1)
    return best / max(best32, 1e-9)


def choose_precision(requested: str, *, probe=measure_slowdown, cpu: tuple[str, set[str]] | None = None
                     ) -> PrecisionChoice:
    """Resolve train.mixed_precision for this process's device. `probe(dtype)` is the timed check and `cpu`
    the (name, flags) of the processor (tests pass their own)."""
    if requested not in PRECISIONS:
        raise ValueError(f"train.mixed_precision = {requested!r}; expected one of {', '.join(PRECISIONS)}")
    if torch.cuda.is_available():
        return _choose_on_gpu(requested)
    name, flags = cpu or cpu_description()
    device = f"cpu: {name}"
    native = [f for f in NATIVE_BF16_CPU_FLAGS if f in flags]
    if requested == "auto":
        if native:
            return PrecisionChoice("bf16", requested, device, f"the CPU runs bf16 natively ({', '.join(native)})")
        if not flags & {"avx512f", "avx512bw"} and flags:  # AVX2 or older: bf16 is certainly emulated
            return PrecisionChoice("no", requested, device, "no native bf16 on this CPU (no AMX, AVX512-BF16 or "
                                   "AVX-512): fp32")
        slowdown = probe(torch.bfloat16)  # AVX-512 without bf16 instructions, or unknown: measure
        if slowdown <= 1 / 1.5:
            return PrecisionChoice("bf16", requested, device, f"bf16 matmul measured {1 / slowdown:.1f}x faster "
                                   "than fp32 on this CPU", slowdown)
        return PrecisionChoice("no", requested, device, f"no native bf16 on this CPU (bf16 matmul measured "
                               f"{slowdown:.1f}x the time of fp32): fp32", slowdown)
    if requested == "no":
        return PrecisionChoice("no", requested, device, "fp32, as configured")
    half = torch.float16 if requested == "fp16" else torch.bfloat16
    if requested != "fp16" and native:
        return PrecisionChoice(requested, requested, device, f"as configured; native bf16 ({', '.join(native)})")
    slowdown = probe(half)
    choice = PrecisionChoice(requested, requested, device, f"as configured; {half} matmul measured "
                             f"{slowdown:.1f}x the time of fp32 on this CPU", slowdown)
    if slowdown >= EMULATED_WARN_FACTOR:
        log.warning("train.mixed_precision=%s on %s: this CPU emulates %s, a matmul measured %.0fx slower than "
                    "fp32; training will be about that much slower. Use train.mixed_precision=auto (or no).",
                    requested, name, half, slowdown)
    return choice


def _choose_on_gpu(requested: str) -> PrecisionChoice:
    device = device_description()
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    if requested == "auto":
        if bf16:
            return PrecisionChoice("bf16", requested, device, "the GPU supports bf16")
        return PrecisionChoice("fp16", requested, device, "the GPU has no bf16: fp16 with dynamic loss scaling")
    if requested in ("bf16", "bf16_weights") and not bf16:
        raise ValueError(f"train.mixed_precision = {requested!r} is not allowed on this GPU ({device}: no bf16); "
                         "use 'auto' (fp16 with loss scaling here) or 'no'")
    return PrecisionChoice(requested, requested, device, "as configured")
