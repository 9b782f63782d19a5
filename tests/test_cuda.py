"""CUDA paths: run where a GPU is present, skipped (visibly, with the reason) where not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "train" / "tiny.yaml")


def test_auto_precision_on_this_gpu():
    from asr_dist.training.precision import choose_precision

    choice = choose_precision("auto")
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    assert choice.mode == expected and choice.device.startswith("cuda:"), choice


@pytest.mark.parametrize("precision", ["auto", "fp16", "no"])
def test_one_gpu_trains_in_each_precision(precision, tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "asr_dist.train", "--config", TINY,
                           f"data.train_shards={tiny_shards.train}", f"data.eval_shards={tiny_shards.dev}",
                           f"train.run_dir={run_dir}", "train.max_steps=8", f"train.mixed_precision={precision}",
                           "train.log_every=1", "optimizer.lr=0.005"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train" and not r["skipped"]]
    assert losses and losses[-1] < losses[0], losses
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["precision"]["device"].startswith("cuda:")
