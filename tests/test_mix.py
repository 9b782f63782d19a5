"""Weighted training sources (asr_dist/data/mix.py): what an epoch draws, resume on another world size, errors."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from asr_dist.config import ConfigError, load_config
from asr_dist.data.index import DatasetIndex, SampleInfo, ShardInfo
from asr_dist.data.mix import MixCounter, SourceError, combine, epoch_counts, shares
from asr_dist.data.plan import BatchRules, EpochPosition, plan_train_epoch

RULES = BatchRules(max_batch_seconds=20.0, max_batch_samples=8, bucket_shards=3, megabatch_factor=4,
                   max_duration=15.0)


def source_index(prefix: str, shard_sizes, seed=0) -> DatasetIndex:
    rng = np.random.default_rng(seed)
    shards, n = [], 0
    for i, size in enumerate(shard_sizes):
        samples = []
        for _ in range(size):
            d = float(np.clip(np.exp(rng.normal(np.log(3.1), 0.47)), 0.3, 20.0))
            samples.append(SampleInfo(f"{prefix}{n:05d}", round(d, 4), "HELLO", "spk"))
            n += 1
        shards.append(ShardInfo(f"train-{i:06d}.tar", f"/nowhere/{prefix}/train-{i:06d}.tar", tuple(samples)))
    return DatasetIndex(f"{prefix}/index.json", 16000, tuple(shards))


def mixed(a_sizes, b_sizes):
    return combine([("big", source_index("a", a_sizes, 1)), ("small", source_index("b", b_sizes, 2))])


def per_source(index, batches):
    c = collections.Counter(index.shards[s.shard].source for b in batches for s in b.samples)
    return c["big"], c["small"]


@pytest.mark.parametrize("b_sizes", [[40] * 12, [9] * 3])  # the 1-weight source down-sampled / up-sampled
def test_three_to_one_sample_ratio_over_an_epoch(b_sizes):
    index = mixed([25] * 24, b_sizes)
    weights = {"big": 3.0, "small": 1.0}
    eligible = {s.name: s.eligible for s in shares(index, weights, RULES)}
    for epoch in range(3):
        batches = plan_train_epoch(index, RULES, seed=5, epoch=epoch, world_size=2, grad_accum=2, weights=weights)
        big, small = per_source(index, batches)
        assert big == eligible["big"]  # an epoch is one pass over the most-weighted source
        assert abs(big / small / 3.0 - 1) < 0.02
        keys = collections.Counter(k for b in batches for k in b.keys)
        assert all(keys[k] == 1 for k in keys if k.startswith("a"))
        small_times = [keys[k] for k in keys if k.startswith("b")]
        assert max(small_times) - min(small_times) <= 1  # up-sampling spreads evenly
        assert len(batches) % 4 == 0
        assert all(b.padded_seconds <= RULES.max_batch_seconds + 1e-9 for b in batches)


def test_down_sampled_source_walks_through_all_samples_before_repeating():
    index = mixed([30] * 8, [50] * 8)  # big: 240 eligible-ish; small has 400, draws 80 per epoch at 3:1
    weights = {"big": 3.0, "small": 1.0}
    share = {s.name: s for s in shares(index, weights, RULES)}["small"]
    seen = collections.Counter()
    epochs = share.eligible // share.per_epoch
    for epoch in range(epochs):
        counts = epoch_counts(index, weights, RULES, seed=3, epoch=epoch)
        for shard, c in zip(index.shards, counts):
            if shard.source == "small":
                for s, times in zip(shard.samples, c):
                    seen[s.key] += int(times)
    assert max(seen.values()) == 1 and sum(seen.values()) == epochs * share.per_epoch


def test_one_source_is_exactly_the_unweighted_plan():
    index = source_index("a", [7] * 13)
    plain = plan_train_epoch(index, RULES, seed=7, epoch=1, world_size=2)
    tagged = combine([("train", index)])
    assert plan_train_epoch(tagged, RULES, seed=7, epoch=1, world_size=2, weights={"train": 1.0}) == plain


def test_plan_is_pure_and_source_order_does_not_matter():
    a, b = source_index("a", [20] * 6, 1), source_index("b", [15] * 4, 2)
    w = {"big": 2.0, "small": 1.0}
    one = plan_train_epoch(combine([("big", a), ("small", b)]), RULES, seed=1, epoch=2, world_size=2, weights=w)
    again = plan_train_epoch(combine([("big", a), ("small", b)]), RULES, seed=1, epoch=2, world_size=2, weights=w)
    assert one == again
    swapped = combine([("small", b), ("big", a)])
    counts = collections.Counter(k for bt in plan_train_epoch(swapped, RULES, seed=1, epoch=2, world_size=2,
                                                              weights=w) for k in bt.keys)
    assert counts == collections.Counter(k for bt in one for k in bt.keys)  # same draw, whatever the listing order


def test_resume_mid_epoch_on_one_rank_instead_of_two_sees_exactly_the_planned_samples():
    index = mixed([25] * 10, [9] * 4)
    weights = {"big": 3.0, "small": 1.0}
    plan = plan_train_epoch(index, RULES, seed=11, epoch=0, world_size=2, grad_accum=1, weights=weights)
    position = EpochPosition(0, 0, 2, 1)
    seen = []
    for _ in range(5):  # 5 steps on two ranks
        for rank in range(2):
            seen += position.rank_batches(position.global_batches(plan), rank)[0].keys
        position.batches_consumed += 2
    saved = json.loads(json.dumps(position.__dict__))  # through a checkpoint
    resumed = EpochPosition(**saved).moved_to(1, 1)
    replan = plan_train_epoch(index, RULES, seed=11, epoch=0, world_size=2, grad_accum=1, weights=weights)
    for b in resumed.rank_batches(resumed.global_batches(replan), 0):
        seen += b.keys
    assert collections.Counter(seen) == collections.Counter(k for b in plan for k in b.keys)


def test_mix_counter_counts_planned_samples_and_seconds_per_source():
    index = mixed([10] * 3, [10] * 3)
    weights = {"big": 3.0, "small": 1.0}
    plan = plan_train_epoch(index, RULES, seed=0, epoch=0, world_size=1, weights=weights)
    counter = MixCounter(index, RULES, weights)
    counter.add(plan)
    m = counter.metrics()
    assert (m["mix/big/samples"], m["mix/small/samples"]) == per_source(index, plan)
    big_seconds = sum(s.duration for b in plan for s in b.samples if index.shards[s.shard].source == "big")
    assert m["mix/big/audio_hours"] == pytest.approx(big_seconds / 3600)
    left_out = sum(1 for sh in index.shards for s in sh.samples if s.duration > RULES.max_duration)
    assert m["data/left_out_by_duration"] == left_out


def test_duplicate_keys_across_sources_are_an_error_naming_both():
    with pytest.raises(SourceError, match="'one' and 'two'.*a00000"):
        combine([("one", source_index("a", [3])), ("two", source_index("a", [3]))])


@pytest.mark.parametrize("weight", [0, -1.5])
def test_weight_not_positive_is_a_config_error_naming_the_key(weight):
    with pytest.raises(ConfigError, match=r"data\.train\[1\]\.weight"):
        load_config(None, ["data.train=[{name: a, shards: /x}, {name: b, shards: /y, weight: %s}]" % weight])


def test_sources_and_train_shards_together_are_refused():
    with pytest.raises(ConfigError, match=r"data\.train "):
        load_config(None, ["data.train_shards=/x", "data.train=[{name: a, shards: /y}]"])


def test_train_shards_alone_is_one_source():
    cfg = load_config(None, ["data.train_shards=/x"])
    assert [(s.name, s.shards, s.weight) for s in cfg.data.train_sources()] == [("train", "/x", 1.0)]
