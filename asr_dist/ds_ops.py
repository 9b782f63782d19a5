"""DeepSpeed's JIT-built ops: one build folder inside the venv, stale build locks cleared, a bounded load.

On a machine without CUDA, DeepSpeed compiles its shared-memory collective op (`deepspeed_shm_comm`) with
torch.utils.cpp_extension the first time a process group starts, and on GPUs it JIT-builds its other ops the
same way. torch guards every build folder with a `lock` file (torch.utils.file_baton.FileBaton): the process
that creates it (O_CREAT|O_EXCL) keeps it open while it checks or builds, then closes and deletes it; every
other process polls until the file is gone, forever. A process killed during the build leaves the file behind
and every later DeepSpeed start waits on it silently (DeepSpeed's "hangs at loading extension module").

What we do about it:

* `use_venv_extensions_dir()`: the build folder is `<venv>/torch_extensions` (TORCH_EXTENSIONS_DIR, unless
  the user set one), so no other install or Python shares it, and `make venv` builds the op there at install
  time (`python -m asr_dist._warm_ops`). It must run before DeepSpeed loads an op; `prepare_ops()` does it.
* `clear_stale_locks()`: a lock whose owner is gone is deleted, with a log line naming it. The owner holds the
  lock open, so on a local file system "gone" is certain: no process on this machine has the file open, and
  still none after a short pause (a release closes and deletes within microseconds). On a network file system
  an owner may live on another machine, so there the lock must also be older than `NETWORK_FS_STALE_S` with
  nothing written in its folder for as long; younger ones are reported with the path to delete.
* `load_shm_op()`: loads the op before DeepSpeed does, under `startup.bounded`, which names the lock and its
  holders while it waits and keeps clearing the lock if its owner dies meanwhile.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from asr_dist.startup import bounded

log = logging.getLogger("asr_dist.ds_ops")

NETWORK_FS_STALE_S = 300.0
_NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "fuse.glusterfs", "glusterfs",
               "ceph", "fuse.ceph-fuse", "9p", "fuse.sshfs", "afs", "panfs", "wekafs", "orangefs"}


def venv_extensions_dir() -> Path | None:
    """`<venv>/torch_extensions` when running inside a virtual environment, else None."""
    if sys.prefix == getattr(sys, "base_prefix", sys.prefix):
        return None
    return Path(sys.prefix) / "torch_extensions"


def use_venv_extensions_dir() -> Path:
    """Point TORCH_EXTENSIONS_DIR at the venv's build folder (a user's own setting wins); returns the folder."""
    if not os.environ.get("TORCH_EXTENSIONS_DIR"):
        folder = venv_extensions_dir()
        if folder is not None:
            os.environ["TORCH_EXTENSIONS_DIR"] = str(folder)
    return extensions_root()


def extensions_root() -> Path:
    """The folder torch.utils.cpp_extension builds into now (its own rule, without importing torch)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch_extensions"


def build_locks(root: Path | None = None) -> list[Path]:
    """Every build lock under the extensions folder: ROOT/<op>/lock, or ROOT/py311_cpu/<op>/lock by default."""
    root = root or extensions_root()
    if not root.is_dir():
        return []
    return sorted({*root.glob("*/lock"), *root.glob("*/*/lock")})


def lock_holders(lock: Path) -> list[int]:
    """Pids of the processes on this machine that have `lock` open (torch's owner keeps it open)."""
    try:
        target = lock.stat()
    except FileNotFoundError:
        return []
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                try:
                    st = fd.stat()  # follows the link to the open file
                except OSError:
                    continue
                if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
                    holders.append(int(proc.name))
                    break
        except OSError:  # the process ended, or belongs to another user
            continue
    return holders


def _fs_type(path: Path) -> str:
    """The file system type of the mount holding `path` (from /proc/mounts), '' when unknown."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    path = path.resolve()
    best, fs = "", ""
    for fields in mounts:
        if len(fields) >= 3:
            point = fields[1].replace("\\040", " ")
            if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best, fs = point, fields[2]
    return fs


def _newest_change(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.iterdir() if p.exists()), default=0.0)


def is_stale(lock: Path, pause: float = 0.2) -> bool:
    """True when the owner of `lock` is gone (see the module docstring for the rule)."""
    try:
        before = lock.stat()
    except FileNotFoundError:
        return False
    if lock_holders(lock):
        return False
    if _fs_type(lock.parent) in _NETWORK_FS:  # the owner may be on another machine
        quiet_for = time.time() - max(before.st_mtime, _newest_change(lock.parent))
        if quiet_for < NETWORK_FS_STALE_S:
            return False
    time.sleep(pause)  # an owner releasing right now closes and deletes within microseconds
    try:
        after = lock.stat()
    except FileNotFoundError:
        return False
    return (after.st_ino, after.st_dev) == (before.st_ino, before.st_dev) and not lock_holders(lock)


def clear_stale_locks(root: Path | None = None) -> list[Path]:
    """Delete the build locks whose owner is gone; returns them. Locks still held are left alone."""
    cleared = []
    for lock in build_locks(root):
        if is_stale(lock):
            try:
                lock.unlink()
            except FileNotFoundError:
                continue
            except OSError as error:
                log.error("stale DeepSpeed/torch build lock %s cannot be deleted (%s): delete it by hand", lock, error)
                continue
            log.warning("deleted the stale build lock %s (the process that created it is gone)", lock)
            cleared.append(lock)
    return cleared


def describe_locks(root: Path | None = None) -> str:
    """One line for a start-up report: each lock with its holders, or the path to delete."""
    parts = []
    for lock in build_locks(root):
        holders = lock_holders(lock)
        holders = ["this process (building)" if pid == os.getpid() else f"pid {pid}" for pid in holders]
        parts.append(f"build lock {lock} held by {', '.join(holders)}" if holders else
                     f"build lock {lock} has no holder on this machine (if no other machine builds into this "
                     f"folder, delete it: rm {lock})")
    return "; ".join(parts)


def prepare_ops(deepspeed: bool, timeout: float | None = None) -> None:
    """Before DeepSpeed starts: the venv's build folder, no stale locks, and (for DeepSpeed) the CPU op loaded."""
    root = use_venv_extensions_dir()
    clear_stale_locks(root)
    if deepspeed:
        load_shm_op(timeout)


def load_shm_op(timeout: float | None = None):
    """DeepSpeed's CPU collective op (built if needed), or None where the accelerator does not use it.

    DeepSpeed keeps loaded ops in a class-level cache, so its own `build_shm_op()` at process-group start
    finds this one and neither builds nor locks again.
    """
    root = extensions_root()
    with bounded(f"DeepSpeed's CPU op deepspeed_shm_comm to build or load in {root}", timeout,
                 detail=lambda: describe_locks(root), on_tick=lambda: clear_stale_locks(root)):
        from deepspeed.comm.torch import build_shm_op

        # If a lock's owner dies while we wait, on_tick deletes the lock and torch goes on to load what the
        # owner left: a complete library, or an import error that names the op (then the next start builds).
        return build_shm_op()
