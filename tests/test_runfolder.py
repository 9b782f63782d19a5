"""One run folder, one job, and a history that is never lost: a second job is refused with the holder's host
and pid; a refused resume writes nothing; a fresh start in a folder holding a run is refused unless asked for,
and then the old run is moved aside whole."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from asr_dist.config import ConfigError
from asr_dist.runfolder import RunFolder, RunFolderBusy

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "train" / "tiny.yaml")


def hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; sys.path.insert(0, %r); from asr_dist.runfolder import RunFolder; "
            "f = RunFolder(%r); f.lock(); print('locked', flush=True); time.sleep(120)") % (str(REPO), str(folder))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_job_is_refused_with_the_holders_pid_and_the_lock_dies_with_its_process(tmp_path):
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(RunFolderBusy, match=f"pid {holder.pid} on "):
            RunFolder(tmp_path / "run").lock()
    finally:
        holder.kill()  # kill -9: no clean-up code runs
        holder.wait()
    folder = RunFolder(tmp_path / "run")
    folder.lock()  # the kernel released the dead holder's lock
    folder.unlock()


def test_the_trainer_refuses_a_busy_run_folder_before_any_work(tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        proc = subprocess.run([sys.executable, "-m", "asr_dist.train", "--config", TINY,
                               f"data.train_shards={tiny_shards.train}", f"train.run_dir={run_dir}"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"in use by pid {holder.pid}" in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]


def make_old_run(path: Path) -> None:
    (path / "checkpoints" / "step-30").mkdir(parents=True)
    (path / "checkpoints" / "step-30" / "COMPLETE").write_text("")
    (path / "checkpoints" / "latest").write_text("step-30")
    (path / "metrics.jsonl").write_text('{"kind": "train", "step": 30}\n')
    (path / "eval.json").write_text("{}")


def test_a_fresh_start_in_a_used_folder_is_refused_or_moves_the_old_run_aside(tmp_path):
    from asr_dist.checkpoint import latest_step

    run = tmp_path / "run"
    make_old_run(run)
    assert latest_step(run) == 30, "the fake run must look like a real one"
    folder = RunFolder(run)
    folder.lock()
    with pytest.raises(ConfigError, match="train.if_run_exists=move_aside"):
        folder.prepare_fresh_start("refuse")
    assert (run / "metrics.jsonl").read_text().startswith('{"kind": "train", "step": 30}')  # untouched
    aside = folder.prepare_fresh_start("move_aside")
    assert aside.name.startswith("run.old-") and latest_step(aside) == 30
    assert (aside / "metrics.jsonl").is_file() and (aside / "eval.json").is_file()
    assert [p.name for p in run.iterdir()] == [".lock"]
    folder.unlock()


def test_a_refused_resume_writes_nothing(tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    base = [sys.executable, "-m", "asr_dist.train", "--config", TINY, f"data.train_shards={tiny_shards.train}",
            f"train.run_dir={run_dir}", "train.max_steps=2", "checkpoint.every_steps=2"]
    first = subprocess.run(base, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    time.sleep(0.01)
    refused = subprocess.run([*base, "model.hidden_size=48", "train.max_steps=4"], cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode != 0 and "cannot resume" in refused.stderr, refused.stderr[-3000:]
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after.keys() == before.keys() and all(after[p] == before[p] for p in before)
