"""Graceful stop: a signal on any rank becomes one stop that every rank agrees on at a step boundary.

Schedulers warn a job before they kill it: Slurm sends SIGUSR2 (`--signal=USR2@90`), preemption and
`scancel` send SIGTERM, torchrun forwards SIGTERM to its workers. A signal reaches one rank, or all of them
at slightly different moments. If each rank acted on its own, one rank would enter a checkpoint save (a
collective) while the others enter the next forward pass, and the job would hang until the kill.

So the handler only records the signal (setting an attribute is async-signal safe in Python: the handler
runs between bytecodes of the main thread). `should_stop()` is called once per optimizer step on every rank
and does ONE all-reduce (max) of the recorded signal; all ranks get the same answer at the same step, save
together, and exit with `REQUEUE_EXIT_CODE`, which a Slurm script or submitit wrapper treats as "requeue me".
"""

from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist

# EX_TEMPFAIL from sysexits.h ("temporary failure; the user is invited to retry"): distinct from 0 (done),
# 1 (error), 124/137 (timeout/killed) and from the 128+N codes of a process that died of a signal.
REQUEUE_EXIT_CODE = 75

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)  # SIGINT: Ctrl-C (a second one interrupts at once)

_RANK_BITS = 16  # the all-reduced value packs (signal number << 16) | (rank + 1)


class GracefulStop:
    """Turns SIGTERM/SIGINT/SIGUSR2 into a stop agreed by all ranks; `reason` says which signal reached which rank."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.signals = signals
        self._signum = 0  # set by the handler, read at step boundaries
        self._previous: dict[int, object] = {}
        self.stopping = False
        self.reason: str | None = None

    def install(self) -> "GracefulStop":
        """Install the handlers (main thread only; Python delivers signals there)."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("GracefulStop.install() must be called from the main thread")
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        """Put the previous handlers back (tests, or code that runs after training)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self._signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: the user does not want to wait for the checkpoint
        self._signum = signum  # nothing else: no I/O, no locks, no collectives in a handler

    @property
    def requested_locally(self) -> bool:
        """A signal reached this rank (not yet agreed with the others)."""
        return self._signum != 0

    def should_stop(self, accelerator) -> bool:
        """Every rank calls this at the same step boundary; True on all ranks or on none.

        One all-reduce(max) of a single int64 per call: negligible next to a training step, also on gloo.
        """
        if self.stopping:
            return True
        rank = accelerator.process_index
        value = (self._signum << _RANK_BITS) | (rank + 1) if self._signum else 0
        flag = torch.tensor([value], dtype=torch.int64, device=accelerator.device)
        if accelerator.num_processes > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        agreed = int(flag.item())
        if agreed:
            signum, from_rank = agreed >> _RANK_BITS, (agreed & ((1 << _RANK_BITS) - 1)) - 1
            self.stopping = True
            self.reason = f"{signal.Signals(signum).name} received on rank {from_rank}"
        return self.stopping
