"""The epoch plan: which samples form which batch, in which order, on which rank.

A pure function of (index, batching rules, seed, epoch, world size, gradient accumulation): no
audio is opened and nothing depends on workers or timing, so every rank computes the same plan
independently, a resumed run recomputes it exactly, and it can be re-dealt to another world size.

Recipe for one epoch:
  1. shuffle the shard order with (seed, epoch) and group consecutive shards into windows of
     at most `bucket_shards`, sizes balanced so that no small remainder window pads badly (a worker
     reads one window's shards sequentially, once);
  2. inside a window shuffle the samples, sort pools of at most `megabatch_factor x max_batch_samples`
     samples (balanced sizes) by duration (HF's megabatch idea) and cut them greedily into batches bounded by
     padded seconds (n x longest <= max_batch_seconds) and by max_batch_samples;
  3. shuffle the batches of a window and concatenate the windows;
  4. make the number of batches a multiple of world_size x grad_accum by splitting the heaviest
     batches in two (no sample dropped or repeated; every rank runs the same number of optimizer
     steps, each with exactly grad_accum micro-batches);
  5. optionally move the batches with the longest samples to the front (an out-of-memory shows at step 1).
Global batch i goes to rank i % world_size.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from asr_dist.data.index import DatasetIndex
from asr_dist.data.mix import epoch_counts


class PlanError(ValueError):
    """The data cannot be planned as asked (the message says why)."""


@dataclass(frozen=True)
class PlannedSample:
    shard: int  # position in DatasetIndex.shards
    key: str
    duration: float  # planned seconds (after speed perturbation)


@dataclass(frozen=True)
class PlannedBatch:
    window: int  # window of shards it was built from: workers read one window at a time
    samples: tuple[PlannedSample, ...]

    @property
    def padded_seconds(self) -> float:
        return len(self.samples) * max(s.duration for s in self.samples)

    @property
    def audio_seconds(self) -> float:
        return sum(s.duration for s in self.samples)

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.samples]


@dataclass(frozen=True)
class BatchRules:
    """The data.* settings that shape the plan (a change breaks exact resume; see fingerprint)."""

    max_batch_seconds: float
    max_batch_samples: int
    bucket_shards: int = 8
    megabatch_factor: int = 50
    longest_first: bool = False
    min_duration: float = 0.0
    max_duration: float = float("inf")

    @classmethod
    def from_config(cls, data_cfg) -> BatchRules:
        return cls(max_batch_seconds=data_cfg.max_batch_seconds, max_batch_samples=data_cfg.max_batch_samples,
                   bucket_shards=data_cfg.bucket_shards, megabatch_factor=data_cfg.megabatch_factor,
                   longest_first=data_cfg.longest_first, min_duration=data_cfg.min_duration,
                   max_duration=data_cfg.max_duration)


SpeedOf = Callable[[str], float]  # key -> speed factor this epoch (planned duration = duration / factor)


def windows(shard_order: Sequence[int], bucket_shards: int) -> list[list[int]]:
    """Consecutive groups of at most bucket_shards shards, sizes differing by at most one."""
    count = -(-len(shard_order) // bucket_shards)
    return [list(map(int, w)) for w in np.array_split(np.asarray(shard_order, dtype=np.int64), count)] if count else []


def _balanced_chunks(items: list, at_most: int) -> list[list]:
    """Consecutive chunks of at most `at_most` items, sizes differing by at most one (no tiny remainder)."""
    count = -(-len(items) // at_most)
    bounds = np.linspace(0, len(items), count + 1).round().astype(int) if count else [0]
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, 0x5EED])))


def _window_samples(index: DatasetIndex, shard_ids: Sequence[int], rules: BatchRules, speed_of: SpeedOf | None,
                    counts: list[np.ndarray] | None = None) -> list[PlannedSample]:
    """The window's samples in index order; with `counts` (weighted sources) each repeated as drawn."""
    out = []
    for sid in shard_ids:
        for j, s in enumerate(index.shards[sid].samples):
            times = int(counts[sid][j]) if counts is not None else \
                int(rules.min_duration <= s.duration <= rules.max_duration)
            if times:
                factor = speed_of(s.key) if speed_of else 1.0
                out += [PlannedSample(int(sid), s.key, s.duration / factor)] * times
    return out


def cut_sorted(samples: Sequence[PlannedSample], rules: BatchRules, window: int) -> list[PlannedBatch]:
    """Greedy cut of samples sorted longest first: the first sample of a batch fixes its padded length."""
    batches, current = [], []
    for s in samples:
        longest = current[0].duration if current else s.duration
        if current and (len(current) + 1 > rules.max_batch_samples
                        or (len(current) + 1) * longest > rules.max_batch_seconds):
            batches.append(PlannedBatch(window, tuple(current)))
            current = []
        current.append(s)
    if current:
        batches.append(PlannedBatch(window, tuple(current)))
    return batches


def _by_duration(samples: Sequence[PlannedSample]) -> list[PlannedSample]:
    return sorted(samples, key=lambda s: -s.duration)  # stable: ties keep their (shuffled or index) order


class _Piece:
    """A batch that may have been split; its children replace it in place."""

    __slots__ = ("batch", "children")

    def __init__(self, batch: PlannedBatch):
        self.batch, self.children = batch, ()

    def leaves(self):
        if not self.children:
            yield self.batch
        for child in self.children:
            yield from child.leaves()


def split_to_multiple(batches: list[PlannedBatch], multiple: int, what: str = "the epoch") -> list[PlannedBatch]:
    """Splits the heaviest batches in two until len(batches) is a multiple of `multiple`.

    A split batch's halves stay adjacent, so the order of samples is unchanged. Ties are broken by
    position, so the result is deterministic.
    """
    need = (-len(batches)) % multiple
    if need == 0:
        return list(batches)
    roots = [_Piece(b) for b in batches]
    heap = [(-b.padded_seconds, -len(b.samples), seq, roots[seq]) for seq, b in enumerate(batches) if len(b.samples) > 1]
    heapq.heapify(heap)
    seq = len(batches)
    for _ in range(need):
        if not heap:
            n = sum(len(b.samples) for b in batches)
            raise PlanError(f"{what} has {n} samples in {len(batches)} batches; cannot make the batch count a multiple of "
                            f"world_size x grad_accum = {multiple} without dropping or repeating samples "
                            "(use more data, fewer ranks or less gradient accumulation)")
        piece = heapq.heappop(heap)[3]
        half = len(piece.batch.samples) // 2
        piece.children = (_Piece(PlannedBatch(piece.batch.window, piece.batch.samples[:half])),
                          _Piece(PlannedBatch(piece.batch.window, piece.batch.samples[half:])))
        for child in piece.children:
            if len(child.batch.samples) > 1:
                heapq.heappush(heap, (-child.batch.padded_seconds, -len(child.batch.samples), seq, child))
            seq += 1
    return [b for root in roots for b in root.leaves()]


def _longest_first(batches: list[PlannedBatch], count: int) -> list[PlannedBatch]:
    """Moves the `count` batches with the longest samples (ties: most padded seconds) to the front.

    Every batch is near max_batch_seconds in B x T, so the sequence length T (attention grows with
    T^2) decides peak memory; count = world_size x grad_accum puts them all into the first step.
    """
    weight = lambda i: (max(s.duration for s in batches[i].samples), batches[i].padded_seconds, -i)  # noqa: E731
    top = sorted(range(len(batches)), key=weight, reverse=True)[:count]
    chosen = set(top)
    return [batches[i] for i in top] + [b for i, b in enumerate(batches) if i not in chosen]


def plan_train_epoch(index: DatasetIndex, rules: BatchRules, *, seed: int, epoch: int, world_size: int,
                     grad_accum: int = 1, speed_of: SpeedOf | None = None,
                     weights: dict[str, float] | None = None) -> list[PlannedBatch]:
    """The global list of micro-batches of one training epoch (length a multiple of world_size x grad_accum).

    `weights` (source name -> weight, several data.train sources) draws the epoch's samples by weight
    first (data/mix.py); without it, or with one source, every sample within the duration bounds is used once.
    """
    counts = None
    if weights is not None and len(weights) > 1:
        counts = epoch_counts(index, weights, rules, seed=seed, epoch=epoch)
    rng = _rng(seed, epoch)
    order = rng.permutation(len(index.shards))
    batches: list[PlannedBatch] = []
    pool = rules.megabatch_factor * rules.max_batch_samples
    for w, shard_ids in enumerate(windows(order, rules.bucket_shards)):
        samples = _window_samples(index, shard_ids, rules, speed_of, counts)
        samples = [samples[i] for i in rng.permutation(len(samples))]
        window_batches: list[PlannedBatch] = []
        for chunk in _balanced_chunks(samples, pool):
            window_batches += cut_sorted(_by_duration(chunk), rules, w)
        batches += [window_batches[i] for i in rng.permutation(len(window_batches))]
    if not batches:
        raise PlanError(f"{index.path}: no sample has a duration within data.min_duration..data.max_duration "
                        f"({rules.min_duration}..{rules.max_duration} s)")
    batches = split_to_multiple(batches, world_size * grad_accum, f"epoch {epoch} of {index.path}")
    if rules.longest_first:
        batches = _longest_first(batches, world_size * grad_accum)
    return batches


def plan_eval(index: DatasetIndex, rules: BatchRules, *, world_size: int) -> list[PlannedBatch]:
    """Every eval sample exactly once: windows in index order, sorted by duration (longest first).

    The batch count is made a multiple of world_size when there are enough samples, so every rank
    runs the same number of forward passes (ZeRO-3 gathers parameters collectively in each one).
    """
    batches: list[PlannedBatch] = []
    for w, shard_ids in enumerate(windows(range(len(index.shards)), rules.bucket_shards)):
        samples = _window_samples(index, shard_ids, rules, None)
        batches += cut_sorted(_by_duration(samples), rules, w)
    if sum(len(b.samples) for b in batches) >= world_size:
        try:
            batches = split_to_multiple(batches, world_size, f"eval set {index.path}")
        except PlanError:  # one-utterance batches (unpadded evaluation) cannot be split: ranks differ by one
            pass           # batch, which evaluation handles (ZeRO-3 ranks run a silent forward to keep step)
    return batches


@dataclass
class EpochPosition:
    """Where a training epoch stands; this is what goes into checkpoints.

    `batches_consumed` counts global batches of the epoch's plan (all ranks together), so every rank
    saves the same position. The plan was made for (plan_world_size, plan_grad_accum); each resume on
    another layout re-splits the unconsumed tail and records it in `resplits` as
    [batches_consumed_then, world_size, grad_accum], so the position stays exact through any number
    of layout changes within one epoch.
    """

    epoch: int = 0
    batches_consumed: int = 0
    plan_world_size: int = 1
    plan_grad_accum: int = 1
    resplits: list[list[int]] = field(default_factory=list)

    @property
    def layout(self) -> tuple[int, int]:
        """(world_size, grad_accum) that the current tail is dealt for."""
        if self.resplits:
            return self.resplits[-1][1], self.resplits[-1][2]
        return self.plan_world_size, self.plan_grad_accum

    @property
    def segment_start(self) -> int:
        return self.resplits[-1][0] if self.resplits else 0

    def global_batches(self, plan: list[PlannedBatch]) -> list[PlannedBatch]:
        """Applies the recorded re-splits to the epoch's original plan."""
        for at, world_size, grad_accum in self.resplits:
            plan = plan[:at] + split_to_multiple(plan[at:], world_size * grad_accum, f"epoch {self.epoch} (re-split)")
        return plan

    def moved_to(self, world_size: int, grad_accum: int) -> EpochPosition:
        """The same position, its unconsumed tail re-dealt for a new layout (no-op if unchanged)."""
        if (world_size, grad_accum) == self.layout:
            return self
        resplits = self.resplits + [[self.batches_consumed, world_size, grad_accum]]
        return EpochPosition(self.epoch, self.batches_consumed, self.plan_world_size, self.plan_grad_accum, resplits)

    def rank_batches(self, plan_batches: list[PlannedBatch], rank: int) -> list[PlannedBatch]:
        """This rank's remaining micro-batches, in order."""
        world_size, _ = self.layout
        done = self.batches_consumed - self.segment_start
        if done % world_size:
            raise PlanError(f"position {self.batches_consumed} is not a whole number of rounds over {world_size} ranks")
        return plan_batches[self.batches_consumed + rank::world_size]

    def rank_total(self, plan_batches: list[PlannedBatch], rank: int) -> int:
        """Batches this rank runs in the whole epoch under the current layout (for len())."""
        world_size, _ = self.layout
        start = self.segment_start
        before = 0
        if self.resplits:  # batches of earlier segments are counted as if dealt to this layout (informational)
            before = start // world_size
        return before + len(plan_batches[start + rank::world_size])
