"""The streaming loaders over real shards: order, resume, equal steps, eval coverage, bad data."""

from __future__ import annotations

import logging
import shutil
import tarfile

import numpy as np
import pytest
import torch

from _shard_factory import tiny_processor, write_tiny_shards
from asr_dist.config import DataConfig
from asr_dist.data.index import load_index
from asr_dist.audio import read_audio as decode_flac
from asr_dist.data.loader import ShardReadError, build_eval_loader, build_train_loader
from asr_dist.text import load_processor

SHARD_SIZES = [5, 3, 7, 1, 4, 6, 2, 5, 3]  # 36 samples in 9 uneven shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("shards") / "train", SHARD_SIZES)


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def data_cfg(folder, **kw) -> DataConfig:
    base = dict(train_shards=str(folder), eval_shards=str(folder), max_batch_seconds=1.5, max_batch_samples=4,
                max_duration=1.5, bucket_shards=3, megabatch_factor=2, num_workers=2)
    return DataConfig(**{**base, **kw})


def all_keys(folder):
    return sorted(s.key for shard in load_index(str(folder)).shards for s in shard.samples)


def take(loader, n=None):
    keys = []
    for i, batch in enumerate(loader):
        keys.append(batch["keys"])
        if n is not None and i + 1 == n:
            break
    return keys


def loaders(cfg, processor, world_size, grad_accum=1, seed=3):
    return [build_train_loader(cfg, processor, seed=seed, rank=r, world_size=world_size, grad_accum=grad_accum)
            for r in range(world_size)]


@pytest.mark.parametrize("num_workers", [0, 1, 3])
def test_batches_arrive_in_plan_order_whatever_the_worker_count(shards, processor, num_workers):
    (loader,) = loaders(data_cfg(shards, num_workers=num_workers), processor, 1)
    planned = [b.keys for b in loader.remaining()]
    assert take(loader) == planned
    assert sorted(k for b in planned for k in b) == all_keys(shards)


@pytest.mark.parametrize("world_size,grad_accum,num_workers", [(2, 1, 2), (3, 2, 3), (4, 1, 0)])
def test_equal_steps_on_every_rank_and_every_sample_once(shards, processor, world_size, grad_accum, num_workers):
    cfg = data_cfg(shards, num_workers=num_workers)
    per_rank = [take(loader) for loader in loaders(cfg, processor, world_size, grad_accum)]
    counts = {len(k) for k in per_rank}
    assert len(counts) == 1 and counts.pop() % grad_accum == 0
    assert sorted(k for rank in per_rank for b in rank for k in b) == all_keys(shards)


def test_resume_gives_the_uninterrupted_key_sequence(shards, processor):
    cfg = data_cfg(shards)
    uninterrupted = [take(loader) for loader in loaders(cfg, processor, 2)]
    first = loaders(cfg, processor, 2)
    head = [take(loader, 3) for loader in first]
    states = [loader.state_dict() for loader in first]
    assert states[0] == states[1] and states[0]["batches_consumed"] == 6
    second = loaders(cfg, processor, 2)
    for loader, state in zip(second, states):
        loader.load_state_dict(state)
    tail = [take(loader) for loader in second]
    assert [h + t for h, t in zip(head, tail)] == uninterrupted
    assert all(loader.epoch == 1 for loader in second)  # exhausted: the position moved to the next epoch
    assert second[0].state_dict()["batches_consumed"] == 0


def test_resume_from_two_ranks_on_one_finishes_the_epoch_exactly_once(shards, processor):
    cfg = data_cfg(shards)
    two = loaders(cfg, processor, 2, grad_accum=2)
    head = [k for loader in two for b in take(loader, 2) for k in b]
    (one,) = loaders(cfg, processor, 1, grad_accum=1)
    one.load_state_dict(two[0].state_dict())
    assert one.epoch == 0
    tail = [k for b in take(one) for k in b]
    assert sorted(head + tail) == all_keys(shards)
    # and the next epoch is a plain world-size-1 epoch
    (fresh,) = loaders(cfg, processor, 1)
    assert [b.keys for b in one.epoch_plan(1, 1, 1)] == [b.keys for b in fresh.epoch_plan(1, 1, 1)]
    assert one.state_dict()["plan_world_size"] == 1 and one.epoch == 1


def test_resume_reads_only_the_current_window(shards, processor, tmp_path):
    """Late in the epoch, the shards of earlier windows are not touched (here: they no longer exist)."""
    folder = tmp_path / "copy"
    shutil.copytree(shards, folder)
    cfg = data_cfg(folder, bucket_shards=3)
    (loader,) = loaders(cfg, processor, 1)
    plan = loader.remaining()
    last_window = plan[-1].window
    at = next(i for i, b in enumerate(plan) if b.window == last_window)
    state = {**loader.state_dict(), "batches_consumed": at}
    needed = {loader.index.shards[s.shard].name for b in plan[at:] for s in b.samples}
    (resumed,) = loaders(cfg, processor, 1)
    resumed.load_state_dict(state)
    for shard in loader.index.shards:
        if shard.name not in needed:
            (folder / shard.name).unlink()
    assert take(resumed) == [b.keys for b in plan[at:]]


def test_state_from_other_data_is_refused(shards, processor):
    (loader,) = loaders(data_cfg(shards), processor, 1)
    (other,) = loaders(data_cfg(shards, max_batch_seconds=3.0), processor, 1)
    with pytest.raises(ValueError, match="exact resume is impossible"):
        other.load_state_dict(loader.state_dict())


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_loader_sees_every_sample_exactly_once(shards, processor, world_size):
    cfg = data_cfg(shards)
    evals = [build_eval_loader(cfg, processor, rank=r, world_size=world_size) for r in range(world_size)]
    keys = [k for loader in evals for b in take(loader) for k in b]
    assert sorted(keys) == all_keys(shards)  # no sample missing, none duplicated
    assert len({len(loader) for loader in evals}) == 1


def corrupt_member(folder, shard_number: int, sample_number: int) -> tuple[str, str]:
    """Overwrites one KEY.flac member with garbage bytes; returns (shard name, key)."""
    import io
    shard = load_index(str(folder)).shards[shard_number]
    victim = shard.samples[sample_number].key
    path = folder / shard.name
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for m, data in members:
            if m.name == f"{victim}.flac":
                data = b"fLaC garbage, not audio" * 10
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return shard.name, victim


def test_corrupt_member_is_skipped_counted_and_logged(shards, processor, tmp_path, caplog):
    folder = tmp_path / "corrupt"
    shutil.copytree(shards, folder)
    shard_name, victim = corrupt_member(folder, 2, 1)
    (loader,) = loaders(data_cfg(folder), processor, 1)
    with caplog.at_level(logging.WARNING, logger="asr_dist.data.loader"):
        keys = [k for b in take(loader) for k in b]
    assert sorted(keys) == sorted(set(all_keys(folder)) - {victim})
    assert loader.metrics()["data/skipped_samples"] == 1.0
    assert any(victim in r.getMessage() and shard_name in r.getMessage() for r in caplog.records)


def test_a_batch_of_only_corrupt_members_keeps_its_step(shards, processor, tmp_path):
    folder = tmp_path / "corrupt1"
    shutil.copytree(shards, folder)
    _, victim = corrupt_member(folder, 0, 0)
    (loader,) = loaders(data_cfg(folder, max_batch_samples=1), processor, 1)
    planned = len(loader)
    batches = list(loader)
    assert len(batches) == planned == len(all_keys(folder))
    assert sorted(k for b in batches for k in b["keys"]) == sorted(set(all_keys(folder)) - {victim})
    assert sum(1 for b in batches if not b["keys"]) == 1


def test_missing_shard_is_an_error_naming_it_unless_tolerated(shards, processor, tmp_path, caplog):
    folder = tmp_path / "missing"
    shutil.copytree(shards, folder)
    gone = load_index(str(folder)).shards[4]
    (folder / gone.name).unlink()
    with pytest.raises(ShardReadError, match=gone.name):
        loaders(data_cfg(folder), processor, 1)
    with caplog.at_level(logging.WARNING, logger="asr_dist.data.loader"):
        (loader,) = loaders(data_cfg(folder, tolerate_missing_shards=True), processor, 1)
    assert any(gone.name in r.getMessage() for r in caplog.records)
    keys = [k for b in take(loader) for k in b]
    assert sorted(keys) == sorted(set(all_keys(shards)) - {s.key for s in gone.samples})


def test_shard_vanishing_mid_run_is_an_error_naming_it(shards, processor, tmp_path):
    folder = tmp_path / "vanish"
    shutil.copytree(shards, folder)
    (loader,) = loaders(data_cfg(folder, num_workers=0), processor, 1)
    name = loader.index.shards[loader.remaining()[-1].samples[0].shard].name
    (folder / name).unlink()
    with pytest.raises(ShardReadError, match=name):
        take(loader)


def test_pipe_urls_read_like_local_files(shards, processor):
    pattern = f"pipe:cat {shards}/train-{{000000..{len(SHARD_SIZES) - 1:06d}}}.tar"
    cfg = data_cfg(shards, train_shards=pattern, train_index=str(shards / "index.json"))
    (piped,) = loaders(cfg, processor, 1)
    (local,) = loaders(data_cfg(shards), processor, 1)
    a, b = list(piped), list(local)
    assert [x["keys"] for x in a] == [x["keys"] for x in b]
    assert all(torch.equal(x["input_values"], y["input_values"]) for x, y in zip(a, b))


def test_batch_contract_on_real_speech(tiny_shards):
    """Normalized like Wav2Vec2FeatureExtractor, zero padded, labels spell the transcripts, -100 padding."""
    processor = load_processor(tiny_shards.processor)
    cfg = DataConfig(train_shards=str(tiny_shards.train), max_batch_seconds=12.0, max_batch_samples=4,
                     max_duration=6.0, num_workers=1)
    (loader,) = loaders(cfg, processor, 1)
    index = {s.key: s for shard in loader.index.shards for s in shard.samples}
    seen = 0
    for batch in loader:
        B, T = batch["input_values"].shape
        assert batch["input_values"].dtype == torch.float32 and batch["attention_mask"].dtype == torch.int64
        assert batch["labels"].dtype == torch.int64 and batch["padded_seconds"] == B * T / 16000
        lengths = batch["attention_mask"].sum(1)
        assert abs(batch["audio_seconds"] - sum(index[k].duration for k in batch["keys"])) < 1e-6
        for row, key in enumerate(batch["keys"]):
            n = int(lengths[row])
            assert n == round(index[key].duration * 16000)
            x = batch["input_values"][row]
            assert torch.all(x[n:] == 0)
            assert abs(float(x[:n].mean())) < 1e-3 and abs(float(x[:n].std()) - 1) < 1e-2
            label = batch["labels"][row]
            ids = label[label != -100].tolist()
            assert processor.tokenizer.decode(ids, group_tokens=False) == index[key].text
            assert batch["meta"][row]["text"] == index[key].text and batch["meta"][row]["shard"].endswith(".tar")
        seen += B
    assert seen == len(index)


def test_padding_to_a_multiple_only_adds_zeros(tiny_shards):
    """data.pad_to_multiple_seconds: lengths become multiples (shapes repeat); the real samples are untouched."""
    processor = load_processor(tiny_shards.processor)
    base = dict(train_shards=str(tiny_shards.train), max_batch_seconds=12.0, max_batch_samples=4, max_duration=6.0,
                num_workers=0)
    (plain,) = loaders(DataConfig(**base), processor, 1)
    (rounded,) = loaders(DataConfig(**base, pad_to_multiple_seconds=0.25), processor, 1)
    batches = 0
    for a, b in zip(plain, rounded, strict=True):
        assert a["keys"] == b["keys"]
        T, R = a["input_values"].shape[1], b["input_values"].shape[1]
        assert R % 4000 == 0 and T <= R < T + 4000
        assert torch.equal(b["input_values"][:, :T], a["input_values"]) and torch.all(b["input_values"][:, T:] == 0)
        assert torch.equal(b["attention_mask"][:, :T], a["attention_mask"]) and b["attention_mask"][:, T:].sum() == 0
        assert torch.equal(b["labels"], a["labels"]) and b["audio_seconds"] == a["audio_seconds"]
        assert b["padded_seconds"] == b["input_values"].numel() / 16000
        batches += 1
    assert batches > 1


def test_decode_guards_rate_and_channels():
    from _shard_factory import flac_bytes
    import io
    import soundfile
    stereo = np.stack([np.full(8000, 0.25), np.full(8000, 0.75)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    soundfile.write(buf, stereo, 8000, format="FLAC", subtype="PCM_16")
    mono16k = decode_flac(buf.getvalue(), 16000)
    assert mono16k.ndim == 1 and abs(len(mono16k) - 16000) <= 1
    assert abs(float(np.median(mono16k)) - 0.5) < 1e-3
    assert len(decode_flac(flac_bytes(np.zeros(1600, np.float32)), 16000)) == 1600


def test_failing_pipe_shard_is_an_error_naming_it_or_skipped_when_tolerated(shards, processor, caplog):
    urls = [f"pipe:cat {shards}/train-{i:06d}.tar" for i in range(len(SHARD_SIZES))]
    urls[2] = f"pipe:cat {shards}/gone/train-000002.tar"
    cfg = data_cfg(shards, train_shards="::".join(urls), train_index=str(shards / "index.json"), num_workers=1)
    (loader,) = loaders(cfg, processor, 1)
    with pytest.raises(Exception, match="gone/train-000002.tar"):
        take(loader)
    cfg.tolerate_missing_shards = True
    (loader,) = loaders(cfg, processor, 1)
    lost = {s.key for s in loader.index.shards[2].samples}
    planned = len(loader)
    with caplog.at_level(logging.WARNING, logger="asr_dist.data.loader"):
        batches = list(loader)
    keys = [k for b in batches for k in b["keys"]]
    assert len(batches) == planned  # lost samples do not change the number of steps
    assert sorted(keys) == sorted(set(all_keys(shards)) - lost)
    assert loader.metrics()["data/skipped_samples"] == len(lost)
    assert any("gone/train-000002.tar" in r.getMessage() for r in caplog.records)
    for b in batches:
        if not b["keys"]:  # a planned batch made only of lost samples: silence with no targets, same step count
            assert b["input_values"].shape[0] == 1 and (b["labels"] != -100).sum() == 0


def test_silence_stand_in_batch_trains_without_targets():
    """The stand-in for a fully lost batch (tolerated) goes through Wav2Vec2ForCTC with a finite loss."""
    from _tiny_model import tiny_model_and_processor
    from asr_dist.data.loader import silence_batch

    model, processor = tiny_model_and_processor()
    batch = silence_batch(processor, 16000)
    assert batch["keys"] == [] and batch["audio_seconds"] == 0.0 and (batch["labels"] != -100).sum() == 0
    out = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert torch.isfinite(out.loss)


def test_pipe_command_survives_slurms_stop_signal():
    """Slurm signals every process of the job step: a `pipe:` shard command must outlive SIGUSR2/SIGTERM
    so that the trainer's graceful stop is not turned into a shard-read crash."""
    import os
    import signal

    from webdataset.gopen import gopen

    from asr_dist.data.loader import _open_pipe

    plain = gopen("pipe:sleep 1; printf hello")
    os.kill(plain.proc.pid, signal.SIGUSR2)
    assert plain.proc.wait() != 0  # webdataset's own opener: the command dies of the signal

    ours = _open_pipe("pipe:sleep 1; printf hello")
    os.kill(ours.proc.pid, signal.SIGUSR2)
    os.kill(ours.proc.pid, signal.SIGTERM)
    assert ours.stream.read() == b"hello"
    assert ours.proc.wait() == 0
