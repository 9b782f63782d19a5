"""Pipeline metrics the trainer logs: padding, throughput, and time the trainer waited for data.

Counted in the process that hands batches to the trainer, over the interval since the last
`take()`: a high `data/wait_fraction` means the model is starved (more workers, or faster storage).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class PipelineStats:
    batches: int = 0
    samples: int = 0
    audio_seconds: float = 0.0
    padded_seconds: float = 0.0
    wait_seconds: float = 0.0
    skipped_samples: int = 0  # corrupt members, or members of tolerated missing shards
    skipped: list = field(default_factory=list)  # (shard, key, reason) of each, for metrics.jsonl
    since: float = field(default_factory=time.perf_counter)

    def add(self, batch, wait_seconds: float, skipped: list[tuple[str, str, str]]) -> None:
        self.batches += 1
        self.samples += len(batch["keys"])
        self.audio_seconds += batch["audio_seconds"]
        self.padded_seconds += batch["padded_seconds"]
        self.wait_seconds += wait_seconds
        self.skipped_samples += len(skipped)
        self.skipped.extend(skipped)

    def take_skipped(self) -> list[tuple[str, str, str]]:
        """The (shard, key, reason) of each sample skipped since the last call."""
        skipped, self.skipped = self.skipped, []
        return skipped

    def take(self) -> dict[str, float]:
        """Metrics over the interval since the last call, then starts a new interval."""
        elapsed = max(time.perf_counter() - self.since, 1e-9)
        out = {
            # share of the computed input that is padding (padding / padded audio)
            "data/padding_fraction": 1.0 - self.audio_seconds / self.padded_seconds if self.padded_seconds else 0.0,
            "data/samples_per_s": self.samples / elapsed,
            "data/audio_s_per_s": self.audio_seconds / elapsed,
            "data/wait_s": self.wait_seconds,
            "data/wait_fraction": self.wait_seconds / elapsed,
            "data/skipped_samples": float(self.skipped_samples),
        }
        skipped = self.skipped  # kept for take_skipped()
        fresh = PipelineStats()
        self.__dict__.update(fresh.__dict__)
        self.skipped = skipped
        return out
