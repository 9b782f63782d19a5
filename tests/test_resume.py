"""Multi-rank resume with real processes (tests/ckpt_worker.py started per rank like srun does):
kill -9 at random moments and in the middle of saves, and ZeRO checkpoints moving between 2 and 1 ranks."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from asr_dist.checkpoint import COMPLETE, CheckpointError, checkpoint_step, find_checkpoint, read_meta
from asr_dist.export import consolidated_state_dict
from _ranks import kill_all, logs, run_ranks, start_ranks

pytestmark = pytest.mark.slow
WORKER = "tests/ckpt_worker.py"


def published_step(run_dir: Path) -> int:
    """The step `train.resume=auto` would continue from (0 = fresh start)."""
    try:
        return checkpoint_step(find_checkpoint(run_dir))
    except CheckpointError:
        return 0


def start_step(log_dir: Path, tag: str) -> int:
    text = (log_dir / f"{tag}-rank0.log").read_text()
    return int(text.split("starts at step ")[1].split()[0])


def kill_at(procs, run_dir: Path, log_file: Path, mid_save: bool, rng: random.Random, timeout: float = 240,
            marker: str = "starts at step") -> str:
    """SIGKILL every rank either as soon as this run has a save in flight (a fresh .tmp-step-N folder) or at a
    random moment after this run published a checkpoint of its own."""
    root, launched, deadline = run_dir / "checkpoints", time.time(), time.monotonic() + timeout
    first_published = published_step(run_dir)
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if marker in log_file.read_text():
            in_flight = [t for t in root.glob(".tmp-step-*") if _mtime(t) >= launched]
            if mid_save and in_flight:
                kill_all(procs)
                return f"mid-save ({in_flight[0].name})"
            if not mid_save and published_step(run_dir) > first_published:
                time.sleep(rng.uniform(0.0, 1.0))
                kill_all(procs)
                return "random"
        time.sleep(0.002)
    kill_all(procs)
    return "too late (the run ended or timed out)"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def test_kill_9_at_any_moment_then_resume_reaches_the_uninterrupted_parameters(tmp_path):
    seed = int(os.environ.get("KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    common = ["--backend", "ddp", "--steps", "8", "--step-sleep", "0.15"]
    reference = tmp_path / "reference"
    assert run_ranks([WORKER, str(reference), *common, "--save-every", "0"], 2, tmp_path / "logs", "ref") == [0, 0], \
        logs(tmp_path / "logs", "ref")

    run_dir, log_dir, kills = tmp_path / "run", tmp_path / "logs", []
    for attempt, mid_save in enumerate([True, False]):
        expected_start = published_step(run_dir)
        tag = f"kill{attempt}"
        procs = start_ranks([WORKER, str(run_dir), *common, "--save-every", "1"], 2, log_dir, tag)
        how = kill_at(procs, run_dir, log_dir / f"{tag}-rank0.log", mid_save, rng)
        kills.append(how)
        assert start_step(log_dir, tag) == expected_start, f"seed {seed}: {kills}\n{logs(log_dir, tag)}"
        # Whatever the moment, what is published is complete and `latest` names a complete checkpoint.
        root = run_dir / "checkpoints"
        for folder in root.glob("step-*"):
            assert (folder / COMPLETE).is_file(), f"seed {seed}: {folder} published without marker after {how}"
        latest = root / "latest"
        if latest.exists():
            assert (root / latest.read_text().strip() / COMPLETE).is_file(), f"seed {seed}: {kills}"
    print(f"kills (seed {seed}): {kills}")
    assert any(k.startswith("mid-save") for k in kills), kills

    expected_start = published_step(run_dir)
    assert run_ranks([WORKER, str(run_dir), *common, "--save-every", "1"], 2, log_dir, "last") == [0, 0], \
        logs(log_dir, "last")
    assert start_step(log_dir, "last") == expected_start
    final = torch.load(run_dir / "final.pt")["weights"]
    expected = torch.load(reference / "final.pt")["weights"]
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final), f"not bit-identical after kills {kills} (seed {seed})"


@pytest.mark.parametrize("backend", ["zero2", "zero3"])
def test_zero_checkpoints_move_from_2_ranks_to_1_and_back(tmp_path, backend):
    """2 ranks (steps 1-4) -> 1 rank (5-6) -> 2 ranks (7-8), against 2 ranks uninterrupted (1-8).

    Exact: right after each re-sharded load the full fp32 weights and Adam moments equal the checkpoint's.
    Approximate: the final weights, because 1 rank sums the same gradients in another order; measured here
    (tiny model, lr 3e-3): max abs difference about 1e-3, the same as DDP moved from 2 ranks to 1 with
    Accelerate's exact load. No dropout/masking in this test: a rank's RNG cannot move to another world size.
    """
    common = ["--backend", backend, "--no-random-ops", "--save-every", "2", "--keep-last", "4"]
    log_dir = tmp_path / "logs"
    assert run_ranks([WORKER, str(tmp_path / "ref"), *common, "--steps", "8"], 2, log_dir, "ref") == [0, 0], \
        logs(log_dir, "ref")
    run_dir = tmp_path / "run"
    for tag, world, steps in [("first", 2, 4), ("down", 1, 6), ("up", 2, 8)]:
        args = [WORKER, str(run_dir), *common, "--steps", str(steps), "--dump-loaded"]
        source = None if tag == "first" else find_checkpoint(run_dir)
        assert run_ranks(args, world, log_dir, tag) == [0] * world, logs(log_dir, tag)
        if source is None:
            continue
        assert start_step(log_dir, tag) == checkpoint_step(source)
        assert read_meta(source)["world_size"] == 3 - world
        loaded = torch.load(run_dir / "loaded.pt")
        expected = consolidated_state_dict(source, read_meta(source))
        assert all(torch.equal(loaded["weights"][k], expected[k]) for k in expected), f"{tag}: weights changed"
        zero = source / "universal" / "pytorch_model" / "zero"
        for name, moments in loaded["moments"].items():
            for key, value in moments.items():
                saved = torch.load(zero / name / f"{key}.pt", weights_only=False)
                saved = saved["param"] if isinstance(saved, dict) else saved  # ZeRO-2 vs ZeRO-3 layout
                assert torch.equal(value, saved.float().view_as(value)), f"{tag}: {key} of {name} changed"

    final = torch.load(run_dir / "final.pt")["weights"]
    reference = torch.load(tmp_path / "ref" / "final.pt")["weights"]
    diffs = torch.cat([(final[k] - reference[k]).abs().flatten() for k in reference])
    print(f"{backend} 2->1->2 vs uninterrupted: max {diffs.max():.2e}, mean {diffs.mean():.2e}")
    assert diffs.max() < 5e-3 and diffs.mean() < 2e-4


# ----------------------------------------------------------------------------- the real trainer

TINY = "configs/train/tiny.yaml"


def trainer_args(shards, run_dir: Path, *overrides: str) -> list[str]:
    return ["-m", "asr_dist.train", "--config", TINY, f"data.train_shards={shards.train}",
            f"data.eval_shards={shards.dev}", f"train.run_dir={run_dir}", "train.mixed_precision=no", *overrides]


def test_trainer_stops_on_sigusr2_survives_kill_9_mid_save_and_ends_bit_identical(tiny_shards, tmp_path):
    """asr_dist.train on 2 DDP ranks: SIGUSR2 to rank 1 -> both exit 75 with a checkpoint at the agreed step;
    the requeued run is killed with SIGKILL in the middle of a save; the next one finishes. Its exported weights
    and its data position equal those of an uninterrupted run."""
    from safetensors.torch import load_file

    from _ranks import wait_all
    from asr_dist.stop import REQUEUE_EXIT_CODE

    log_dir, steps = tmp_path / "logs", "train.max_steps=10"
    reference = tmp_path / "reference"
    assert run_ranks(trainer_args(tiny_shards, reference, steps, "checkpoint.every_steps=10"), 2, log_dir, "ref") \
        == [0, 0], logs(log_dir, "ref")

    run_dir = tmp_path / "run"
    args = trainer_args(tiny_shards, run_dir, steps, "checkpoint.every_steps=1", "checkpoint.keep_last=2")
    procs = start_ranks(args, 2, log_dir, "stop")
    deadline = time.monotonic() + 240
    while published_step(run_dir) < 2 and time.monotonic() < deadline and procs[1].poll() is None:
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGUSR2)
    assert wait_all(procs, 240) == [REQUEUE_EXIT_CODE] * 2, logs(log_dir, "stop")
    stopped_at = published_step(run_dir)
    assert 2 <= stopped_at < 10
    assert "SIGUSR2 received on rank 1" in (log_dir / "stop-rank0.log").read_text()

    procs = start_ranks(args, 2, log_dir, "kill")
    how = kill_at(procs, run_dir, log_dir / "kill-rank0.log", mid_save=True, rng=random.Random(0),
                  marker=f"resumed from {run_dir / 'checkpoints' / f'step-{stopped_at}'}")
    assert how.startswith("mid-save"), how
    resumed_from = published_step(run_dir)

    assert run_ranks(args, 2, log_dir, "last") == [0, 0], logs(log_dir, "last")
    assert f"resumed from {run_dir / 'checkpoints' / f'step-{resumed_from}'}" in (log_dir / "last-rank0.log").read_text()
    final, expected = load_file(run_dir / "export" / "model.safetensors"), load_file(reference / "export" / "model.safetensors")
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)
    for rank in (0, 1):  # the same samples were consumed: identical loader position and counters
        a = torch.load(run_dir / "checkpoints" / "step-10" / "extra_state" / f"rank-{rank}.pt", weights_only=False)
        b = torch.load(reference / "checkpoints" / "step-10" / "extra_state" / f"rank-{rank}.pt", weights_only=False)
        assert a == b


def test_trainer_zero2_checkpoint_of_2_ranks_continues_on_1_rank_at_the_same_data_position(tiny_shards, tmp_path):
    """asr_dist.train: 2 ranks under ZeRO-2 save at step 2; 1 rank resumes to step 4. The batches the 1-rank run
    trained on are exactly those the data loader gives after the saved position (re-split for 1 rank)."""
    from asr_dist.config import load_config
    from asr_dist.data.loader import build_train_loader
    from asr_dist.text import load_processor

    log_dir, run_dir = tmp_path / "logs", tmp_path / "run"
    overrides = ["train.deepspeed_config=configs/deepspeed/zero2.json", "checkpoint.every_steps=2",
                 "checkpoint.keep_last=3"]
    assert run_ranks(trainer_args(tiny_shards, run_dir, "train.max_steps=2", *overrides), 2, log_dir, "two") \
        == [0, 0], logs(log_dir, "two")
    assert run_ranks(trainer_args(tiny_shards, run_dir, "train.max_steps=4", *overrides), 1, log_dir, "one") \
        == [0], logs(log_dir, "one")
    assert f"resumed from {run_dir / 'checkpoints' / 'step-2'}" in (log_dir / "one-rank0.log").read_text()
    saved, final = (run_dir / "checkpoints" / "step-2", run_dir / "checkpoints" / "step-4")
    assert read_meta(saved)["world_size"] == 2 and read_meta(final)["world_size"] == 1

    before = torch.load(saved / "extra_state" / "rank-0.pt", weights_only=False)
    after = torch.load(final / "extra_state" / "rank-0.pt", weights_only=False)
    cfg = load_config(TINY, trainer_args(tiny_shards, run_dir)[4:])
    loader = build_train_loader(cfg.data, load_processor(tiny_shards.processor), seed=cfg.train.seed, rank=0,
                                world_size=1, grad_accum=1)
    loader.load_state_dict(before["loader"])
    batches = iter(loader)
    samples = sum(len(next(batches)["keys"]) for _ in range(2))
    assert after["loader"] == loader.state_dict()
    assert after["trainer"]["step"] == 4
    assert after["trainer"]["samples_seen"] == before["trainer"]["samples_seen"] + samples


@pytest.mark.slow
def test_trainer_killed_10_times_with_dropout_specaugment_and_augmentation_ends_bit_identical(tiny_shards, tmp_path):
    """The real trainer on 2 DDP ranks with every random stream on (dropout, SpecAugment, noise/gain/speed
    augmentation, DataLoader workers): kill -9 at 10 random moments, mid-save included; the final weights equal an
    uninterrupted run's bit for bit (every random stream is restored, none shifted by a resume)."""
    from safetensors.torch import load_file

    seed = int(os.environ.get("KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    randomness = ["model.hidden_dropout=0.1", "model.mask_time_prob=0.05", "model.mask_time_length=2",
                  "data.augment.enabled=true", "data.augment.noise_prob=0.5", "data.augment.gain_db=[-3,3]",
                  "data.augment.speed_factors=[0.9,1.0,1.1]", "data.max_duration=7", "data.num_workers=2", "train.max_steps=100",
                  "data.eval_shards="]
    log_dir = tmp_path / "logs"
    reference = tmp_path / "reference"
    assert run_ranks(trainer_args(tiny_shards, reference, *randomness, "checkpoint.every_steps=0"), 2, log_dir,
                     "ref") == [0, 0], logs(log_dir, "ref")
    run_dir, kills = tmp_path / "run", []
    args = trainer_args(tiny_shards, run_dir, *randomness, "checkpoint.every_steps=1", "checkpoint.keep_last=2")
    for attempt in range(10):
        tag = f"kill{attempt}"
        procs = start_ranks(args, 2, log_dir, tag)
        how = kill_at(procs, run_dir, log_dir / f"{tag}-rank0.log", mid_save=attempt % 3 == 0, rng=rng,
                      marker="updates (")
        kills.append(how)
        if how.startswith("too late"):
            break
    print(f"kills (seed {seed}): {kills}")
    assert sum(not k.startswith("too late") for k in kills) >= 8 and any(k.startswith("mid-save") for k in kills), kills
    assert run_ranks(args, 2, log_dir, "last") == [0, 0], logs(log_dir, "last")
    final, expected = load_file(run_dir / "export" / "model.safetensors"), load_file(reference / "export" / "model.safetensors")
    different = [k for k in final if not torch.equal(final[k], expected[k])]
    assert final.keys() == expected.keys() and not different, f"after kills {kills} (seed {seed}): {different}"


@pytest.mark.slow
def test_learning_rate_is_a_pure_function_of_the_update_across_a_2_to_1_rank_resume(tiny_shards, tmp_path):
    """max_epochs binding, exponential decay per epoch: the budget (total updates, updates per epoch) is fixed when
    the run starts and saved, so a run stopped on 2 ranks and resumed on 1 (where an epoch has twice the updates)
    uses the uninterrupted run's learning rate at every update, and stops at the same total."""
    log_dir = tmp_path / "logs"
    schedule = ["train.max_steps=100000", "train.max_epochs=2", "schedule.name=exponential",
                "schedule.decay_per=epoch", "schedule.gamma=0.5", "schedule.warmup_steps=0", "train.log_every=1",
                "data.eval_shards="]

    def lrs(run_dir: Path) -> dict[int, float]:
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {r["step"]: r["lr/head"] for r in rows if r["kind"] == "train"}

    reference = tmp_path / "reference"
    assert run_ranks(trainer_args(tiny_shards, reference, *schedule, "checkpoint.every_steps=0"), 2, log_dir,
                     "ref") == [0, 0], logs(log_dir, "ref")
    expected = lrs(reference)
    total = max(expected)
    assert len(set(expected.values())) >= 2, expected  # the decay happened within the run

    run_dir = tmp_path / "run"
    stop = max(total // 2 - 1, 1)  # inside the first epoch
    assert run_ranks(trainer_args(tiny_shards, run_dir, *schedule, f"checkpoint.every_steps={stop}",
                                  f"train.max_steps={stop}"), 2, log_dir, "two") == [0, 0], logs(log_dir, "two")
    assert run_ranks(trainer_args(tiny_shards, run_dir, *schedule, f"checkpoint.every_steps={stop}"), 1, log_dir,
                     "one") == [0], logs(log_dir, "one")
    got = lrs(run_dir)
    assert max(got) == total
    assert got == pytest.approx(expected, rel=1e-12)
