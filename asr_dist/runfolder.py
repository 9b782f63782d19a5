"""What a run folder holds, and the rules that keep its history: one job at a time, nothing overwritten.

    run_dir/
      .lock            held (flock) by the job's main process while it runs; names its host and pid
      config.yaml      the resolved config (written once the run has started or resumed successfully)
      metrics.jsonl    one JSON line per log/eval (metrics.py), tensorboard/ the same as event files
      checkpoints/     step-N/ folders and `latest` (checkpoint.py)
      eval.json        final scores; export/ the save_pretrained model; summary.json; report.md

Rules:
- One run folder, one job: the lock is an exclusive flock, released by the kernel when the process dies (kill -9
  needs no clean-up); a second job is refused with the holder's host and pid.
- A refused resume writes nothing (config.yaml is written after the checkpoint was accepted).
- A fresh start in a folder that holds a run (a checkpoint, an export or eval.json) is refused unless
  `train.if_run_exists=move_aside`; then, as for leftovers of an attempt that never saved a checkpoint, the old
  files are moved to `<run_dir>.old-<time>/`, never truncated.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from asr_dist.config import ConfigError

log = logging.getLogger(__name__)

LOCK = ".lock"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
EVAL = "eval.json"
SUMMARY = "summary.json"
EXPORT = "export"
CHECKPOINTS = "checkpoints"
MARKS_OF_A_RUN = (EVAL, EXPORT)  # besides a complete checkpoint
JOB_EVENTS = "job_events.jsonl"  # the Slurm job's own log (asr_dist/launch): written before the run starts
JOB_FILES = (LOCK, JOB_EVENTS, "slurm")  # "slurm": submitit's folder (slurm.folder's default)


class RunFolderBusy(ConfigError):
    """Another live job holds the run folder."""


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_file = None

    # -- the lock
    def lock(self, wait_s: float = 0.0) -> None:
        """Take the folder for this process (main process of the job) or raise RunFolderBusy naming the holder.

        `wait_s`: how long a busy folder is waited for first. A killed or requeued job's ranks may take a few
        seconds to exit (a save in flight finishing its fsync) after their launcher is gone."""
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / LOCK, "a+", encoding="utf-8")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "an unknown process"
                if time.monotonic() < deadline:
                    log.warning("run folder %s is held by %s; waiting up to %.0f s for it to exit", self.path,
                                holder, deadline - time.monotonic())
                    time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
                    continue
                f.close()
                raise RunFolderBusy(f"run folder {self.path} is in use by {holder}; stop that job first or choose "
                                    "another train.run_dir (two jobs in one folder would overwrite each other's "
                                    "checkpoints)") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self._lock_file = f  # kept open: the lock lives as long as this process

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    # -- what it holds
    def holds_run(self) -> bool:
        """A checkpoint, an export or final scores: work that a fresh start must not silently replace."""
        from asr_dist.checkpoint import latest_step

        return latest_step(self.path) is not None or any((self.path / m).exists() for m in MARKS_OF_A_RUN)

    def leftovers(self) -> list[Path]:
        """What a fresh start would move aside: everything but the job's own files (lock, Slurm logs, events)."""
        return sorted(p for p in self.path.iterdir() if p.name not in JOB_FILES) if self.path.is_dir() else []

    def prepare_fresh_start(self, if_run_exists: str) -> Path | None:
        """Before a fresh start (main process, under the lock): refuse, or move the old files aside.
        Returns where they went, or None if the folder was empty."""
        old = self.leftovers()
        if not old:
            return None
        if self.holds_run() and if_run_exists != "move_aside":
            raise ConfigError(f"train.run_dir = {self.path} holds a run (checkpoints, an export or eval.json) and "
                              "this is a fresh start (train.resume=none, or no checkpoint to resume): refused so "
                              "that nothing is overwritten. Resume it with train.resume=auto, choose another "
                              "train.run_dir, or set train.if_run_exists=move_aside to move the old run to "
                              f"{self.path}.old-<time>/")
        aside = self.path.with_name(f"{self.path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        aside.mkdir()
        for p in old:
            p.rename(aside / p.name)
        log.warning("moved the previous contents of %s (%s) to %s", self.path, ", ".join(p.name for p in old), aside)
        return aside

    # -- files
    def write_json(self, name: str, value: dict) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(value, indent=1))
        os.replace(tmp, self.path / name)

    def read_json(self, name: str) -> dict | None:
        file = self.path / name
        return json.loads(file.read_text()) if file.is_file() else None
