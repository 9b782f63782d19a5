"""The array planner (data/flat_plan.py) gives exactly plan.py's batches, and its index.npz round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from asr_dist.data.flat_plan import FlatIndex, plan_epoch, rank_batches
from asr_dist.data.mix import combine, epoch_counts
from asr_dist.data.plan import BatchRules, plan_train_epoch
from test_mix import source_index
from test_plan import synthetic_index

RULES = BatchRules(max_batch_seconds=20.0, max_batch_samples=8, bucket_shards=3, megabatch_factor=4,
                   min_duration=0.5, max_duration=15.0)


@pytest.mark.parametrize("shard_sizes", [[7] * 13, [1, 30, 2, 0, 17, 5], [41], [200] * 9])
@pytest.mark.parametrize("world_size,grad_accum", [(1, 1), (2, 1), (3, 2), (8, 1)])
@pytest.mark.parametrize("longest_first", [False, True])
def test_same_batches_as_plan_py(shard_sizes, world_size, grad_accum, longest_first):
    index = synthetic_index(shard_sizes, seed=len(shard_sizes))
    rules = BatchRules(**{**RULES.__dict__, "longest_first": longest_first})
    flat = FlatIndex.from_index(index)
    for epoch in range(2):
        expected = plan_train_epoch(index, rules, seed=3, epoch=epoch, world_size=world_size, grad_accum=grad_accum)
        plan = plan_epoch(flat, rules, seed=3, epoch=epoch, world_size=world_size, grad_accum=grad_accum)
        for rank in range(world_size):
            assert rank_batches(flat, plan, rank, world_size) == expected[rank::world_size]


def test_same_batches_with_weighted_sources():
    index = combine([("big", source_index("a", [25] * 8, 1)), ("small", source_index("b", [9] * 3, 2))])
    weights = {"big": 3.0, "small": 1.0}
    flat = FlatIndex.from_index(index)
    expected = plan_train_epoch(index, RULES, seed=1, epoch=4, world_size=2, weights=weights)
    counts = np.concatenate(epoch_counts(index, weights, RULES, seed=1, epoch=4))
    plan = plan_epoch(flat, RULES, seed=1, epoch=4, world_size=2, counts=counts)
    assert rank_batches(flat, plan, 0, 2) + rank_batches(flat, plan, 1, 2) == expected[0::2] + expected[1::2]


def test_index_npz_round_trip(tmp_path):
    flat = FlatIndex.from_index(synthetic_index([5, 0, 3]))
    flat.save(tmp_path / "index.npz")
    back = FlatIndex.load(tmp_path / "index.npz")
    assert back.shard_names == flat.shard_names and back.sample_rate == 16000
    assert [back.key(i) for i in range(back.num_samples)] == [flat.key(i) for i in range(flat.num_samples)]
    assert np.array_equal(back.durations, flat.durations) and np.array_equal(back.offsets, [0, 5, 5, 8])
