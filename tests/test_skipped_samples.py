"""Corrupt samples met during training are skipped, and each one reaches metrics.jsonl and the run report with
its shard, key and reason (from whichever rank read it)."""

from __future__ import annotations

import json
import shutil

import pytest

from test_loader import corrupt_member
from test_train import launch


@pytest.mark.slow
def test_corrupt_samples_reach_metrics_and_report_with_their_keys(tiny_shards, tmp_path):
    from asr_dist.report import write_report

    train = tmp_path / "train"
    shutil.copytree(tiny_shards.train, train)
    victims = [corrupt_member(train, 0, 0), corrupt_member(train, 3, 1)]
    shards = type(tiny_shards)(train=train, dev=tiny_shards.dev, processor=train / "processor")
    run_dir = tmp_path / "run"
    proc = launch("ddp", run_dir, shards, ["train.max_steps=100", "train.max_epochs=1", "train.log_every=3",
                                           "checkpoint.every_steps=0"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [tuple(s[:2]) for r in rows for s in r.get("data/skipped", [])]
    assert sorted(logged) == sorted(victims)
    assert sum(r.get("data/skipped_samples", 0) for r in rows) == 2
    report = write_report(run_dir).read_text()
    assert "| samples skipped (unreadable or corrupt) | 2 |" in report
    for shard, key in victims:
        assert f"| {shard} | {key} |" in report
