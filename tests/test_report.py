"""The run report: report.md carries the run's final numbers, and its plots are real images with curves."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from matplotlib.image import imread

from asr_dist.config import load_config
from asr_dist.report import main, read_metrics, write_report

MAX_STEPS = 200
LOG_EVERY = 10
EVAL_EVERY = 50
RESUME_FROM = 120  # the run is killed at step 150 and resumes from its step-120 checkpoint
FINAL_WER, FINAL_CER = 0.2317, 0.0846
SUBSETS = {"kal16": (0.1520, 0.051, 40), "awb": (0.2203, 0.079, 35), "en-gb-scotland+f2": (0.3398, 0.128, 25)}


def _train_line(step: int, t: float, rng: random.Random, loss_scale: float = 1.0) -> dict:
    warmup = min(step / 20, 1.0)
    return {
        "step": step, "epoch": step // 80, "time": t,
        "loss": loss_scale * (3.0 * math.exp(-step / 60) + 0.4) * (1 + 0.05 * rng.uniform(-1, 1)),
        "lr/head": 1e-3 * warmup * 0.98 ** max(step - 20, 0),
        "lr/encoder": 1e-4 * warmup * 0.98 ** max(step - 20, 0),
        "grad_norm": 2.0 * math.exp(-step / 100) + 0.3,
        "audio_sec_per_sec": 150 + 10 * rng.uniform(-1, 1),
        "padding_fraction": 0.03 + 0.01 * rng.random(),
        "data_wait": 0.002,
        "skipped": 0,
    }


def _eval_line(step: int, t: float) -> dict:
    wer = FINAL_WER + 0.7 * math.exp(-step / 50) if step < MAX_STEPS else FINAL_WER
    cer = FINAL_CER + 0.4 * math.exp(-step / 50) if step < MAX_STEPS else FINAL_CER
    return {"step": step, "epoch": step // 80, "time": t, "eval/loss": 0.5 + 2 * math.exp(-step / 50),
            "eval/wer": wer, "eval/cer": cer}


@pytest.fixture
def run_dir(tmp_path):
    """A run folder shaped like the trainer's: killed at step 150, resumed from step 120, finished at 200."""
    rng = random.Random(0)
    lines, t = [], 1_700_000_000.0
    for step in list(range(LOG_EVERY, 151, LOG_EVERY)) + list(range(RESUME_FROM + LOG_EVERY, MAX_STEPS + 1, LOG_EVERY)):
        t += 6.0
        lines.append(_train_line(step, t, rng))
        if step % EVAL_EVERY == 0:
            lines.append(_eval_line(step, t + 1))
    text = "\n".join(json.dumps(line) for line in lines) + "\n" + '{"step": 201, "loss": 0.4'  # cut by a kill
    (tmp_path / "metrics.jsonl").write_text(text)
    cfg = load_config(None, ["train.max_steps=200", "optimizer.lr=0.001", "optimizer.encoder_lr=0.0001"])
    cfg.save(tmp_path / "config.yaml")
    eval_json = {
        "wer": FINAL_WER, "cer": FINAL_CER, "loss": 0.61, "num_samples": 100,
        "subsets": {name: {"wer": w, "cer": c, "num_samples": n} for name, (w, c, n) in SUBSETS.items()},
        "examples": [{"key": "dev-000017", "ref": "THE QUICK BROWN FOX", "hyp": "THE QUICK BRAWN FOX"}],
    }
    (tmp_path / "eval.json").write_text(json.dumps(eval_json))
    return tmp_path


def test_read_metrics_keeps_the_resumed_values_and_finds_the_resume(run_dir):
    metrics = read_metrics(run_dir / "metrics.jsonl")
    steps, _ = metrics.series["loss"]
    assert steps == list(range(LOG_EVERY, MAX_STEPS + 1, LOG_EVERY))  # each step once, truncated line ignored
    assert metrics.resumed_at == [RESUME_FROM + LOG_EVERY]
    assert metrics.series["eval/wer"][0] == [50, 100, 150, 200]
    assert metrics.last("eval/wer") == pytest.approx(FINAL_WER)


def test_report_states_the_final_numbers(run_dir):
    report = write_report(run_dir)
    text = report.read_text()
    assert report == run_dir / "report.md"
    assert f"{100 * FINAL_WER:.2f}%" in text and f"{100 * FINAL_CER:.2f}%" in text
    for name, (wer, cer, n) in SUBSETS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert f"{100 * wer:.2f}%" in row and f"{100 * cer:.2f}%" in row and f"| {n} |" in row
    # subsets are listed best first
    assert text.index("| kal16 |") < text.index("| awb |") < text.index("| en-gb-scotland+f2 |")
    assert "THE QUICK BRAWN FOX" in text
    assert f"| optimizer steps | {MAX_STEPS} |" in text
    assert f"1 (continuing at step {RESUME_FROM + LOG_EVERY})" in text
    assert "encoder_lr: 0.0001" in text  # the resolved config, verbatim


def test_plots_are_images_with_curves(run_dir):
    text = write_report(run_dir).read_text()
    for name in ("loss", "learning_rate", "error_rates", "throughput", "subsets"):
        path = run_dir / "report" / f"{name}.png"
        assert f"](report/{name}.png)" in text
        image = imread(path)  # raises on anything but a valid PNG
        assert image.shape[0] >= 250 and image.shape[1] >= 600
        rgb = image[..., :3]
        # A curve is colored ink: pixels whose channels differ (not white, not gray axes and text).
        colored = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.25
        assert colored.mean() > 0.002, f"{name}.png has no colored curve"
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50


def test_a_run_without_eval_still_reports_and_says_so(tmp_path):
    rng = random.Random(1)
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(_train_line(s, 6.0 * s, rng)) for s in range(1, 40)))
    text = write_report(tmp_path).read_text()
    assert "No evaluation was logged" in text
    assert (tmp_path / "report" / "loss.png").is_file()
    assert not (tmp_path / "report" / "error_rates.png").exists()


def test_cli_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    assert "nope does not exist" in capsys.readouterr().out
    assert main([str(tmp_path)]) == 1
    assert "is it a run folder" in capsys.readouterr().out
