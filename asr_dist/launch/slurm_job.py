"""What runs inside every Slurm task of `asr-dist submit`: the trainer, and the requeue decision after it stops.

submitit starts one Python process per task (srun), unpickles a `TrainingJob` and calls it. The call turns
Slurm's task variables into torch.distributed's (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from the first
node) and runs the trainer in-process; Accelerate picks DDP or DeepSpeed from there as the config says.

How submitit's signal handling and ours cooperate (see docs/slurm.md for the picture):

* submitit installs a USR2 handler before calling us. On global rank 0 it would call `checkpoint()`, run
  `scontrol requeue` and `sys.exit` at once, in the middle of a step, while the other ranks carry on. A
  checkpoint taken like that is impossible with sharded state (every rank must write its own part).
* So while the trainer runs, `asr_dist.stop.GracefulStop` owns SIGUSR2 and SIGTERM: the signal only sets a
  flag, all ranks agree on it at the next step boundary with one all-reduce, save together, and leave the
  trainer with `REQUEUE_EXIT_CODE`.
* Then this module decides on every rank: when Slurm itself is ending the run (state no longer RUNNING:
  `scancel`, preemption, the hard time limit) nothing is requeued from here; otherwise, under
  `slurm.max_requeues` (counted by Slurm in SLURM_RESTART_COUNT), global rank 0 runs `scontrol requeue` and
  every rank exits without a result (a result file would make submitit report the job as finished); at the
  limit, every rank raises `RequeueLimitReached`, which submitit stores as the job's error. The requeued job
  resumes from `latest` because `train.resume=auto`.
* `checkpoint()`/`__submitit_checkpoint__` remain submitit's path for a signal that arrives before the trainer
  installed GracefulStop (while Python imports and builds the model): nothing new to save yet, so they only
  requeue the same job, which resumes from the last published checkpoint.

Everything that happens to the job (start, resume step, stop reason, requeue count, end) goes to
`<run_dir>/job_events.jsonl`, one JSON object per line, written by global rank 0.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any
from asr_dist.runfolder import JOB_EVENTS

import submitit

EVENTS_FILE = JOB_EVENTS  # runfolder.py names every file of a run folder


class RequeueLimitReached(RuntimeError):
    """The job stopped gracefully once more than `slurm.max_requeues` allows: it ends instead of requeueing."""


class TrainingJob(submitit.helpers.Checkpointable):
    """The callable submitit pickles: the resolved config as a plain dict (this module imports no torch, so
    that `asr-dist submit` stays quick). The job's result is `asr_dist.train.run`'s summary (task 0's)."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.requeued_by_submitit = False  # set by __submitit_checkpoint__ in this run

    # ------------------------------------------------------------------ running

    def __call__(self) -> Any:
        env = submitit.JobEnvironment()
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        distributed = setup_distributed_env(env, restarts, self.config["slurm"]["master_port"])
        run_dir = self.config["train"]["run_dir"]
        events = JobEvents(run_dir, enabled=env.global_rank == 0)
        resume = self.config["train"]["resume"]
        if restarts and any(e["event"] == "stop" and e.get("job_id") == env.job_id and e["step"] is not None
                            for e in read_events(run_dir)):
            # This job saved before it was requeued: continue from that save, whatever train.resume said
            # (with "none" or a path to another run's checkpoint, the requeued run would start over).
            resume = "auto"
        events.write("start", job_id=env.job_id, restarts=restarts, nodes=env.num_nodes, world_size=env.num_tasks,
                     hosts=list(env.hostnames), master=f"{distributed['MASTER_ADDR']}:{distributed['MASTER_PORT']}",
                     resume=resume, resume_from_step=resume_step(resume, run_dir))

        from asr_dist.config import config_from_dict
        from asr_dist.stop import REQUEUE_EXIT_CODE
        from asr_dist.train import run

        cfg = config_from_dict(self.config)
        cfg.train.resume = resume
        try:
            result = run(cfg)
        except SystemExit as stop:
            if stop.code != REQUEUE_EXIT_CODE:
                if not self.requeued_by_submitit:  # submitit's handler exits (-1) right after its requeue
                    events.write("error", message=f"trainer exited with code {stop.code}")
                raise
            result = {"exit_code": REQUEUE_EXIT_CODE}
        except BaseException as error:
            events.write("error", message=f"{type(error).__name__}: {error}")
            raise
        if isinstance(result, dict) and result.get("exit_code") == REQUEUE_EXIT_CODE:
            self._after_graceful_stop(env, restarts, events)  # requeues and exits, or raises
        events.write("finish", step=latest_step(self.config["train"]["run_dir"]), restarts=restarts)
        return result

    def _after_graceful_stop(self, env, restarts: int, events: "JobEvents") -> None:
        """Requeue (rank 0 asks Slurm) and leave without a result, or end the job when requeues are used up."""
        from asr_dist.stop import REQUEUE_EXIT_CODE

        slurm = self.config["slurm"]
        step = latest_step(self.config["train"]["run_dir"])
        state, left = slurm_view(env.job_id)
        reason = stop_reason(state, left, slurm["signal_delay_s"])
        events.write("stop", job_id=env.job_id, step=step, reason=reason, restarts=restarts)
        if state not in (None, "RUNNING"):
            # Slurm is ending this run itself (scancel; preemption, after which Slurm requeues by itself; the
            # time limit): a requeue from here would undo a cancel. Leave without a result, as after a requeue.
            sys.exit(REQUEUE_EXIT_CODE)
        if restarts >= slurm["max_requeues"]:
            message = (f"job {env.job_id} stopped at step {step} ({reason}) after {restarts} requeue(s): "
                       f"slurm.max_requeues={slurm['max_requeues']} reached, not requeued. The checkpoint is saved; "
                       f"submit again (train.resume=auto) to continue, or raise slurm.max_requeues.")
            events.write("give_up", step=step, restarts=restarts, message=message)
            raise RequeueLimitReached(message) from None
        if env.global_rank == 0:
            try:
                requeue(env.job_id)
                events.write("requeue", step=step, requeues=restarts + 1, max_requeues=slurm["max_requeues"],
                             reason=reason)
            except RuntimeError as error:  # e.g. Slurm is already requeueing a preempted job itself
                events.write("requeue_failed", step=step, message=str(error))
        print(f"[asr_dist] stopped at step {step} ({reason}); job requeued ({restarts + 1}/{slurm['max_requeues']})",
              flush=True)
        # SystemExit skips submitit's result file: the job is not over, it comes back after the requeue.
        sys.exit(REQUEUE_EXIT_CODE)

    # ------------------------------------------------------------------ submitit's checkpoint protocol

    def __submitit_checkpoint__(self, *args: Any, **kwargs: Any):
        """submitit's USR2 path on global rank 0, before the trainer took SIGUSR2 over: requeue the same job.

        Nothing is saved here (the trainer has not started a step, and a sharded save needs every rank); the
        requeued job resumes from the last published checkpoint. Returning None makes submitit end the job.
        This runs inside a signal handler, quite likely in the middle of `import torch`: it must import
        nothing (a half-imported module raises here, and the error vanishes into the interrupted import).
        """
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        max_requeues = self.config["slurm"]["max_requeues"]
        events = JobEvents(self.config["train"]["run_dir"])
        if restarts >= max_requeues:
            events.write("give_up", step=None, restarts=restarts,
                         message=f"signal before training started; slurm.max_requeues={max_requeues} reached, "
                                 "not requeued")
            return None
        events.write("requeue", step=None, requeues=restarts + 1, max_requeues=max_requeues,
                     reason="signal before the trainer was ready (submitit requeues; resume from latest)")
        self.requeued_by_submitit = True
        return submitit.helpers.DelayedSubmission(TrainingJob(self.config))

    checkpoint = __submitit_checkpoint__  # Checkpointable's name; submitit prefers the dunder when both exist


# ----------------------------------------------------------------------------- helpers


def setup_distributed_env(env, restarts: int, master_port: int = 0) -> dict[str, str]:
    """torch.distributed's env:// variables from submitit's view of Slurm (what torchrun would set)."""
    tasks_per_node = max(1, env.num_tasks // max(1, env.num_nodes))
    port = master_port or derive_port(env.job_id, restarts)
    values = {
        "RANK": str(env.global_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_RANK": str(env.local_rank),
        "LOCAL_WORLD_SIZE": str(tasks_per_node),
        "NODE_RANK": str(env.node),
        "GROUP_RANK": str(env.node),
        "MASTER_ADDR": env.hostnames[0],
        "MASTER_PORT": str(port),
    }
    os.environ.update(values)
    # One thread per allocated CPU (torchrun would set 1); read by torch when it is first imported.
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
    return values


def derive_port(job_id: str, restarts: int) -> int:
    """A port in 20000..39999 that all tasks compute alike, different after a requeue (old sockets may linger)."""
    return 20000 + zlib.crc32(f"{job_id}/{restarts}".encode()) % 20000


def latest_step(run_dir: str) -> int | None:
    """asr_dist.checkpoint.latest_step, imported only when needed (this module loads before torch)."""
    from asr_dist.checkpoint import latest_step as newest

    return newest(run_dir)


def resume_step(resume: str, run_dir: str) -> int | None:
    """The step the trainer will start from for this `train.resume` (None: a fresh start)."""
    if resume == "none":
        return None
    return latest_step(run_dir if resume == "auto" else resume)


def stop_reason(state: str | None, left: int | None, signal_delay_s: int) -> str:
    """Why the trainer was told to stop, from Slurm's view of the job right after the stop."""
    if state not in (None, "RUNNING"):
        return f"Slurm is ending the job ({state}: scancel, preemption or the time limit); not requeued from here"
    if left is None:
        return "signal (time left unknown)"
    if left <= signal_delay_s + 60:  # Slurm sends --signal on a 30 s tick
        return f"time limit ({left} s left)"
    return f"preempted or signalled ({left} s left)"


def slurm_view(job_id: str) -> tuple[str | None, int | None]:
    """The job's state (RUNNING, COMPLETING after scancel, ...) and seconds left; None where squeue cannot say."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %L"], capture_output=True, text=True,
                             timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    state = out[0] if out else None
    return state, parse_slurm_duration(out[1]) if len(out) > 1 else None


def parse_slurm_duration(text: str) -> int | None:
    """Slurm's [days-][hours:]minutes:seconds (also minutes alone) in seconds; None for UNLIMITED and the like."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def requeue(job_id: str) -> None:
    """`scontrol requeue`; Slurm then ends every task of this run and schedules the job again."""
    done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"scontrol requeue {job_id} failed: {done.stderr.strip() or done.stdout.strip()}")


class JobEvents:
    """Appends one JSON line per job event to <run_dir>/job_events.jsonl and echoes it to the task's log."""

    def __init__(self, run_dir: str, enabled: bool = True) -> None:
        self.path = Path(run_dir) / EVENTS_FILE
        self.enabled = enabled

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "event": event, **fields}
        line = json.dumps(record)
        print(f"[asr_dist] {line}", flush=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def read_events(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / EVENTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
