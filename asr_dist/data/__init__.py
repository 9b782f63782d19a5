"""Streaming data pipeline: index.json -> pure epoch plan -> decoded, collated batches.

index.py   reads and validates index.json, maps shard names to URLs
plan.py    the epoch plan: a pure function of (seed, epoch, world size, grad accumulation)
mix.py     several weighted training sources (data.train): what an epoch draws from each, the mix counter
flat_plan.py the same plan on flat arrays (index.npz) for corpora of millions of utterances
augment.py speed / noise / gain, deterministic per (seed, epoch, key)
batch.py   the Batch contract and collation (the run's processor normalizes and tokenizes)
loader.py  shard reading and decoding in DataLoader workers; TrainLoader (resumable), EvalLoader
stats.py   padding, throughput and data-wait metrics
"""

from asr_dist.data.batch import Batch
from asr_dist.data.loader import EvalLoader, TrainLoader, build_eval_loader, build_train_loader

__all__ = ["Batch", "EvalLoader", "TrainLoader", "build_eval_loader", "build_train_loader"]
