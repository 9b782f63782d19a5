"""Global-token CTC normalization: the update depends on the global batch only, not on how it is cut.

The same 8 equal-length samples per update (tests/accumulation_worker.py), two updates, through the real
Trainer.train_step:
  reference   1 process,  1 micro-batch of 8
  accumulate  1 process,  4 micro-batches of 2            (accumulation)
  ddp         2 processes x 2 micro-batches of 2, DDP      (world size + accumulation)
  zero2       2 processes x 2 micro-batches of 2, ZeRO-2   (the same through DeepSpeed's engine)

What must agree: the logged loss (CTC sum / global tokens), the pre-clip gradient norm (catches any scale
error: a missing x grad_accum or x world_size would change it by 2-4x) and the parameter change after two
updates. Adam with eps = 1 makes the update ~ lr x gradient (|g| << 1), so the parameter change compares
the gradients element by element instead of Adam's near-sign first step, which would hide scale errors.
Tolerances: float32 sums in a different order differ by ~1e-6 relative (measured 5e-6 for the parameter
change); we allow 1e-5 on the loss and 1e-4 on the norm and the change.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WORKER = str(REPO / "tests" / "accumulation_worker.py")
ADAM_AS_SGD = ["optimizer.eps=1.0", "optimizer.max_grad_norm=0", "optimizer.lr=0.01"]


def _launch(out: Path, processor: Path, grad_accum: int, accelerate_config: str | None) -> dict:
    args = [WORKER, str(out), str(processor), str(grad_accum), *ADAM_AS_SGD]
    if accelerate_config:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs" / "accelerate" / accelerate_config), *args]
    else:
        cmd = [sys.executable, *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.is_file(), f"{' '.join(cmd)} wrote no result (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                          f"{proc.stderr[-3000:]}"
    return torch.load(out)


def _change(result: dict) -> dict[str, torch.Tensor]:
    return {k: result["final"][k] - result["initial"][k] for k in result["final"]}


def _norm(tensors) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


@pytest.mark.slow
def test_micro_batches_and_ranks_give_the_update_of_one_big_batch(tiny_shards, tmp_path):
    runs = {
        "reference": (1, None),
        "accumulate": (4, None),
        "ddp": (2, "cpu_ddp_2proc.yaml"),
        "zero2": (2, "deepspeed_zero2.yaml"),
    }
    results = {name: _launch(tmp_path / f"{name}.pt", tiny_shards.processor, accum, config)
               for name, (accum, config) in runs.items()}
    ref = results.pop("reference")
    ref_change = _change(ref)
    assert _norm(ref_change.values()) > 1e-3, "the reference update must move the weights"
    for name, result in results.items():
        assert all(torch.equal(result["initial"][k], ref["initial"][k]) for k in ref["initial"]), \
            f"{name}: the runs must start from the same weights"
        assert result["losses"] == pytest.approx(ref["losses"], rel=1e-5), name
        assert result["grad_norms"] == pytest.approx(ref["grad_norms"], rel=1e-4), name
        change = _change(result)
        relative = _norm(change[k] - ref_change[k] for k in ref_change) / _norm(ref_change.values())
        assert relative < 1e-4, f"{name}: parameter change differs from the one-batch update by {relative:.2e}"
