"""The epoch plan at corpus scale: the same plan as plan.py, computed on flat arrays.

plan.py builds one Python object per sample from a parsed index.json: about 2.6 GB and 25 s per 1 M
utterances on every rank (benchmarks/plan_scale.py). At 10,000 hours (3.5 M utterances) a rank must read
the index and plan in <= 10 s and <= 1 GB, so this module keeps what planning needs, and only that, in
arrays (a `FlatIndex`: shard boundaries, durations, keys as one byte blob), stored as `index.npz` next to
index.json (transcripts stay in index.json and in every sample's .json member: the plan never needs them).

`plan_epoch` follows plan.plan_train_epoch step by step, consuming the same random numbers, so the two
produce identical batches (tests/test_flat_plan.py); a plan is a permutation of sample ids plus batch
boundaries, and only one rank's batches are turned into PlannedBatch objects (`rank_batches`).
"""

from __future__ import annotations

import heapq
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_dist.data.index import DatasetIndex
from asr_dist.data.plan import BatchRules, PlanError, PlannedBatch, PlannedSample, _rng, windows

FLAT_NAME = "index.npz"


@dataclass(frozen=True)
class FlatIndex:
    shard_names: tuple[str, ...]
    offsets: np.ndarray  # int64, len(shards) + 1: shard i holds sample ids offsets[i]:offsets[i+1]
    durations: np.ndarray  # float64 seconds, one per sample id (index order)
    key_bytes: np.ndarray  # uint8: every key's UTF-8 bytes, concatenated
    key_offsets: np.ndarray  # int64, num_samples + 1
    sample_rate: int = 16000

    @property
    def num_samples(self) -> int:
        return len(self.durations)

    def key(self, i: int) -> str:
        return self.key_bytes[self.key_offsets[i]:self.key_offsets[i + 1]].tobytes().decode()

    def shard_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, ids, side="right") - 1

    @classmethod
    def from_index(cls, index: DatasetIndex) -> FlatIndex:
        keys = [s.key.encode() for shard in index.shards for s in shard.samples]
        return cls.build([s.name for s in index.shards], [len(s.samples) for s in index.shards],
                         np.array([s.duration for shard in index.shards for s in shard.samples], np.float64),
                         keys, index.sample_rate)

    @classmethod
    def build(cls, shard_names, shard_sizes, durations, keys: list[bytes], sample_rate: int = 16000) -> FlatIndex:
        lengths = np.fromiter((len(k) for k in keys), np.int64, len(keys))
        return cls(tuple(shard_names), np.concatenate([[0], np.cumsum(shard_sizes)]).astype(np.int64),
                   np.asarray(durations, np.float64), np.frombuffer(b"".join(keys), np.uint8),
                   np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), sample_rate)

    @classmethod
    def from_index_dict(cls, index: dict) -> FlatIndex:
        """From index.json's content (what `asr-dist prepare` writes)."""
        shards = index["shards"]
        return cls.build([s["name"] for s in shards], [len(s["samples"]) for s in shards],
                         np.array([x["duration"] for s in shards for x in s["samples"]], np.float64),
                         [x["key"].encode() for s in shards for x in s["samples"]], int(index["sample_rate"]))

    def save(self, path: str | Path, json_sha256: str = "") -> None:
        """Writes `path` atomically; `json_sha256` ties it to the index.json it was made from."""
        tmp = Path(str(path) + ".tmp.npz")
        np.savez(tmp, shard_names=np.array(self.shard_names), offsets=self.offsets, durations=self.durations,
                 key_bytes=self.key_bytes, key_offsets=self.key_offsets, sample_rate=np.int64(self.sample_rate),
                 json_sha256=np.array(json_sha256))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> FlatIndex:
        with np.load(path, allow_pickle=False) as z:
            return cls(tuple(str(n) for n in z["shard_names"]), z["offsets"], z["durations"], z["key_bytes"],
                       z["key_offsets"], int(z["sample_rate"]))

    @classmethod
    def load_for(cls, folder: str | Path) -> FlatIndex | None:
        """FOLDER/index.npz when it was made from FOLDER/index.json as it is now (else None: plan from the json)."""
        npz, js = Path(folder) / FLAT_NAME, Path(folder) / "index.json"
        if not npz.is_file() or not js.is_file():
            return None
        with np.load(npz, allow_pickle=False) as z:
            digest = str(z["json_sha256"]) if "json_sha256" in z.files else ""
        return cls.load(npz) if digest and digest == sha256_of(js) else None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_flat_index(folder: str | Path, index: dict) -> Path:
    """FOLDER/index.npz for the index.json just written there (asr_dist/shards/writer.py)."""
    path = Path(folder) / FLAT_NAME
    FlatIndex.from_index_dict(index).save(path, sha256_of(Path(folder) / "index.json"))
    return path


@dataclass
class FlatPlan:
    """An epoch's global batches: batch b is flat_index ids[bounds[b]:bounds[b+1]], read from window windows[b]."""

    ids: np.ndarray
    bounds: np.ndarray
    windows: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)


def _cut(sorted_durations: list[float], rules: BatchRules) -> list[int]:
    """plan.cut_sorted on durations sorted longest first: the start of every batch."""
    starts, n, longest = [], 0, 0.0
    for i, d in enumerate(sorted_durations):
        if n and (n + 1 > rules.max_batch_samples or (n + 1) * longest > rules.max_batch_seconds):
            n = 0
        if n == 0:
            starts.append(i)
            longest = d
        n += 1
    return starts


def plan_epoch(flat: FlatIndex, rules: BatchRules, *, seed: int, epoch: int, world_size: int, grad_accum: int = 1,
               counts: np.ndarray | None = None) -> FlatPlan:
    """plan.plan_train_epoch without speed perturbation; `counts` (per sample id) as mix.epoch_counts draws."""
    d = flat.durations
    times = counts if counts is not None else \
        ((d >= rules.min_duration) & (d <= rules.max_duration)).astype(np.int64)
    rng = _rng(seed, epoch)
    order = rng.permutation(len(flat.shard_names))
    pool = rules.megabatch_factor * rules.max_batch_samples
    pieces: list[np.ndarray] = []  # each a batch's ids, sorted longest first, in plan order
    piece_windows: list[int] = []
    for w, shard_ids in enumerate(windows(order, rules.bucket_shards)):
        spans = [np.arange(flat.offsets[s], flat.offsets[s + 1]) for s in shard_ids]
        ids = np.concatenate([np.repeat(span, times[span]) for span in spans]) if spans else np.zeros(0, np.int64)
        ids = ids[rng.permutation(len(ids))]
        count = -(-len(ids) // pool)
        edges = np.linspace(0, len(ids), count + 1).round().astype(int) if count else [0]
        batches: list[np.ndarray] = []
        for a, b in zip(edges[:-1], edges[1:]):
            chunk = ids[a:b]
            chunk = chunk[np.argsort(-d[chunk], kind="stable")]
            starts = _cut(d[chunk].tolist(), rules) + [len(chunk)]
            batches += [chunk[s:e] for s, e in zip(starts[:-1], starts[1:])]
        pieces += [batches[i] for i in rng.permutation(len(batches))]
        piece_windows += [w] * len(batches)
    if not pieces:
        raise PlanError(f"no sample has a duration within data.min_duration..data.max_duration "
                        f"({rules.min_duration}..{rules.max_duration} s)")
    pieces, piece_windows = _split_to_multiple(pieces, piece_windows, d, world_size * grad_accum)
    if rules.longest_first:
        pieces, piece_windows = _longest_first(pieces, piece_windows, d, world_size * grad_accum)
    lengths = np.fromiter((len(p) for p in pieces), np.int64, len(pieces))
    return FlatPlan(np.concatenate(pieces), np.concatenate([[0], np.cumsum(lengths)]), np.asarray(piece_windows))


def _split_to_multiple(pieces, piece_windows, d, multiple):
    """plan.split_to_multiple on id arrays (same heap order, halves adjacent)."""
    need = (-len(pieces)) % multiple
    if need == 0:
        return pieces, piece_windows
    padded = lambda p: len(p) * float(d[p[0]])  # noqa: E731 - sorted longest first: the first is the longest
    children: dict[int, tuple[int, int]] = {}
    nodes = list(pieces)
    heap = [(-padded(p), -len(p), seq, seq) for seq, p in enumerate(pieces) if len(p) > 1]
    heapq.heapify(heap)
    for _ in range(need):
        if not heap:
            raise PlanError(f"cannot make the batch count a multiple of world_size x grad_accum = {multiple} "
                            "without dropping or repeating samples")
        node = heapq.heappop(heap)[3]
        half = len(nodes[node]) // 2
        kids = []
        for part in (nodes[node][:half], nodes[node][half:]):
            nodes.append(part)
            kids.append(len(nodes) - 1)
            if len(part) > 1:
                heapq.heappush(heap, (-padded(part), -len(part), kids[-1], kids[-1]))
        children[node] = tuple(kids)

    def leaves(node):
        if node not in children:
            yield node
        else:
            for kid in children[node]:
                yield from leaves(kid)

    out, out_windows = [], []
    for root in range(len(pieces)):
        for leaf in leaves(root):
            out.append(nodes[leaf])
            out_windows.append(piece_windows[root])
    return out, out_windows


def _longest_first(pieces, piece_windows, d, count):
    weight = lambda i: (float(d[pieces[i][0]]), len(pieces[i]) * float(d[pieces[i][0]]), -i)  # noqa: E731
    top = sorted(range(len(pieces)), key=weight, reverse=True)[:count]
    chosen = set(top)
    rest = [i for i in range(len(pieces)) if i not in chosen]
    return [pieces[i] for i in top + rest], [piece_windows[i] for i in top + rest]


def rank_batches(flat: FlatIndex, plan: FlatPlan, rank: int, world_size: int) -> list[PlannedBatch]:
    """This rank's batches as plan.PlannedBatch objects (global batch i goes to rank i % world_size)."""
    mine = range(rank, len(plan), world_size)
    ids = np.concatenate([plan.ids[plan.bounds[b]:plan.bounds[b + 1]] for b in mine]) if mine else np.zeros(0, int)
    blob, starts, ends = flat.key_bytes.tobytes(), flat.key_offsets[ids].tolist(), flat.key_offsets[ids + 1].tolist()
    samples = [PlannedSample(s, blob[a:e].decode(), d) for s, a, e, d in
               zip(flat.shard_of(ids).tolist(), starts, ends, flat.durations[ids].tolist())]
    out, at = [], 0
    for b in mine:
        n = int(plan.bounds[b + 1] - plan.bounds[b])
        out.append(PlannedBatch(int(plan.windows[b]), tuple(samples[at:at + n])))
        at += n
    return out
