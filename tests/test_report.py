"""The run report: report.md carries the run's final numbers, and its plots are real images with curves."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from matplotlib.image import imread

from asr_dist.config import load_config
from asr_dist.evaluate import score
from asr_dist.report import main, read_metrics, write_report

MAX_STEPS = 200
LOG_EVERY = 10
EVAL_EVERY = 50
RESUME_FROM = 120  # the run is killed at step 150 and resumes from its step-120 checkpoint
# The final evaluation, scored by the trainer's own code from (reference, hypothesis) pairs per voice.
UTTERANCES = [
    ("kal16", "THE QUICK BROWN FOX", "THE QUICK BRAWN FOX"),
    ("kal16", "JUMPS OVER THE LAZY DOG", "JUMPS OVER THE LAZY DOG"),
    ("awb", "A STITCH IN TIME SAVES NINE", "A STITCH IN TIME SAVES NINE"),
    ("awb", "ALL THAT GLITTERS IS NOT GOLD", "ALL THAT GLITTER IS NOT GOLD"),
    ("en-gb-scotland+f2", "FORTUNE FAVORS THE BOLD", "FORTUNE FAVOURS THE BOLD"),
    ("en-gb-scotland+f2", "WHERE THERE IS SMOKE THERE IS FIRE", "WHERE THERE SMOKE THERE FIRE"),
]
FINAL = score([{"key": f"dev-{i:06d}", "ref": ref, "hyp": hyp, "subset": voice, "loss": 3.0, "tokens": len(ref),
                "seconds": 2.0} for i, (voice, ref, hyp) in enumerate(UTTERANCES)], num_examples=3)


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
    """Early evals are worse; the last one is the final evaluation's scalars, as the trainer logs them."""
    if step == MAX_STEPS:
        return {"step": step, "epoch": step // 80, "time": t, **FINAL.scalars()}
    return {"step": step, "epoch": step // 80, "time": t, "eval/loss": 0.5 + 2 * math.exp(-step / 50),
            "eval/wer": FINAL.wer + 0.7 * math.exp(-step / 50), "eval/cer": FINAL.cer + 0.4 * math.exp(-step / 50)}


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
    (tmp_path / "eval.json").write_text(json.dumps(FINAL.to_dict()))
    return tmp_path


def test_read_metrics_keeps_the_resumed_values_and_finds_the_resume(run_dir):
    metrics = read_metrics(run_dir / "metrics.jsonl")
    steps, _ = metrics.series["loss"]
    assert steps == list(range(LOG_EVERY, MAX_STEPS + 1, LOG_EVERY))  # each step once, truncated line ignored
    assert metrics.resumed_at == [RESUME_FROM + LOG_EVERY]
    assert metrics.series["eval/wer"][0] == [50, 100, 150, 200]
    assert metrics.last("eval/wer") == pytest.approx(FINAL.wer)
    logged_140 = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()[:-1]
                  if json.loads(line)["step"] == 140 and "loss" in json.loads(line)]
    assert len(logged_140) == 2 and logged_140[0] != logged_140[1]
    assert metrics.series["loss"][1][steps.index(140)] == logged_140[1]  # the resumed run's value wins


def _assert_final_numbers(text: str) -> None:
    assert f"| **all** | **{100 * FINAL.wer:.2f}%** | **{100 * FINAL.cer:.2f}%** |" in text
    assert f"| final eval WER | {100 * FINAL.wer:.2f}% |" in text
    for name, subset in FINAL.subsets.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert f"{100 * subset.wer:.2f}%" in row and f"{100 * subset.cer:.2f}%" in row
    # subsets are listed best first
    ordered = sorted(FINAL.subsets, key=lambda n: FINAL.subsets[n].wer)
    positions = [text.index(f"| {name} |") for name in ordered]
    assert positions == sorted(positions)


def test_report_states_the_final_numbers(run_dir):
    report = write_report(run_dir)
    text = report.read_text()
    assert report == run_dir / "report.md"
    _assert_final_numbers(text)
    for name, subset in FINAL.subsets.items():
        assert f"| {name} | {100 * subset.wer:.2f}% | {100 * subset.cer:.2f}% | {subset.num_samples} |" in text
    assert "| dev-000000 | THE QUICK BROWN FOX | THE QUICK BRAWN FOX |" in text
    assert f"| optimizer steps | {MAX_STEPS} |" in text
    assert f"1 (continuing at step {RESUME_FROM + LOG_EVERY})" in text
    assert "encoder_lr: 0.0001" in text  # the resolved config, verbatim


def test_without_eval_json_the_final_numbers_come_from_the_metrics(run_dir):
    (run_dir / "eval.json").unlink()
    text = write_report(run_dir).read_text()
    _assert_final_numbers(text)
    assert "from `metrics.jsonl`" in text
    assert (run_dir / "report" / "subsets.png").is_file()


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
