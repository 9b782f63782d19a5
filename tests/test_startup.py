"""Start-up without silent hangs or orphans (issue 17, items 7, 8 and 10).

- A build lock left by a killed process is recognised as stale (no process holds it) and deleted; a held one
  is reported with its holder's pid and left alone.
- A start-up wait that never ends is reported by name and ends the process with exit code 3.
- A 2-rank DeepSpeed launch with a stale `lock` in its extensions folder clears it and trains (it used to wait
  forever); the same run shows the DataLoader worker-count warning at most once per rank and torch's
  `lr_scheduler.step()` order warning never.
- `kill -9` of the `accelerate launch` process group at update 3 of a 2-rank run ends both ranks too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _shard_factory import tiny_processor, write_tiny_shards
from asr_dist import ds_ops

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "train" / "tiny.yaml")
ENV = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")


def hold_lock(lock: Path) -> subprocess.Popen:
    """A process that takes `lock` the way torch's FileBaton does (create exclusively, keep it open)."""
    code = (f"import os, time; fd = os.open({str(lock)!r}, os.O_CREAT | os.O_EXCL); print('held', flush=True); "
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def stale_lock(lock: Path) -> None:
    """Leave `lock` behind as a build killed mid-way does: its owner dies with SIGKILL."""
    owner = hold_lock(lock)
    owner.kill()
    owner.wait()
    assert lock.exists()


@pytest.fixture(scope="module")
def synthetic_shards(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("startup_shards")
    train = write_tiny_shards(root / "train", [8, 8, 8, 8], seed=0)
    tiny_processor().save_pretrained(str(train / "processor"))
    dev = write_tiny_shards(root / "dev", [4, 4], seed=1, prefix="dev")
    return train, dev


def test_a_held_lock_is_reported_with_its_holder_and_a_dead_owners_lock_is_deleted(tmp_path):
    root = tmp_path / "extensions"
    (root / "deepspeed_shm_comm").mkdir(parents=True)
    lock = root / "deepspeed_shm_comm" / "lock"
    owner = hold_lock(lock)
    try:
        assert ds_ops.lock_holders(lock) == [owner.pid]
        assert not ds_ops.is_stale(lock)
        assert ds_ops.clear_stale_locks(root) == [] and lock.exists()
        assert f"build lock {lock} held by pid {owner.pid}" in ds_ops.describe_locks(root)
    finally:
        owner.kill()
        owner.wait()
    assert ds_ops.lock_holders(lock) == [] and ds_ops.is_stale(lock)
    assert f"rm {lock}" in ds_ops.describe_locks(root)
    assert ds_ops.clear_stale_locks(root) == [lock] and not lock.exists()


def test_the_default_layout_is_searched_too(tmp_path):
    lock = tmp_path / "py311_cpu" / "fused_adam" / "lock"
    lock.parent.mkdir(parents=True)
    stale_lock(lock)
    assert ds_ops.build_locks(tmp_path) == [lock]
    assert ds_ops.clear_stale_locks(tmp_path) == [lock]


def test_an_endless_start_up_wait_is_named_and_ends_the_process():
    code = ("import time; from asr_dist.startup import bounded\n"
            "with bounded('the never-coming rank 7', timeout=2.5, warn_every=1, detail=lambda: 'port 1234'):\n"
            "    time.sleep(120)\n")
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "still waiting for the never-coming rank 7; port 1234" in done.stderr
    assert "gave up after" in done.stderr and "waiting for the never-coming rank 7" in done.stderr


def launch_cmd(accelerate_config: str, shards: tuple[Path, Path], run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "configs" / "accelerate" / accelerate_config), "-m", "asr_dist.train", "--config", TINY,
            f"data.train_shards={shards[0]}", f"data.eval_shards={shards[1]}", f"train.run_dir={run_dir}",
            *overrides]


@pytest.fixture(scope="module")
def stale_lock_launch(synthetic_shards, tmp_path_factory):
    """A 2-rank ZeRO-2 run whose extensions folder holds a stale lock: (process, lock, log text)."""
    venv_ops = ds_ops.venv_extensions_dir() or ds_ops.extensions_root()
    built = venv_ops / "deepspeed_shm_comm"
    if not (built / "deepspeed_shm_comm.so").exists():  # what `make venv` does; builds once (~1 min)
        subprocess.run([sys.executable, "-m", "asr_dist._warm_ops"], env=ENV, check=True, timeout=900)
    root = tmp_path_factory.mktemp("startup_lock")
    extensions = root / "extensions"
    shutil.copytree(built, extensions / "deepspeed_shm_comm", ignore=shutil.ignore_patterns("lock"))  # keeps mtimes
    lock = extensions / "deepspeed_shm_comm" / "lock"
    stale_lock(lock)
    cmd = launch_cmd("deepspeed_zero2.yaml", synthetic_shards, root / "run", "train.max_steps=4",
                     "data.num_workers=3", "eval.every_steps=2")
    proc = subprocess.run(cmd, cwd=REPO, env=dict(ENV, TORCH_EXTENSIONS_DIR=str(extensions)), capture_output=True,
                          text=True, timeout=600)  # the old behaviour: waits here until the timeout
    return proc, lock, proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_stale_build_lock_does_not_hang_a_deepspeed_launch(stale_lock_launch):
    proc, lock, log = stale_lock_launch
    assert proc.returncode == 0, log[-4000:]
    assert not lock.exists()
    assert f"deleted the stale build lock {lock}" in log
    summary = json.loads((lock.parents[2] / "run" / "summary.json").read_text())
    assert summary["steps"] == 4


@pytest.mark.slow
def test_warnings_show_once_not_per_update(stale_lock_launch):
    _, _, log = stale_lock_launch
    assert log.count("Detected call of `lr_scheduler.step()`") == 0
    # 4 updates, 2 evaluations and an epoch change create several DataLoaders per rank: one warning per rank at most
    assert log.count("This DataLoader will create") <= 2


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has died; only its exit status waits to be collected


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_ranks_die_when_the_launcher_is_killed(synthetic_shards, tmp_path):
    run_dir = tmp_path / "run"
    cmd = launch_cmd("cpu_ddp_2proc.yaml", synthetic_shards, run_dir, "train.max_steps=100000",
                     "eval.every_steps=0", "data.eval_shards=")
    log = open(tmp_path / "launch.log", "w")
    launcher = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ranks: list[int] = []
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and launcher.poll() is None:
            rows = metrics.read_text().splitlines() if metrics.exists() else []
            if sum('"kind": "train"' in r for r in rows) >= 3:
                break
            time.sleep(0.2)
        assert launcher.poll() is None, (tmp_path / "launch.log").read_text()[-3000:]
        ranks = _children(launcher.pid)
        assert len(ranks) == 2, ranks
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's process group; the ranks are in their own
        launcher.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(map(_alive, ranks)):
            time.sleep(0.1)
        assert not any(map(_alive, ranks)), f"ranks {[p for p in ranks if _alive(p)]} outlived their launcher"
    finally:
        for pid in ranks:  # never leave a rank behind, whatever failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_a_missing_rank_ends_the_rendezvous_with_a_message_naming_it(synthetic_shards, tmp_path):
    from _ranks import free_port

    port = free_port()
    env = dict(ENV, RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), ASR_DIST_STARTUP_TIMEOUT="10")  # rank 1 never comes
    cmd = [sys.executable, "-m", "asr_dist.train", "--config", TINY, f"data.train_shards={synthetic_shards[0]}",
           f"train.run_dir={tmp_path / 'run'}"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-3000:]
    assert f"waiting for the rendezvous of 2 ranks at 127.0.0.1:{port}" in done.stderr
