"""train.mixed_precision: `auto` picks what this processor runs natively; a forced emulated precision warns with
the measured slowdown; fp16's dynamic loss scaling skips overflowing updates, counts them and recovers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from asr_dist.config import load_config
from asr_dist.training.backend import Backend
from asr_dist.training.budget import RunProgress, TrainingBudget
from asr_dist.training.precision import NATIVE_BF16_CPU_FLAGS, PrecisionChoice, choose_precision
from asr_dist.training.step import Trainer

from _tiny_model import TEXTS, audio, make_batch, tiny_model_and_processor

REPO = Path(__file__).resolve().parent.parent
CPU_FLAGS = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
NATIVE = bool(CPU_FLAGS & set(NATIVE_BF16_CPU_FLAGS))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rule; tests/test_cuda.py covers GPUs")
def test_auto_follows_this_processor():
    choice = choose_precision("auto")
    if NATIVE:  # AMX or AVX512-BF16: bf16 autocast
        assert choice.mode == "bf16" and "natively" in choice.reason, choice
    elif "avx512f" not in CPU_FLAGS:  # AVX2 only: bf16 is emulated (~160x slower), so fp32
        assert choice.mode == "no" and "no native bf16" in choice.reason, choice
    else:  # AVX-512 without bf16 instructions: decided by the probe, which it names
        assert choice.half_slowdown is not None and choice.mode in ("no", "bf16"), choice
    assert choice.requested == "auto" and choice.reason


def test_auto_on_a_cpu_without_native_bf16_decides_by_the_probe():
    avx2 = ("AMD EPYC (AVX2)", {"avx2", "fma"})
    assert choose_precision("auto", probe=lambda dtype: pytest.fail("flags suffice"), cpu=avx2).mode == "no"
    avx512 = ("Xeon Skylake (AVX512)", {"avx2", "avx512f", "avx512bw"})  # no bf16 instructions: measured
    slow = choose_precision("auto", probe=lambda dtype: 8.0, cpu=avx512)
    assert (slow.mode, slow.half_slowdown) == ("no", 8.0)
    fast = choose_precision("auto", probe=lambda dtype: 0.25, cpu=avx512)
    assert fast.mode == "bf16"
    amx = choose_precision("auto", probe=lambda dtype: pytest.fail("no probe needed"), cpu=("Xeon", {"amx_bf16"}))
    assert amx.mode == "bf16" and "amx_bf16" in amx.reason


def test_forced_bf16_on_an_emulating_cpu_warns_with_the_measured_factor(caplog):
    with caplog.at_level(logging.WARNING):
        choice = choose_precision("bf16", probe=lambda dtype: 163.0, cpu=("AMD EPYC (AVX2)", {"avx2"}))
    assert choice.mode == "bf16"  # kept: the user asked for it
    assert "163x slower" in caplog.text and "AMD EPYC" in caplog.text


def test_unknown_precision_is_a_config_error(tmp_path):
    from asr_dist.config import ConfigError

    with pytest.raises(ConfigError, match="train.mixed_precision"):
        load_config(str(REPO / "configs/train/tiny.yaml"), ["train.mixed_precision=fp8"])


def test_fp16_loss_scaling_skips_overflowing_updates_and_recovers():
    """DDP's fp16 path on one CPU process: a huge initial scale overflows the fp16 gradients; those updates are
    skipped on every rank, counted, leave the weights untouched and halve the scale, until updates go through."""
    model, processor = tiny_model_and_processor()
    model.train()
    cfg = load_config(str(REPO / "configs/train/tiny.yaml"), ["train.mixed_precision=fp16", "data.train_shards=x",
                                                             "optimizer.max_grad_norm=1.0", "train.grad_accum=1"])
    backend = Backend(None, PrecisionChoice("fp16", "fp16", "cpu", "test"))
    assert backend.owns_loss_scaling and backend.autocast_dtype == torch.float16
    accelerator = backend.build_accelerator(cfg)
    from asr_dist.model import EncoderFreeze
    from asr_dist.optim import build_optimizer

    optimizer = build_optimizer(model, cfg.optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 34, growth_interval=1000)
    trainer = Trainer(cfg, backend, accelerator, model, optimizer, scheduler, EncoderFreeze(model, 0),
                      use_attention_mask=True, blank_id=processor.tokenizer.pad_token_id,
                      progress=RunProgress(TrainingBudget(100, 100)), scaler=scaler)
    # fp16 is emulated on CPUs (~1 GFLOP/s): two short utterances keep this quick
    batch = make_batch(processor, [(f"k{i}", TEXTS[i][:8], "s", audio(0.4 + 0.1 * i, i)) for i in range(2)])
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    first = trainer.train_step([batch])
    assert first["skipped"] and first["loss_scale"] == 2.0 ** 33, first
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # a skipped update moves nothing
    stats = []
    while len(stats) < 30 and not (stats and not stats[-1]["skipped"]):
        stats.append(trainer.train_step([batch]))
    applied = [s for s in stats if not s["skipped"]]
    assert applied, [s["loss_scale"] for s in stats]
    assert trainer.progress.skipped_updates == 1 + sum(s["skipped"] for s in stats)
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in applied)
    assert applied[0]["loss_scale"] < 2.0 ** 24  # halved until the fp16 gradients fit
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())
