"""Augmentation: deterministic per (seed, epoch, key), does what it says, never touches eval."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _shard_factory import tiny_processor, write_tiny_shards
from asr_dist.config import AugmentConfig, DataConfig
from asr_dist.data.augment import Augmenter
from asr_dist.data.loader import build_eval_loader, build_train_loader

SR = 16000


def tone(seconds=1.0, freq=440.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_same_seed_epoch_key_same_output_and_others_differ():
    cfg = AugmentConfig(enabled=True, speed_factors=[0.9, 1.0, 1.1], noise_prob=1.0, snr_db=[5, 20], gain_db=[-6, 6])
    aug = Augmenter(cfg, seed=1, sample_rate=SR)
    x = tone()
    a = aug(x, epoch=2, key="utt-1")
    assert np.array_equal(a, Augmenter(cfg, seed=1, sample_rate=SR)(x, epoch=2, key="utt-1"))
    outputs = [aug(x, epoch=e, key=k) for e in (2, 3) for k in ("utt-1", "utt-2")] + \
              [Augmenter(cfg, seed=2, sample_rate=SR)(x, epoch=2, key="utt-1")]
    for other in outputs[1:]:
        assert len(other) != len(a) or not np.array_equal(other, a)


def test_speed_factor_changes_length_as_planned():
    cfg = AugmentConfig(enabled=True, speed_factors=[0.9, 1.1])
    aug = Augmenter(cfg, seed=0, sample_rate=SR)
    x = tone(2.0)
    factors = {aug.speed_factor(0, f"k{i}") for i in range(20)}
    assert factors == {0.9, 1.1}
    for i in range(6):
        f = aug.speed_factor(0, f"k{i}")
        assert abs(len(aug(x, epoch=0, key=f"k{i}")) - len(x) / f) <= 2


def test_noise_is_added_at_the_drawn_snr():
    cfg = AugmentConfig(enabled=True, noise_prob=1.0, snr_db=[10.0, 10.0])
    x = tone(2.0)
    y = Augmenter(cfg, seed=0, sample_rate=SR)(x, epoch=0, key="k")
    noise = y - x
    snr = 10 * np.log10(np.sum(x ** 2) / np.sum(noise ** 2))
    assert abs(snr - 10.0) < 0.2


def test_gain_scales_the_level():
    cfg = AugmentConfig(enabled=True, gain_db=[-6.0, -6.0])
    y = Augmenter(cfg, seed=0, sample_rate=SR)(tone(), epoch=0, key="k")
    assert np.allclose(y, tone() * 10 ** (-6 / 20), atol=1e-6)


def test_noise_probability_is_respected():
    cfg = AugmentConfig(enabled=True, noise_prob=0.3, snr_db=[10.0, 10.0])
    aug = Augmenter(cfg, seed=0, sample_rate=SR)
    x = tone(0.2)
    noisy = sum(not np.array_equal(aug(x, epoch=0, key=f"k{i}"), x) for i in range(300))
    assert 60 <= noisy <= 120


def test_disabled_is_identity():
    x = tone()
    assert Augmenter(AugmentConfig(enabled=False, noise_prob=1.0), seed=0, sample_rate=SR)(x, epoch=0, key="k") is x


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("aug") / "train", [4, 5, 3], seed=1)


AUG = AugmentConfig(enabled=True, speed_factors=[0.9, 1.0, 1.1], noise_prob=0.5, snr_db=[5, 20], gain_db=[-3, 3])


def _cfg(folder, workers):
    return DataConfig(train_shards=str(folder), eval_shards=str(folder), max_batch_seconds=1.5, max_batch_samples=4,
                      max_duration=1.3, bucket_shards=2, num_workers=workers, augment=AUG)


def test_loader_augmentation_does_not_depend_on_workers_and_respects_the_budget(shards):
    processor = tiny_processor()
    runs = []
    for workers in (0, 2):
        loader = build_train_loader(_cfg(shards, workers), processor, seed=4, rank=0, world_size=1, grad_accum=1)
        runs.append(list(loader))
    for a, b in zip(*runs):  # equal up to float rounding: workers run torch with 1 thread, the main process with 2
        assert a["keys"] == b["keys"] and torch.allclose(a["input_values"], b["input_values"], atol=1e-4)
    again = build_train_loader(_cfg(shards, 2), processor, seed=4, rank=0, world_size=1, grad_accum=1)
    assert all(torch.equal(a["input_values"], b["input_values"]) for a, b in zip(runs[1], again))
    plain_cfg = _cfg(shards, 0)
    plain_cfg.augment = AugmentConfig()
    plain = build_train_loader(plain_cfg, processor, seed=4, rank=0, world_size=1, grad_accum=1)
    def lengths(batches):
        return {k: int(n) for b in batches for k, n in zip(b["keys"], b["attention_mask"].sum(1))}
    before, after = lengths(plain), lengths(runs[0])
    factors = {k: loader.augmenter.speed_factor(0, k) for k in before}
    assert set(factors.values()) == {0.9, 1.0, 1.1}
    assert all(abs(after[k] - before[k] / factors[k]) <= 2 for k in before)  # each sample at its planned speed
    for batch in runs[0]:  # the plan budgets the perturbed durations: the bound holds after augmentation
        assert batch["padded_seconds"] <= 1.5 + 2 / SR


def test_eval_is_never_augmented(shards):
    processor = tiny_processor()
    plain = _cfg(shards, 0)
    plain.augment = AugmentConfig()
    with_aug = list(build_eval_loader(_cfg(shards, 0), processor, rank=0, world_size=1))
    without = list(build_eval_loader(plain, processor, rank=0, world_size=1))
    assert [b["keys"] for b in with_aug] == [b["keys"] for b in without]
    assert all(torch.equal(a["input_values"], b["input_values"]) for a, b in zip(with_aug, without))
