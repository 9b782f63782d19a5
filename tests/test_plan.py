"""The epoch plan (pure: synthetic index dicts, no audio)."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from asr_dist.data.index import DatasetIndex, SampleInfo, ShardIndexError, ShardInfo, load_index
from asr_dist.data.plan import BatchRules, EpochPosition, PlanError, plan_eval, plan_train_epoch, split_to_multiple


def synthetic_index(shard_sizes, seed=0, median=3.1, sigma=0.47) -> DatasetIndex:
    """Log-normal durations around 3 s, like one-sentence TTS utterances."""
    rng = np.random.default_rng(seed)
    shards, n = [], 0
    for i, size in enumerate(shard_sizes):
        samples = []
        for _ in range(size):
            d = float(np.clip(np.exp(rng.normal(np.log(median), sigma)), 0.3, 20.0))
            samples.append(SampleInfo(f"utt{n:05d}", round(d, 4), "HELLO", f"spk{n % 3}"))
            n += 1
        shards.append(ShardInfo(f"train-{i:06d}.tar", f"/nowhere/train-{i:06d}.tar", tuple(samples)))
    return DatasetIndex("synthetic/index.json", 16000, tuple(shards))


RULES = BatchRules(max_batch_seconds=20.0, max_batch_samples=8, bucket_shards=3, megabatch_factor=4)


def all_keys(index):
    return sorted(s.key for shard in index.shards for s in shard.samples)


def planned_keys(batches):
    return [k for b in batches for k in b.keys]


@pytest.mark.parametrize("shard_sizes", [[7] * 13, [1, 30, 2, 0, 17, 5], [41]])
@pytest.mark.parametrize("world_size,grad_accum", [(1, 1), (2, 1), (3, 2), (4, 3)])
def test_every_sample_once_and_equal_steps(shard_sizes, world_size, grad_accum):
    index = synthetic_index(shard_sizes)
    for epoch in range(3):
        batches = plan_train_epoch(index, RULES, seed=7, epoch=epoch, world_size=world_size, grad_accum=grad_accum)
        assert sorted(planned_keys(batches)) == all_keys(index)
        assert len(batches) % (world_size * grad_accum) == 0
        per_rank = [batches[r::world_size] for r in range(world_size)]
        assert len({len(b) for b in per_rank}) == 1  # same number of micro-batches (and steps) on every rank
        for b in batches:
            assert 1 <= len(b.samples) <= RULES.max_batch_samples
            assert b.padded_seconds <= RULES.max_batch_seconds + 1e-9


def test_pure_function_of_seed_epoch_world_size():
    index = synthetic_index([9] * 10)
    a = plan_train_epoch(index, RULES, seed=1, epoch=2, world_size=2, grad_accum=2)
    b = plan_train_epoch(index, RULES, seed=1, epoch=2, world_size=2, grad_accum=2)
    assert a == b
    other_epoch = plan_train_epoch(index, RULES, seed=1, epoch=3, world_size=2, grad_accum=2)
    other_seed = plan_train_epoch(index, RULES, seed=2, epoch=2, world_size=2, grad_accum=2)
    assert planned_keys(a) != planned_keys(other_epoch)
    assert planned_keys(a) != planned_keys(other_seed)


def test_windows_keep_reads_local():
    """Each batch draws only from the shards of its window (bucket_shards consecutive shards of the shuffled order)."""
    index = synthetic_index([6] * 9)
    batches = plan_train_epoch(index, RULES, seed=0, epoch=0, world_size=1)
    shards_of_window = collections.defaultdict(set)
    for b in batches:
        shards_of_window[b.window] |= {s.shard for s in b.samples}
    assert all(len(s) <= RULES.bucket_shards for s in shards_of_window.values())
    assert sorted(set().union(*shards_of_window.values())) == list(range(9))
    windows_in_order = [b.window for b in batches]
    assert windows_in_order == sorted(windows_in_order)  # windows are contiguous in the plan


def test_padding_is_small_on_tts_like_durations():
    """Duration bucketing keeps padding under 5% of the audio (demo-like: ~1000 utterances, 60 s batches)."""
    index = synthetic_index([100] * 10 + [30])
    rules = BatchRules(max_batch_seconds=60.0, max_batch_samples=32, bucket_shards=8)
    batches = plan_train_epoch(index, rules, seed=0, epoch=0, world_size=2, grad_accum=2)
    audio = sum(b.audio_seconds for b in batches)
    padded = sum(b.padded_seconds for b in batches)
    assert (padded - audio) / audio < 0.05
    # HF's group_by_length (LengthGroupedSampler) with the same mean batch size pads more on the same durations
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler
    durations = [s.duration for shard in index.shards for s in shard.samples]
    size = round(len(durations) / len(batches))
    order = list(LengthGroupedSampler(size, lengths=durations, generator=torch.Generator().manual_seed(0)))
    hf = [[durations[i] for i in order[k:k + size]] for k in range(0, len(order), size)]
    hf_padding = sum(len(b) * max(b) - sum(b) for b in hf) / sum(durations)
    assert (padded - audio) / audio < hf_padding


def test_duration_filter_leaves_samples_out():
    index = synthetic_index([50])
    rules = BatchRules(max_batch_seconds=20.0, max_batch_samples=8, min_duration=2.0, max_duration=4.0)
    batches = plan_train_epoch(index, rules, seed=0, epoch=0, world_size=1)
    kept = sorted(s.key for shard in index.shards for s in shard.samples if 2.0 <= s.duration <= 4.0)
    assert sorted(planned_keys(batches)) == kept


def test_longest_first_puts_the_longest_batches_into_the_first_step():
    index = synthetic_index([20] * 6)
    rules = BatchRules(max_batch_seconds=20.0, max_batch_samples=8, longest_first=True)
    batches = plan_train_epoch(index, rules, seed=3, epoch=0, world_size=2, grad_accum=2)
    longest = sorted((max(s.duration for s in b.samples) for b in batches), reverse=True)
    assert [max(s.duration for s in b.samples) for b in batches[:4]] == longest[:4]
    plain = plan_train_epoch(index, BatchRules(max_batch_seconds=20.0, max_batch_samples=8), seed=3, epoch=0, world_size=2,
                             grad_accum=2)
    assert sorted(map(tuple, (b.keys for b in plain))) == sorted(map(tuple, (b.keys for b in batches)))


def test_split_to_multiple_keeps_order_and_splits_heaviest():
    index = synthetic_index([5, 5])
    batches = plan_train_epoch(index, RULES, seed=0, epoch=0, world_size=1)
    split = split_to_multiple(batches, len(batches) + 3)
    assert planned_keys(split) == planned_keys(batches)
    assert len(split) == len(batches) + 3
    assert max(b.padded_seconds for b in split) <= max(b.padded_seconds for b in batches)


def test_too_few_samples_for_the_layout_is_a_clear_error():
    index = synthetic_index([3])
    with pytest.raises(PlanError, match="world_size x grad_accum = 8"):
        plan_train_epoch(index, RULES, seed=0, epoch=0, world_size=4, grad_accum=2)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_eval_plan_covers_every_sample_once_without_duplicates(world_size):
    index = synthetic_index([5, 0, 13, 2])
    batches = plan_eval(index, RULES, world_size=world_size)
    keys = [k for r in range(world_size) for b in batches[r::world_size] for k in b.keys]
    assert sorted(keys) == all_keys(index)
    assert len(set(len(batches[r::world_size]) for r in range(world_size))) == 1


def test_position_resplit_on_other_world_size_covers_the_rest_once():
    """2 ranks -> 1 -> 3 ranks within one epoch: consumed + remaining = every sample exactly once."""
    index = synthetic_index([11] * 7)
    plan = plan_train_epoch(index, RULES, seed=5, epoch=4, world_size=2, grad_accum=2)
    pos = EpochPosition(epoch=4, batches_consumed=8, plan_world_size=2, plan_grad_accum=2)
    consumed = planned_keys(pos.global_batches(plan)[:8])
    pos1 = pos.moved_to(1, 1)
    g1 = pos1.global_batches(plan)
    rest1 = pos1.rank_batches(g1, 0)
    consumed += planned_keys(rest1[:3])
    pos3 = EpochPosition(4, 8 + 3, 2, 2, pos1.resplits).moved_to(3, 1)
    g3 = pos3.global_batches(plan)
    per_rank = [pos3.rank_batches(g3, r) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1
    keys = consumed + [k for b in per_rank for batch in b for k in batch.keys]
    assert sorted(keys) == all_keys(index)
    assert pos3.resplits == [[8, 1, 1], [11, 3, 1]]


def _write_index(tmp_path, shards):
    raw = {"version": 1, "sample_rate": 16000, "num_samples": sum(len(s["samples"]) for s in shards),
           "total_seconds": 0.0, "shards": shards}
    (tmp_path / "index.json").write_text(json.dumps(raw))


def test_index_from_folder_and_url_pattern(tmp_path):
    shards = [{"name": f"train-{i:06d}.tar", "num_samples": 1,
               "samples": [{"key": f"k{i}", "duration": 1.0, "text": "A", "speaker": "s"}]} for i in range(3)]
    _write_index(tmp_path, shards)
    index = load_index(str(tmp_path))
    assert [s.url for s in index.shards] == [str(tmp_path / f"train-{i:06d}.tar") for i in range(3)]
    piped = load_index(f"pipe:cat {tmp_path}/train-{{000000..000002}}.tar", str(tmp_path / "index.json"))
    assert [s.url for s in piped.shards] == [f"pipe:cat {tmp_path}/train-{i:06d}.tar" for i in range(3)]
    with pytest.raises(ShardIndexError, match="expands to 2 URLs"):
        load_index(f"{tmp_path}/train-{{000000..000001}}.tar", str(tmp_path / "index.json"))
    with pytest.raises(ShardIndexError, match="index file"):
        load_index(f"{tmp_path}/train-{{000000..000002}}.tar")


@pytest.mark.parametrize("bad,match", [
    ({"key": "a.b", "duration": 1.0, "text": "A"}, "contains a dot"),
    ({"key": "a", "duration": -1, "text": "A"}, "duration -1"),
    ({"key": "a", "duration": 1.0}, "'key' and 'text'"),
])
def test_bad_index_names_file_and_reason(tmp_path, bad, match):
    _write_index(tmp_path, [{"name": "train-000000.tar", "samples": [bad]}])
    with pytest.raises(ShardIndexError, match=match) as info:
        load_index(str(tmp_path))
    assert str(tmp_path / "index.json") in str(info.value)
