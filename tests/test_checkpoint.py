"""CheckpointManager on one process (in-process Accelerator): publication, retention, resume, refusals, disk full.
Multi-rank behaviour (kill -9, world-size changes) is in test_resume.py."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from asr_dist.checkpoint import COMPLETE, CheckpointError, CheckpointSaveError, read_meta
from asr_dist.config import CheckpointConfig
from ckpt_worker import VOCAB, TinyRun


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def new_run(run_dir: Path, **kw) -> TinyRun:
    AcceleratorState._reset_state(reset_partial_state=True)
    return TinyRun(run_dir, "single", **kw)


def equal_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_saves_are_published_with_marker_and_latest_and_retention_keeps_last_and_best(tmp_path):
    run = new_run(tmp_path, cfg=CheckpointConfig(every_steps=1, keep_last=2, keep_best=True))
    run.train(6)  # the worker's made-up WER is |step - 4|: best at step 4
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-4", "step-5", "step-6"]
    assert (root / "latest").read_text().strip() == "step-6"
    for step in (4, 5, 6):
        folder = root / f"step-{step}"
        assert (folder / COMPLETE).is_file()
        meta = read_meta(folder)
        assert meta["step"] == step and meta["world_size"] == 1 and meta["metrics"] == {"wer": abs(step - 4)}
        assert meta["config"] == {"model": {"hidden": 32}}
        assert json.loads((folder / "hf_config" / "config.json").read_text())["hidden_size"] == 32
        assert json.loads((folder / "processor" / "vocab.json").read_text()) == {t: i for i, t in enumerate(VOCAB)}
    assert run.manager.resolve("auto") == root / "step-6"
    assert run.manager.resolve("none") is None
    assert run.manager.resolve(str(root / "step-4")) == root / "step-4"


def test_resume_continues_bit_for_bit_including_rng_and_extras(tmp_path):
    reference = new_run(tmp_path / "ref", cfg=CheckpointConfig(every_steps=0))
    reference.train(6)  # dropout + SpecAugment masking: the RNG states matter
    expected = reference.weights()

    first = new_run(tmp_path / "run", cfg=CheckpointConfig(every_steps=3))
    first.train(4)  # saves at 3, runs one step past it; that step is lost with the "crash"
    resumed = new_run(tmp_path / "run", cfg=CheckpointConfig(every_steps=3))
    assert resumed.resume("auto") == 3
    assert resumed.loader.batches_consumed == 3
    resumed.train(6)
    assert equal_weights(resumed.weights(), expected)


def test_interrupted_saves_and_broken_pointers_are_never_loaded(tmp_path):
    run = new_run(tmp_path, cfg=CheckpointConfig(every_steps=2, keep_last=3))
    run.train(4)
    root = tmp_path / "checkpoints"
    # What a kill leaves behind: a temp folder with shards but no marker, and (kill during a rename by hand)
    # a step folder without its marker.
    (root / ".tmp-step-6").mkdir()
    (root / ".tmp-step-6" / "model.safetensors").write_bytes(b"partial")
    (root / "step-9").mkdir()
    assert run.manager.resolve("auto") == root / "step-4"
    with pytest.raises(CheckpointError, match="no COMPLETE marker"):
        run.manager.resolve(str(root / "step-9"))
    with pytest.raises(CheckpointError, match="does not exist"):
        run.manager.resolve(str(root / "step-77"))
    (root / "latest").write_text("step-3\n")  # names a folder that is gone: fall back to the newest complete
    assert run.manager.resolve("auto") == root / "step-4"
    run.train(6)
    assert not (root / ".tmp-step-6").exists()  # the next save at that step replaced the leftover
    assert (root / "latest").read_text().strip() == "step-6"


def test_a_changed_model_shape_or_vocabulary_refuses_to_resume(tmp_path):
    run = new_run(tmp_path, cfg=CheckpointConfig(every_steps=2))
    run.train(2)
    wider = new_run(tmp_path, hidden=48)
    with pytest.raises(CheckpointError, match=r"hidden_size: checkpoint 32, this run 48"):
        wider.resume("auto")
    swapped = VOCAB[:5] + ["E", "D", "C", "B", "A"]  # same size, different ids: a silent disaster otherwise
    relabelled = new_run(tmp_path, vocab=swapped)
    with pytest.raises(CheckpointError, match="vocabulary: .*different ids \\['A', 'B', 'D', 'E'\\]"):
        relabelled.resume("auto")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 700 KiB tmpfs: room for one tiny checkpoint (about 420 KiB) but not two. Needs mount rights."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("on_save_error", ["continue", "stop"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_latest(tiny_disk, on_save_error):
    run = new_run(tiny_disk, cfg=CheckpointConfig(every_steps=0, keep_last=1, on_save_error=on_save_error))
    run.train(1)
    assert run.save() == tiny_disk / "checkpoints" / "step-1"
    run.train(2)
    if on_save_error == "stop":
        with pytest.raises(CheckpointSaveError, match="previous checkpoint kept .*step-1"):
            run.save()
    else:
        assert run.save() is None
    # torch.save reports ENOSPC as a RuntimeError from its zip writer, Python's own writes as OSError
    assert isinstance(run.manager.last_save_error, (OSError, RuntimeError))
    root = tiny_disk / "checkpoints"
    assert sorted(os.listdir(root)) == ["latest", "step-1"]  # the partial save is gone, its space freed
    assert (root / "latest").read_text().strip() == "step-1"
    resumed = new_run(tiny_disk)
    assert resumed.resume("auto") == 1


def test_time_based_saves_are_due_after_every_minutes_of_wall_time(tmp_path):
    run = new_run(tmp_path, cfg=CheckpointConfig(every_steps=0, every_minutes=0.01))  # 0.6 s
    assert not run.manager.due(1)
    time.sleep(0.7)
    assert run.manager.due(2)
    run.save()
    assert not run.manager.due(3)  # the clock restarts at each save


@pytest.mark.slow
def test_a_save_failing_on_one_zero_rank_only_is_agreed_by_both_and_training_goes_on(tmp_path):
    """Rank 1 alone cannot write its ZeRO-2 shard of step 4 (inside DeepSpeed's save, before its closing barrier):
    no hang, neither rank publishes, both log the failure, train on and finish; `latest` stays at step 2."""
    from _ranks import logs, run_ranks

    run_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    args = ["tests/ckpt_worker.py", str(run_dir), "--backend", "zero2", "--steps", "5", "--save-every", "2",
            "--keep-last", "5", "--fail-save", "1:4"]
    assert run_ranks(args, 2, log_dir, timeout=240) == [0, 0], logs(log_dir)
    root = run_dir / "checkpoints"
    assert sorted(os.listdir(root)) == ["latest", "step-2"]
    assert (root / "latest").read_text().strip() == "step-2"
    assert (run_dir / "final.pt").is_file()
    assert "No space left on device (injected on this rank)" in (log_dir / "run-rank1.log").read_text()
    assert "checkpoint save failed, previous checkpoint kept" in (log_dir / "run-rank0.log").read_text()
