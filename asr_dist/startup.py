"""A rank's start-up without silent hangs or orphans: die with the launcher, bound every wait, name what is awaited.

Two failure modes this module removes (issue 17):

* Orphaned ranks. torchrun (and so `accelerate launch`) starts each rank in its own session, so a `kill -9`
  of the launcher or of its process group leaves the ranks training on, publishing checkpoints into a run
  folder that a restarted job also writes. `die_with_launcher()` asks the kernel (prctl PR_SET_PDEATHSIG) to
  SIGKILL this rank when its parent, the launcher, dies. Only for ranks a torchrun agent started: a plain
  `asr-dist train` under `nohup` must outlive its shell.
* Silent waits. Start-up waits on things outside this process: a build lock of DeepSpeed's JIT ops, the
  other ranks at the rendezvous, the first collectives. Each can wait forever when the other side is gone.
  `bounded("what")` runs a block under a watchdog thread that logs what is awaited (and, for the op build,
  who holds the lock) every `warn_every` seconds, and ends the process with exit code `STARTUP_TIMEOUT_EXIT`
  and a message naming the wait after `timeout` seconds: the launcher then stops the other ranks.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator

log = logging.getLogger("asr_dist.startup")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STARTUP_TIMEOUT_EXIT = 3  # a start-up wait ran out (distinct from 1 = error, 2 = bad config, 75 = requeue)
DEFAULT_TIMEOUT_S = float(os.environ.get("ASR_DIST_STARTUP_TIMEOUT", 900))  # op build + rendezvous on a busy cluster


def launched_by_torchrun() -> bool:
    """True in a rank that torchrun's elastic agent (also behind `accelerate launch`) started as its child."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def die_with_launcher(expected_parent: int | None = None) -> bool:
    """Have the kernel SIGKILL this process when its parent dies; True when armed.

    Linux only (elsewhere a no-op returning False). If the parent already died before the request was made
    (we were re-parented to init or a subreaper), exit at once: the launcher is gone, nobody would stop us.
    The kernel ties the request to the parent *thread* that forked us; torchrun's agent starts its workers
    from its main thread, which lives as long as the launcher.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = expected_parent if expected_parent is not None else os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this rank may outlive its launcher",
                        ctypes.get_errno())
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the launcher died between our start and the prctl call
        print(f"[asr_dist] launcher (pid {parent}) is gone; rank {os.environ.get('RANK', '?')} exits",
              file=sys.stderr, flush=True)
        os._exit(1)
    return True


class _Watchdog:
    """A daemon thread that reports a wait every `warn_every` s and ends the process after `timeout` s."""

    def __init__(self, what: str, timeout: float, warn_every: float, detail: Callable[[], str] | None,
                 on_tick: Callable[[], None] | None):
        self.what, self.timeout, self.warn_every = what, timeout, warn_every
        self.detail, self.on_tick = detail, on_tick
        self.done = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._watch, name=f"watchdog: {what}", daemon=True)

    def _describe(self) -> str:
        try:
            extra = self.detail() if self.detail else ""
        except Exception as error:  # a report must never kill the process it reports on
            extra = f"(no detail: {error})"
        return f"{self.what}{f'; {extra}' if extra else ''}"

    def _watch(self) -> None:
        rank = os.environ.get("RANK", "0")
        next_report = self.warn_every
        while not self.done.wait(min(1.0, self.warn_every)):
            waited = time.monotonic() - self.started
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception as error:
                    log.warning("start-up watchdog: %s", error)
            if waited >= self.timeout:
                print(f"[asr_dist] rank {rank}: gave up after {waited:.0f} s waiting for {self._describe()} "
                      f"(limit ASR_DIST_STARTUP_TIMEOUT={self.timeout:.0f} s); exiting with code "
                      f"{STARTUP_TIMEOUT_EXIT}", file=sys.stderr, flush=True)
                os._exit(STARTUP_TIMEOUT_EXIT)
            if waited >= next_report:
                print(f"[asr_dist] rank {rank}: still waiting for {self._describe()} ({waited:.0f} s of at most "
                      f"{self.timeout:.0f} s)", file=sys.stderr, flush=True)
                next_report += self.warn_every


@contextlib.contextmanager
def bounded(what: str, timeout: float | None = None, warn_every: float = 30.0,
            detail: Callable[[], str] | None = None, on_tick: Callable[[], None] | None = None) -> Iterator[None]:
    """Run the block under a watchdog: report `what` (plus `detail()`) while it lasts, exit after `timeout`.

    `on_tick` runs about once a second in the watchdog thread (e.g. clearing a build lock whose owner died
    while we wait on it).
    """
    dog = _Watchdog(what, DEFAULT_TIMEOUT_S if timeout is None else timeout, warn_every, detail, on_tick)
    dog.thread.start()
    try:
        yield
    finally:
        dog.done.set()
