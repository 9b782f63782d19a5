"""Start N ranks of a Python program the way srun does (one process per rank, RANK/WORLD_SIZE/MASTER_* in the
environment), so that tests can signal one rank, kill all of them, and read every rank's own exit code —
torchrun would hide them behind its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(args: list[str], world: int, log_dir: Path, tag: str = "run") -> list[subprocess.Popen]:
    port = free_port()
    procs = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                   PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        out = open(log_dir / f"{tag}-rank{rank}.log", "w")
        procs.append(subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO))
    return procs


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    """Exit codes of all ranks; after `timeout` seconds the rest are killed (a hang shows as -9, not an exception)."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
    finally:
        kill_all(procs)
    return [p.returncode for p in procs]


def kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


# DeepSpeed on CPU occasionally aborts a rank while the process exits, after all work is done (shared facts:
# about 1 ZeRO-3 run in 50). Callers check the run's outputs, so such an exit counts as 0.
EXIT_ABORT = "terminate called without an active exception"


def run_ranks(args: list[str], world: int, log_dir: Path, tag: str = "run", timeout: float = 300) -> list[int]:
    codes = wait_all(start_ranks(args, world, log_dir, tag), timeout)
    return [0 if code == -6 and EXIT_ABORT in (log_dir / f"{tag}-rank{rank}.log").read_text() else code
            for rank, code in enumerate(codes)]


def logs(log_dir: Path, tag: str = "run") -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(log_dir.glob(f"{tag}-rank*.log")))
