"""metrics.jsonl + TensorBoard through Accelerate: values, resume without duplicates, throughput."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from accelerate import Accelerator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asr_dist.evaluate import score
from asr_dist.metrics import TENSORBOARD_PROJECT, MetricsLogger, ThroughputMeter, read_metrics, truncate_jsonl


def tb_scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run_dir / TENSORBOARD_PROJECT))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def run_logger(run_dir, start_step: int, steps: range, **kw) -> None:
    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(run_dir))
    logger = MetricsLogger(accelerator, run_dir, total_steps=20, start_step=start_step, show_progress=False, **kw)
    for step in steps:
        logger.log({"train/loss": torch.tensor(10.0 / step), "lr/head": 1e-3 * step, "skipped": 0}, step, epoch=step / 4)
    logger.close()


def test_jsonl_lines_and_tensorboard_scalars(tmp_path):
    run_logger(tmp_path, 0, range(1, 4), hparams={"optimizer": {"lr": 1e-3, "betas": [0.9, 0.98]}})
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["kind"] == "train" for r in rows)
    assert rows[1]["train/loss"] == pytest.approx(5.0) and rows[2]["lr/head"] == pytest.approx(3e-3)
    assert rows[2]["epoch"] == 0.75 and rows[0]["time"] <= rows[2]["time"]
    assert tb_scalars(tmp_path, "train/loss") == [(1, pytest.approx(10.0)), (2, pytest.approx(5.0)),
                                                  (3, pytest.approx(10 / 3))]


def test_resume_drops_later_lines_and_hides_them_in_tensorboard(tmp_path):
    run_logger(tmp_path, 0, range(1, 11))  # the run got to step 10, its last checkpoint is step 6
    time.sleep(1.1)  # TensorBoard names event files by the second
    run_logger(tmp_path, 6, range(7, 9))
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [s for s, _ in tb_scalars(tmp_path, "train/loss")] == [1, 2, 3, 4, 5, 6, 7, 8]
    time.sleep(1.1)
    run_logger(tmp_path, 0, range(1, 2))  # a fresh run in the same folder starts a fresh file
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_truncate_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "x": 1}\n{"step": 2, "x": 2}\n{"step": 3, "x"')  # killed mid-write
    assert truncate_jsonl(path, keep_through_step=5) == 1
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_non_finite_values_are_null_in_json_and_eval_lines_carry_examples(tmp_path):
    accelerator = Accelerator(cpu=True)  # no tracker: metrics.jsonl only
    logger = MetricsLogger(accelerator, tmp_path, show_progress=False)
    logger.log({"train/loss": float("inf"), "train/grad_norm": torch.tensor(float("nan"))}, step=1)
    recs = [{"key": "a", "ref": "HELLO WORLD", "hyp": "HELLO WORD", "subset": "spk1", "loss": 2.0, "tokens": 11}]
    logger.log_eval(score(recs, num_examples=1), step=1)
    logger.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    train, ev = (json.loads(line) for line in lines)  # strict JSON: no NaN/Infinity literals
    assert "NaN" not in lines[0] and train["train/loss"] is None and train["train/grad_norm"] is None
    assert ev["kind"] == "eval" and ev["eval/wer"] == pytest.approx(0.5) and ev["eval/wer/spk1"] == pytest.approx(0.5)
    assert ev["examples"] == [{"key": "a", "ref": "HELLO WORLD", "hyp": "HELLO WORD"}]


def test_progress_bar_counts_from_the_resume_step(tmp_path, capsys):
    logger = MetricsLogger(Accelerator(cpu=True), tmp_path, total_steps=10, start_step=4)
    logger.progress(2, loss=torch.tensor(1.5))
    assert logger.bar.n == 6 and logger.bar.total == 10
    logger.write("hello from the trainer")
    logger.close()
    captured = capsys.readouterr()
    assert "hello from the trainer" in captured.out and "6/10" in captured.err


def test_throughput_meter_window(tmp_path):
    accelerator = Accelerator(cpu=True)
    meter = ThroughputMeter()
    t0 = time.perf_counter()
    meter.add_batch(audio_seconds=30.0, padded_seconds=40.0, data_wait_seconds=0.0)
    time.sleep(0.2)
    meter.add_batch(audio_seconds=10.0, padded_seconds=10.0, data_wait_seconds=0.1)
    t1 = time.perf_counter()
    out = meter.summary(accelerator)
    elapsed_max = time.perf_counter() - t0 + 1e-3
    assert out["padding_fraction"] == pytest.approx(0.2)  # 10 of 50 padded seconds are padding
    assert 40.0 / elapsed_max <= out["audio_sec_per_sec"] <= 40.0 / (t1 - t0)
    assert 0.1 / elapsed_max <= out["data_wait_fraction"] <= 0.1 / (t1 - t0)
    assert meter.summary(accelerator)["audio_sec_per_sec"] == 0.0  # a new window
    assert math.isfinite(out["audio_sec_per_sec"])
