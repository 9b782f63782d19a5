"""Weighted mixing of several training sources (`data.train`) into one epoch plan.

What an epoch is when weights differ
------------------------------------
A source's weight is its share of the samples of an epoch. The *anchor* is the source with the
largest weight (the first listed on a tie); an epoch is one full pass over the anchor's samples, and
every other source contributes round(N_anchor x weight / anchor_weight) samples (at least 1):

- a source larger than its share is down-sampled: each epoch takes the next slice of a shuffled
  pass over it, so successive epochs walk through all of it before any sample repeats;
- a source smaller than its share is up-sampled: each sample appears floor(share / size) times,
  and the remainder (share mod size) is again the next slice of shuffled passes, so every sample
  appears floor or ceil(share / size) times.

Each source's order is a stream of passes, pass p a permutation seeded by (seed, source name, p),
and epoch e takes stream positions [e x r, (e+1) x r) with r = share mod size (share itself when the
source is down-sampled). So the selection is a pure function
of (seed, epoch, the sources): renaming or reordering other sources changes nothing about a source,
and the world size plays no part (it only deals the batches out, plan.py). A single source (the
plain `data.train_shards`) is its own anchor with every sample once: exactly the unweighted plan.

Only samples within data.min_duration..data.max_duration count as a source's samples; how many
were left out is reported (`excluded_by_duration`), per source.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, replace

import numpy as np

from asr_dist.data.index import DatasetIndex, ShardIndexError, ShardInfo

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """A training source that cannot be used (the message names the source)."""


def eligible(durations: np.ndarray, rules) -> np.ndarray:
    return (durations >= rules.min_duration) & (durations <= rules.max_duration)


@dataclass(frozen=True)
class SourceShare:
    name: str
    weight: float
    eligible: int  # samples within the duration bounds
    excluded: int  # samples left out by duration
    excluded_seconds: float
    per_epoch: int  # samples drawn per epoch


def _flat(index: DatasetIndex) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(every sample's duration, its source number, the source names) in index order."""
    names = list(dict.fromkeys(s.source for s in index.shards))
    number = {n: i for i, n in enumerate(names)}
    durations = np.fromiter((x.duration for s in index.shards for x in s.samples), np.float64, index.num_samples)
    source = np.repeat(np.array([number[s.source] for s in index.shards], np.int32),
                       [len(s.samples) for s in index.shards])
    return durations, source, names


def shares(index: DatasetIndex, weights: dict[str, float], rules, _flat_view=None) -> list[SourceShare]:
    """Per source: eligible samples and the number drawn per epoch (see the module docstring)."""
    durations, source, names = _flat_view or _flat(index)
    ok = eligible(durations, rules)
    counts = {}
    for i, name in enumerate(names):
        mine = source == i
        counts[name] = (int((ok & mine).sum()), int((~ok & mine).sum()), float(durations[~ok & mine].sum()))
    for name in weights:
        if counts.get(name, (0,))[0] == 0 and len(weights) > 1:  # one source: plan.py says why it cannot plan
            raise SourceError(f"data.train source {name!r}: no sample has a duration within data.min_duration.."
                              f"data.max_duration ({rules.min_duration}..{rules.max_duration} s)")
    counts = {name: counts.get(name, (0, 0, 0.0)) for name in weights}
    anchor = max(weights, key=lambda name: weights[name])  # first listed wins a tie
    n_anchor, w_anchor = counts[anchor][0], weights[anchor]
    return [SourceShare(name, w, *counts[name],
                        counts[name][0] if name == anchor else max(1, round(n_anchor * w / w_anchor)))
            for name, w in weights.items()]


def _pass_order(seed: int, name: str, p: int, n: int) -> np.ndarray:
    ss = np.random.SeedSequence([seed, zlib.crc32(name.encode()), p, 0x313C])
    return np.random.Generator(np.random.PCG64(ss)).permutation(n)


def _remainder(seed: int, name: str, epoch: int, r: int, n: int) -> np.ndarray:
    """Stream positions [epoch x r, (epoch + 1) x r) of the source's passes: r < n distinct samples.

    A slice that crosses into the next pass could meet a sample again; such a repeat is replaced by the
    next samples of the new pass that this epoch has not drawn (the stream itself is unchanged)."""
    start, stop = epoch * r, (epoch + 1) * r
    p, a = divmod(start, n)
    first = _pass_order(seed, name, p, n)
    if a + r <= n:
        return first[a:a + r]
    tail, after = first[a:], _pass_order(seed, name, p + 1, n)
    fresh = after[~np.isin(after, tail)]  # the new pass without what this epoch already drew, in order
    return np.concatenate([tail, fresh[:stop - (p + 1) * n]])


def epoch_counts(index: DatasetIndex, weights: dict[str, float], rules, *, seed: int, epoch: int
                 ) -> list[np.ndarray]:
    """How often each sample is drawn this epoch: one int array per shard, aligned with its samples."""
    flat = flat_counts(_flat(index), weights, rules, seed=seed, epoch=epoch)
    bounds = np.cumsum([0] + [len(s.samples) for s in index.shards])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def flat_counts(view, weights: dict[str, float], rules, *, seed: int, epoch: int) -> np.ndarray:
    """epoch_counts over all samples in index order; `view` = (durations, source number, source names) arrays."""
    durations, source, names = view
    ok = eligible(durations, rules)
    flat = np.zeros(len(durations), np.int32)
    for share in shares(None, weights, rules, view):
        members = np.flatnonzero(ok & (source == names.index(share.name)))  # index order
        n, k = share.eligible, share.per_epoch
        flat[members] += k // n  # whole passes (up-sampling): every sample the same number of times
        r = k % n  # the rest: the next slice of the source's stream of shuffled passes
        if r:
            flat[members[_remainder(seed, share.name, epoch, r, n)]] += 1
    return flat


def combine(named: list[tuple[str, DatasetIndex]]) -> DatasetIndex:
    """One index over all sources: shards tagged with their source (names prefixed `source/` when
    there are several), keys checked unique across sources (the loader finds members by key)."""
    if len(named) == 1:
        name, index = named[0]
        return replace(index, shards=tuple(replace(s, source=name) for s in index.shards))
    rates = {index.sample_rate for _, index in named}
    if len(rates) > 1:
        raise SourceError("data.train sources have different sample rates in their index.json: " +
                          ", ".join(f"{n}={i.sample_rate}" for n, i in named))
    owner: dict[str, str] = {}
    shards: list[ShardInfo] = []
    for name, index in named:
        for shard in index.shards:
            for s in shard.samples:
                other = owner.setdefault(s.key, name)
                if other != name:
                    raise SourceError(f"data.train sources {other!r} and {name!r} both have a sample with key "
                                      f"{s.key!r}; keys must be unique across sources (re-prepare one with a prefix)")
            shards.append(replace(shard, name=f"{name}/{shard.name}", source=name))
    return DatasetIndex(" + ".join(i.path for _, i in named), named[0][1].sample_rate, tuple(shards))


def open_sources(sources, open_one) -> tuple[DatasetIndex, dict[str, float]]:
    """Opens each source's index with `open_one(shards, index_path, what)`; an error names the source."""
    named = []
    for i, src in enumerate(sources):
        what = f"data.train[{i}] ({src.name})"
        try:
            named.append((src.name, open_one(src.shards, src.index, what)))
        except (ShardIndexError, OSError) as exc:
            raise SourceError(f"{what}: {exc}") from exc
    return combine(named), {src.name: float(src.weight) for src in sources}


def log_shares(index: DatasetIndex, weights: dict[str, float], rules) -> list[SourceShare]:
    result = shares(index, weights, rules)
    for s in result:
        log.info("source %s: weight %g, %d samples, %d per epoch%s", s.name, s.weight, s.eligible, s.per_epoch,
                 f"; {s.excluded} ({s.excluded_seconds / 3600:.2f} h) left out by duration "
                 f"(outside {rules.min_duration}..{rules.max_duration} s)" if s.excluded else "")
    return result


class MixCounter:
    """Samples and audio seconds trained on per source since the run began (kept in checkpoints).

    Counted from the plan, round by round (all ranks' batches of a step), so every rank holds the same
    totals without a collective; audio seconds are planned ones (after speed perturbation).
    """

    def __init__(self, index: DatasetIndex, rules, weights: dict[str, float] | None):
        self.source_of = [s.source or "train" for s in index.shards]  # an untagged index is the source `train`
        names = list(weights or dict.fromkeys(self.source_of))
        self.samples = {n: 0 for n in names}
        self.seconds = {n: 0.0 for n in names}
        self.left_out = shares(index, weights, rules) if weights else []

    def add(self, batches) -> None:
        for b in batches:
            for s in b.samples:
                name = self.source_of[s.shard]
                self.samples[name] = self.samples.get(name, 0) + 1
                self.seconds[name] = self.seconds.get(name, 0.0) + s.duration

    def metrics(self) -> dict[str, float]:
        """mix/<source>/samples, mix/<source>/audio_hours (cumulative) and what the duration bounds leave out."""
        out: dict[str, float] = {}
        for name in self.samples:
            out[f"mix/{name}/samples"] = float(self.samples[name])
            out[f"mix/{name}/audio_hours"] = self.seconds[name] / 3600
        out["data/left_out_by_duration"] = float(sum(s.excluded for s in self.left_out))
        for s in self.left_out:
            if len(self.left_out) > 1:
                out[f"mix/{s.name}/left_out_by_duration"] = float(s.excluded)
        return out

    def state_dict(self) -> dict:
        return {"samples": dict(self.samples), "seconds": dict(self.seconds)}

    def load_state_dict(self, state: dict) -> None:
        self.samples.update(state.get("samples", {}))
        self.seconds.update(state.get("seconds", {}))
