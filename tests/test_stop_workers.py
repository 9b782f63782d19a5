"""A stop signal to the whole job, with DataLoader workers on, ends in a checkpoint and a clean exit, and the
resumed run ends bit-identical to an uninterrupted one, dropout and SpecAugment included.

The job is started as users start it (`accelerate launch`, its own process group) and SIGTERM goes to that
whole group, as `kill -TERM -PGID` or a preempting scheduler does; torchrun forwards it to each rank's process
group, DataLoader workers included (before the workers ignored stop signals, they died of it and the ranks
crashed with "DataLoader worker ... is killed by signal: Terminated" instead of saving)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_train import ACCELERATE_CONFIGS, EXIT_ABORT, REPO, TINY

STEPS = 12
RANDOMNESS = ["model.hidden_dropout=0.1", "model.mask_time_prob=0.05", "model.mask_time_length=2"]


def command(backend: str, shards, run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "configs" / "accelerate" / ACCELERATE_CONFIGS[backend]), "-m", "asr_dist.train",
            "--config", TINY, f"data.train_shards={shards.train}", "data.eval_shards=", f"train.run_dir={run_dir}",
            f"train.max_steps={STEPS}", "data.num_workers=4", "train.log_every=1", "checkpoint.every_steps=0",
            *RANDOMNESS, *overrides]


def finished(cmd: list[str], run_dir: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    done = (run_dir / "export" / "model.safetensors").is_file()
    if proc.returncode != 0 and done and EXIT_ABORT in proc.stdout + proc.stderr:
        proc.returncode = 0
    assert proc.returncode == 0 and done, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def last_logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return max((r["step"] for r in rows if r["kind"] == "train"), default=0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "zero2"])
def test_sigterm_to_the_process_group_with_workers_saves_and_resumes_bit_identical(backend, tiny_shards, tmp_path):
    from safetensors.torch import load_file

    from asr_dist.checkpoint import latest_step

    reference = tmp_path / "reference"
    finished(command(backend, tiny_shards, reference), reference)

    run_dir = tmp_path / "run"
    stop_after = random.Random(backend).randint(2, STEPS - 4)
    log = open(tmp_path / "stopped.log", "w")
    proc = subprocess.Popen(command(backend, tiny_shards, run_dir), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while last_logged_step(run_dir) < stop_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the stop"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    output = (tmp_path / "stopped.log").read_text()
    stopped_at = latest_step(run_dir)
    assert stopped_at is not None and stop_after <= stopped_at < STEPS, output[-4000:]
    assert "stopping at step" in output and "killed by signal" not in output, output[-4000:]

    resumed = finished(command(backend, tiny_shards, run_dir), run_dir)
    assert f"step-{stopped_at}" in resumed.stdout + resumed.stderr  # it resumed from the stop's checkpoint
    final, expected = load_file(run_dir / "export" / "model.safetensors"), load_file(reference / "export" / "model.safetensors")
    assert final.keys() == expected.keys()
    different = [k for k in final if not torch.equal(final[k], expected[k])]
    assert not different, different
