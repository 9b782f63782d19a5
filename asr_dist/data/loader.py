"""Reads the planned batches from the shards: the resumable train loader and the eval loader.

Per rank, a torch DataLoader runs an IterableDataset whose worker w produces this rank's batches
j with j % num_workers == w, in order. torch's DataLoader takes worker outputs round-robin, so the
batches reach the trainer exactly in plan order (checked on every batch).

A worker handles its batches window by window (see plan.py): it streams the shards of the window
once with webdataset's tar reader (so local paths, `file:` and `pipe:` URLs all work), keeps the
raw bytes of only the keys it needs — selected by member name before anything is decoded — then
decodes FLAC with soundfile (JSON metadata with json; nothing is ever unpickled), augments,
normalizes and collates. A resume starts at the current window: time to the first batch does not
grow with the position in the epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import tarfile
import time
from collections import defaultdict
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.gopen import Pipe, gopen
from webdataset.tariterators import base_plus_ext, tar_file_iterator

from asr_dist.audio import read_audio
from asr_dist.data.alignable import drop_unalignable
from asr_dist.data.augment import Augmenter
from asr_dist.data.batch import Batch, DecodedSample, collate
from asr_dist.data.index import DatasetIndex, is_local, load_index, local_path
from asr_dist.data.mix import MixCounter, combine, log_shares, open_sources
from asr_dist.data.plan import BatchRules, EpochPosition, PlannedBatch, plan_eval, plan_train_epoch
from asr_dist.data.stats import PipelineStats

log = logging.getLogger(__name__)


class ShardReadError(OSError):
    """A shard that cannot be opened or read (the message names it)."""


# ----------------------------------------------------------------------------- reading and decoding


def read_members(url: str, keys: set[str]) -> dict[str, dict[str, bytes]]:
    """Raw bytes of the members of `keys` in one shard: {key: {"flac": ..., "json": ...}}.

    Members of other keys are skipped by name without being kept; reading stops early once every
    wanted key has its audio and metadata.
    """
    found: dict[str, dict[str, bytes]] = defaultdict(dict)
    complete, stopped_early = 0, False
    try:
        stream = _open_pipe(url) if url.startswith("pipe:") else gopen(url)
    except Exception as exc:  # noqa: BLE001 - any opener failure is reported with the file name
        raise ShardReadError(f"{url}: cannot open shard: {exc}") from exc
    try:
        wanted = lambda fname: base_plus_ext(fname)[0] in keys  # noqa: E731
        for member in tar_file_iterator(stream, select_files=wanted):
            key, ext = base_plus_ext(member["fname"])
            parts = found[key]
            parts[ext.lower()] = member["data"]
            if ext.lower() in ("flac", "json") and "flac" in parts and "json" in parts:
                complete += 1
                if complete == len(keys):
                    stopped_early = True
                    break
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise ShardReadError(f"{url}: cannot read shard: {exc}") from exc
    finally:
        try:
            stream.close()  # a `pipe:` command reports its exit status here
        except Exception as exc:  # noqa: BLE001
            if not stopped_early:  # after an early stop the command may just have lost its reader (SIGPIPE)
                raise ShardReadError(f"{url}: cannot read shard: {exc}") from exc
    return found


def _ignore_stop_signals() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _open_pipe(url: str) -> Pipe:
    """webdataset's `pipe:` opener, except that the command ignores SIGUSR2/SIGTERM.

    Slurm sends its stop signal to every process of the job step; a `curl`/`aws s3 cp` that died of it
    would turn the trainer's graceful stop into a shard-read crash. An ignored signal stays ignored across
    the shell's exec, so the command keeps streaming while the trainer saves at the next step boundary.
    """
    return Pipe(url[len("pipe:"):], mode="rb", shell=True, bufsize=8192, ignore_status=[141],
                preexec_fn=_ignore_stop_signals)


# ----------------------------------------------------------------------------- the worker side


class _PlannedBatchStream(IterableDataset):
    """Yields (position, batch, skipped) for this DataLoader worker's share of the rank's batches."""

    def __init__(self, batches: list[PlannedBatch], index: DatasetIndex, processor, augmenter: Augmenter | None,
                 *, epoch: int, sample_rate: int, tolerate_missing_shards: bool, pad_multiple: int = 0):
        self.batches, self.index, self.processor, self.augmenter = batches, index, processor, augmenter
        self.epoch, self.sample_rate, self.tolerate = epoch, sample_rate, tolerate_missing_shards
        self.pad_multiple = pad_multiple
        self.info = {s.key: (s, shard.name) for shard in index.shards for s in shard.samples}

    def __iter__(self):
        worker = get_worker_info()
        w, n = (worker.id, worker.num_workers) if worker else (0, 1)
        mine = list(range(w, len(self.batches), n))
        start = 0
        while start < len(mine):  # one run of consecutive batches from the same window at a time
            end = start
            while end < len(mine) and self.batches[mine[end]].window == self.batches[mine[start]].window:
                end += 1
            members, skipped = self._read_window([self.batches[j] for j in mine[start:end]])
            for j in mine[start:end]:
                yield self._assemble(j, members, skipped)
            start = end

    def _read_window(self, batches: list[PlannedBatch]):
        wanted: dict[int, set[str]] = defaultdict(set)
        for b in batches:
            for s in b.samples:
                wanted[s.shard].add(s.key)
        members: dict[str, dict[str, bytes]] = {}
        skipped: dict[str, str] = {}  # key -> reason
        self._uses = defaultdict(int)  # a key drawn several times (up-sampled source) is freed at its last use
        for b in batches:
            for s in b.samples:
                self._uses[s.key] += 1
        for shard_id, keys in wanted.items():
            url = self.index.shards[shard_id].url
            try:
                members.update(read_members(url, keys))
            except ShardReadError as exc:
                if not self.tolerate:
                    raise
                skipped.update({k: f"shard unreadable ({exc})" for k in keys})
        return members, skipped

    def _assemble(self, j: int, members, skipped_in_window):
        planned = self.batches[j]
        samples, skipped = [], []
        for s in planned.samples:
            info, shard = self.info[s.key]
            try:
                if s.key in skipped_in_window:
                    raise ValueError(skipped_in_window[s.key])
                self._uses[s.key] -= 1
                parts = members.get(s.key, {}) if self._uses[s.key] > 0 else members.pop(s.key, {})  # free at last use
                if "flac" not in parts:
                    raise ValueError("no .flac member in the shard")
                wave = read_audio(parts["flac"], self.sample_rate)
                meta = json.loads(parts["json"]) if "json" in parts else {"text": info.text, "speaker": info.speaker}
                if not isinstance(meta, dict):
                    raise ValueError(".json member is not an object")
            except Exception as exc:  # noqa: BLE001 - soundfile/json errors: skip the member, report it
                skipped.append((shard, s.key, str(exc)))
                continue
            if self.augmenter is not None:
                wave = self.augmenter(wave, epoch=self.epoch, key=s.key)
            meta = {**meta, "shard": shard}
            samples.append(DecodedSample(s.key, wave, info.text, meta))
        if not samples:  # e.g. a one-sample batch whose member is corrupt: keep the step, without data
            return j, silence_batch(self.processor, self.sample_rate), skipped
        return j, collate(samples, self.processor, self.sample_rate, self.pad_multiple), skipped


def silence_batch(processor, sample_rate: int) -> Batch:
    """Stands in for a planned batch whose every sample was lost (corrupt members, or a shard left out
    under data.tolerate_missing_shards): one second of silence, an empty transcript and no keys.
    Every rank still runs the same steps (a skipped step would hang the others' collectives), and
    CTC on silence with no target only teaches blanks."""
    batch = collate([DecodedSample("", np.zeros(sample_rate, np.float32), "", {})], processor, sample_rate)
    batch.update(keys=[], meta=[], audio_seconds=0.0)
    return batch


# Signals a scheduler or a user sends to stop a job (stop.py turns them into a checkpoint and a clean exit).
# DataLoader workers must not die of them: Slurm and preemption signal every process of the job, and a worker
# killed by SIGTERM makes the trainer raise instead of saving. Workers ignore them; the trainer shuts them down.
WORKER_IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


def _worker_init(_: int) -> None:
    for sig in WORKER_IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    # Blocked by _start_workers across the fork; once ignored, a signal that arrived meanwhile is discarded.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_IGNORED_SIGNALS)
    torch.set_num_threads(1)  # decoding is per-sample work: one thread per worker avoids oversubscription


def _start_workers(loader: DataLoader):
    """iter(loader) with the stop signals blocked while the workers are forked, so that no worker can die of
    one before _worker_init ignores it; the trainer's process gets any signal that came meanwhile afterwards."""
    if not loader.num_workers:
        return iter(loader)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_IGNORED_SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _stream_batches(dataset: _PlannedBatchStream, num_workers: int, stats: PipelineStats) -> Iterator[Batch]:
    workers = min(num_workers, len(dataset.batches))
    # Our own generator: a DataLoader draws its base seed from the global torch generator otherwise, and a
    # resumed run (which builds a DataLoader mid-epoch) would then shift every later dropout mask.
    # The workers draw no random numbers of their own (augmentation is seeded per sample), so a fixed seed.
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, worker_init_fn=_worker_init if workers else None,
                        collate_fn=None, generator=torch.Generator().manual_seed(0),
                        pin_memory=torch.cuda.is_available())  # page-locked batches: non-blocking copies to the GPU
    it = _start_workers(loader)
    expected = 0
    try:
        while True:
            t0 = time.perf_counter()
            try:
                j, batch, skipped = next(it)
            except StopIteration:
                break
            wait = time.perf_counter() - t0
            if j != expected:
                raise RuntimeError(f"batch {j} arrived where batch {expected} was planned (worker order broken)")
            expected += 1
            for shard, key, reason in skipped:
                log.warning("skipped sample %s of shard %s: %s", key, shard, reason)
            stats.add(batch, wait, skipped)
            yield batch
    finally:
        del it  # the last reference: its workers are shut down now, also when the trainer closes us early
    if expected != len(dataset.batches):
        raise RuntimeError(f"the loader produced {expected} of {len(dataset.batches)} planned batches")


# ----------------------------------------------------------------------------- the loaders


def _open_index(shards: str, index_path: str, tolerate: bool, what: str) -> DatasetIndex:
    """Loads the index and checks local shards exist up front: a missing one is an error naming it,
    or (data.tolerate_missing_shards) is left out of the plan with a warning."""
    index = load_index(shards, index_path)
    missing = [s for s in index.shards if is_local(s.url) and not os.access(local_path(s.url), os.R_OK)]
    if missing:
        names = ", ".join(s.url for s in missing)
        if not tolerate:
            raise ShardReadError(f"{what}: missing or unreadable shard(s): {names} "
                                 "(set data.tolerate_missing_shards=true to train without them)")
        log.warning("%s: leaving out %d missing shard(s) (%d samples): %s", what, len(missing),
                    sum(len(s.samples) for s in missing), names)
        index = index.without_shards({s.name for s in missing})
    return index


class TrainLoader:
    """This rank's training batches, epoch after epoch, resumable at any optimizer-step boundary.

    Iterating yields the rest of the current epoch; when it is exhausted the loader moves to the next
    epoch. The position counts batches handed to the trainer (not prefetched ones).
    """

    def __init__(self, index: DatasetIndex, rules: BatchRules, processor, augmenter: Augmenter, *, seed: int,
                 rank: int, world_size: int, grad_accum: int, num_workers: int, sample_rate: int,
                 tolerate_missing_shards: bool = False, pad_multiple: int = 0,
                 weights: dict[str, float] | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.index, self.rules, self.processor, self.augmenter = index, rules, processor, augmenter
        self.seed, self.rank, self.world_size, self.grad_accum = seed, rank, world_size, grad_accum
        self.num_workers, self.sample_rate, self.tolerate = num_workers, sample_rate, tolerate_missing_shards
        self.pad_multiple = pad_multiple
        self.position = EpochPosition(0, 0, world_size, grad_accum)
        self.stats = PipelineStats()
        self.weights = weights  # several data.train sources: name -> weight (data/mix.py)
        self.mix = MixCounter(index, rules, weights)
        self._plan_cache: tuple[int, list[PlannedBatch]] | None = None
        self._forever: Iterator[Batch] | None = None

    # -- the plan
    def epoch_plan(self, epoch: int, world_size: int, grad_accum: int) -> list[PlannedBatch]:
        speed_of = (lambda key: self.augmenter.speed_factor(epoch, key)) if self.augmenter.changes_durations else None
        return plan_train_epoch(self.index, self.rules, seed=self.seed, epoch=epoch, world_size=world_size,
                                grad_accum=grad_accum, speed_of=speed_of, weights=self.weights)

    def _global_batches(self) -> list[PlannedBatch]:
        p = self.position
        cache_key = (p.epoch, p.plan_world_size, p.plan_grad_accum, tuple(map(tuple, p.resplits)))
        if self._plan_cache is None or self._plan_cache[0] != cache_key:
            plan = self.epoch_plan(p.epoch, p.plan_world_size, p.plan_grad_accum)
            self._plan_cache = (cache_key, p.global_batches(plan))
        return self._plan_cache[1]

    @property
    def epoch(self) -> int:
        return self.position.epoch

    def __len__(self) -> int:
        """Batches this rank runs in the current epoch (the first epoch after a re-split: from its start)."""
        return self.position.rank_total(self._global_batches(), self.rank)

    def remaining(self) -> list[PlannedBatch]:
        return self.position.rank_batches(self._global_batches(), self.rank)

    # -- iteration
    def __iter__(self) -> Iterator[Batch]:
        if not self.remaining():
            self._next_epoch()
        dataset = _PlannedBatchStream(self.remaining(), self.index, self.processor, self.augmenter,
                                      epoch=self.epoch, sample_rate=self.sample_rate,
                                      tolerate_missing_shards=self.tolerate, pad_multiple=self.pad_multiple)
        for batch in _stream_batches(dataset, self.num_workers, self.stats):
            world = self.position.layout[0]
            plan, at = self._global_batches(), self.position.batches_consumed
            self.mix.add(plan[at:at + world])  # every rank counts the whole round: the same totals everywhere
            self.position.batches_consumed += world
            yield batch
        self._next_epoch()

    def forever(self) -> Iterator[Batch]:
        """The trainer's stream: batches epoch after epoch. close() ends it and shuts down its workers."""
        def batches():
            while True:
                yield from self

        self._forever = batches()
        return self._forever

    def close(self) -> None:
        if self._forever is not None:
            self._forever.close()
            self._forever = None

    @property
    def progress(self) -> float:
        """Epochs done, with the current one's consumed share (1.5 = half-way through the second epoch)."""
        total = len(self._global_batches())
        return self.position.epoch + (self.position.batches_consumed / total if total else 0.0)

    def _next_epoch(self) -> None:
        self.position = EpochPosition(self.position.epoch + 1, 0, self.world_size, self.grad_accum)

    def metrics(self) -> dict[str, float]:
        return self.stats.take()

    def mix_metrics(self) -> dict[str, float]:
        """Samples and audio hours trained on per source so far (all ranks), and what was left out by duration."""
        return self.mix.metrics()

    # -- state
    def _fingerprint(self) -> str:
        r, a = self.rules, self.augmenter.cfg
        speeds = sorted(a.speed_factors) if self.augmenter.changes_durations else []
        return f"{self.index.fingerprint()}:{r.max_batch_seconds}:{r.max_batch_samples}:{r.bucket_shards}:" \
               f"{r.megabatch_factor}:{r.longest_first}:{r.min_duration}:{r.max_duration}:{speeds}" + \
               (f":{sorted(self.weights.items())}" if self.weights and len(self.weights) > 1 else "")

    def state_dict(self) -> dict:
        p = self.position
        return {"epoch": p.epoch, "batches_consumed": p.batches_consumed, "plan_world_size": p.plan_world_size,
                "plan_grad_accum": p.plan_grad_accum, "resplits": [list(r) for r in p.resplits],
                "seed": self.seed, "fingerprint": self._fingerprint(), "mix": self.mix.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continues where `state` left off, on this loader's world size and accumulation."""
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"train loader state was saved with seed {state['seed']}, this run has {self.seed}: "
                             "the epoch's order would differ")
        if state.get("fingerprint", self._fingerprint()) != self._fingerprint():
            raise ValueError("train loader state was saved for other data or batching settings (index.json, "
                             "data.max_batch_seconds/max_batch_samples/bucket_shards/megabatch_factor/longest_first/"
                             "min_duration/max_duration or augment.speed_factors changed): exact resume is impossible")
        position = EpochPosition(int(state["epoch"]), int(state["batches_consumed"]), int(state["plan_world_size"]),
                                 int(state.get("plan_grad_accum", 1)), [list(r) for r in state.get("resplits", [])])
        self.position = position.moved_to(self.world_size, self.grad_accum)
        self.mix.load_state_dict(state.get("mix", {}))
        if self.position is not position:
            log.info("resuming epoch %d at batch %d on %d rank(s) x %d accumulation (plan made for %d x %d): "
                     "the rest of the epoch is re-split", position.epoch, position.batches_consumed, self.world_size,
                     self.grad_accum, *position.layout)


class EvalLoader:
    """This rank's share of the eval set: every sample exactly once over all ranks, no duplicates.

    Ranks get the same number of batches whenever there are at least world_size samples; results are
    gathered once at the end (accelerate's gather_object), not per batch.
    """

    def __init__(self, index: DatasetIndex, rules: BatchRules, processor, *, rank: int, world_size: int,
                 num_workers: int, sample_rate: int, tolerate_missing_shards: bool = False, pad_multiple: int = 0):
        self.index, self.processor, self.num_workers, self.sample_rate = index, processor, num_workers, sample_rate
        self.tolerate, self.pad_multiple = tolerate_missing_shards, pad_multiple
        self.batches = plan_eval(index, rules, world_size=world_size)[rank::world_size]
        self.stats = PipelineStats()

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def num_samples(self) -> int:
        return sum(len(b.samples) for b in self.batches)

    def __iter__(self) -> Iterator[Batch]:
        dataset = _PlannedBatchStream(self.batches, self.index, self.processor, None, epoch=0,
                                      sample_rate=self.sample_rate, tolerate_missing_shards=self.tolerate,
                                      pad_multiple=self.pad_multiple)
        yield from _stream_batches(dataset, self.num_workers, self.stats)


def _check_processor(processor, sample_rate: int) -> None:
    rate = getattr(processor.feature_extractor, "sampling_rate", sample_rate)
    if rate != sample_rate:
        raise ValueError(f"data.sample_rate = {sample_rate} but the processor's feature extractor expects {rate} Hz")


def build_train_loader(data_cfg, processor, *, seed: int, rank: int, world_size: int, grad_accum: int,
                       frames_for=None) -> TrainLoader:
    """`frames_for` (samples -> the model's output frames, families.frames_for_samples): samples the model
    cannot align under CTC are left out of the plan, counted and logged (data/alignable.py)."""
    _check_processor(processor, data_cfg.sample_rate)
    index, weights = open_train_sources(data_cfg)
    if frames_for is not None:
        index, _ = drop_unalignable(index, frames_for)
    augmenter = Augmenter(data_cfg.augment, seed=seed, sample_rate=data_cfg.sample_rate)
    return TrainLoader(index, BatchRules.from_config(data_cfg), processor, augmenter, seed=seed, rank=rank,
                       world_size=world_size, grad_accum=grad_accum, num_workers=data_cfg.num_workers,
                       sample_rate=data_cfg.sample_rate, tolerate_missing_shards=data_cfg.tolerate_missing_shards,
                       pad_multiple=_pad_multiple(data_cfg), weights=weights)


def open_train_sources(data_cfg) -> tuple[DatasetIndex, dict[str, float]]:
    """data.train's sources (or data.train_shards as one) as one index plus their weights; a missing shard or
    bad index is an error naming the source. Logs each source's share and what the duration bounds leave out."""
    if not data_cfg.train:  # the plain train_shards: one source, messages as before
        index = _open_index(data_cfg.train_shards, data_cfg.train_index, data_cfg.tolerate_missing_shards,
                            "train shards")
        index, weights = combine([("train", index)]), {"train": 1.0}
    else:
        index, weights = open_sources(data_cfg.train, lambda shards, index_path, what: _open_index(
            shards, index_path, data_cfg.tolerate_missing_shards, what))
    log_shares(index, weights, BatchRules.from_config(data_cfg))
    return index, weights


def build_eval_loader(data_cfg, processor, *, rank: int, world_size: int, unpadded: bool = False) -> EvalLoader:
    """`unpadded`: one utterance per batch, no padding (for models whose outputs padding changes:
    model.padding_changes_outputs), so that scores do not depend on which utterances shared a batch."""
    _check_processor(processor, data_cfg.sample_rate)
    index = _open_index(data_cfg.eval_shards, data_cfg.eval_index, data_cfg.tolerate_missing_shards, "eval shards")
    rules = BatchRules.from_config(data_cfg)
    rules = BatchRules(**{**rules.__dict__, "min_duration": 0.0, "max_duration": math.inf})  # evaluate everything
    pad_multiple = _pad_multiple(data_cfg)
    if unpadded:
        rules = BatchRules(**{**rules.__dict__, "max_batch_samples": 1})
        pad_multiple = 0
    return EvalLoader(index, rules, processor, rank=rank, world_size=world_size, num_workers=data_cfg.num_workers,
                      sample_rate=data_cfg.sample_rate, tolerate_missing_shards=data_cfg.tolerate_missing_shards,
                      pad_multiple=pad_multiple)


def _pad_multiple(data_cfg) -> int:
    return round(data_cfg.pad_to_multiple_seconds * data_cfg.sample_rate)
