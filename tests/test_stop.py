"""Graceful stop: a signal on one rank -> all ranks agree at the next step, save together, exit 75."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from asr_dist.checkpoint import COMPLETE, find_checkpoint, read_meta
from asr_dist.stop import REQUEUE_EXIT_CODE, GracefulStop
from _ranks import logs, run_ranks, start_ranks, wait_all

WORKER = "tests/ckpt_worker.py"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2])
def test_a_signal_only_sets_a_flag_that_should_stop_turns_into_a_stop_with_its_reason(sig):
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True)
    before = signal.getsignal(sig)
    stop = GracefulStop().install()
    try:
        assert not stop.should_stop(accelerator)
        os.kill(os.getpid(), sig)  # the process survives: the handler only records it
        assert stop.requested_locally
        assert stop.should_stop(accelerator) and stop.should_stop(accelerator)
        assert stop.reason == f"{sig.name} received on rank 0"
    finally:
        stop.uninstall()
    assert signal.getsignal(sig) == before
    assert REQUEUE_EXIT_CODE == 75


def seen_steps(run_dir, rank):
    lines = (run_dir / f"seen-rank-{rank}.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.mark.slow
def test_sigusr2_to_one_rank_stops_both_at_the_same_step_with_one_checkpoint_and_exit_75(tmp_path):
    run_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    args = [WORKER, str(run_dir), "--backend", "ddp", "--steps", "40", "--save-every", "0", "--step-sleep", "0.2"]
    procs = start_ranks(args, 2, log_dir, "first")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and procs[1].poll() is None:
        seen = run_dir / "seen-rank-1.jsonl"
        if seen.exists() and len(seen.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGUSR2)  # only rank 1 hears it, as with a per-task Slurm signal
    codes = wait_all(procs, timeout=240)
    assert codes == [REQUEUE_EXIT_CODE, REQUEUE_EXIT_CODE], logs(log_dir, "first")

    # Both ranks ran the same steps and stopped at the same one; that step is the one checkpoint.
    steps0, steps1 = seen_steps(run_dir, 0), seen_steps(run_dir, 1)
    assert steps0 == steps1 and steps0 == list(range(1, len(steps0) + 1)) and len(steps0) < 40
    stopped_at = steps0[-1]
    checkpoint = find_checkpoint(run_dir)
    assert checkpoint.name == f"step-{stopped_at}" and (checkpoint / COMPLETE).is_file()
    assert read_meta(checkpoint)["world_size"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", checkpoint.name]
    for rank in (0, 1):
        assert f"stopping at step {stopped_at}: SIGUSR2 received on rank 1" in (log_dir / f"first-rank{rank}.log").read_text()

    # The requeued job continues from there.
    resumed = [WORKER, str(run_dir), "--backend", "ddp", "--steps", str(stopped_at + 2), "--save-every", "0"]
    assert run_ranks(resumed, 2, log_dir, "again") == [0, 0], logs(log_dir, "again")
    assert f"starts at step {stopped_at}" in (log_dir / "again-rank0.log").read_text()
    assert seen_steps(run_dir, 0)[len(steps0):] == [stopped_at + 1, stopped_at + 2]
