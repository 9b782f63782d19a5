"""The run report: report.md carries the run's final numbers, and its plots are real images with curves."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from asr_dist.config import load_config
from asr_dist.evaluate import score
from asr_dist.metrics import MetricsLogger
from asr_dist.report import main, read_metrics, write_report

REPO = Path(__file__).resolve().parents[1]
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


def _train_scalars(step: int, rng: random.Random) -> dict:
    warmup = min(step / 20, 1.0)
    loss = 3.0 * math.exp(-step / 60) + 0.4
    return {
        "loss": loss * (1 + 0.05 * rng.uniform(-1, 1)), "loss_avg": loss * (1 + 0.01 * rng.uniform(-1, 1)),
        "lr/head": 1e-3 * warmup * 0.98 ** max(step - 20, 0),
        "lr/encoder": 1e-4 * warmup * 0.98 ** max(step - 20, 0),
        "grad_norm": 2.0 * math.exp(-step / 100) + 0.3,
        "skipped": False, "skipped_updates": 1 if step >= 70 else 0,
        "audio_sec_per_sec": 150 + 10 * rng.uniform(-1, 1),
        "padding_fraction": 0.03 + 0.01 * rng.random(),
        "data_wait_fraction": 0.02 + 0.01 * rng.random(),
    }


def _eval_scalars(step: int) -> dict:
    """Intermediate evals: worse than the final one."""
    return {"eval/loss": 0.5 + 2 * math.exp(-step / 50), "eval/wer": FINAL.wer + 0.7 * math.exp(-step / 50),
            "eval/cer": FINAL.cer + 0.4 * math.exp(-step / 50)}


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


@pytest.fixture
def run_dir(tmp_path, accelerator):
    """A run folder written by the trainer's own MetricsLogger: the first process is killed at step 150 (in
    the middle of writing a line), the second resumes from the step-120 checkpoint and finishes at 200."""
    rng = random.Random(0)
    first = MetricsLogger(accelerator, tmp_path, total_steps=MAX_STEPS, start_step=0, show_progress=False)
    time.sleep(0.01)  # real runs log for minutes: the restart shows as "elapsed" going back (it has 1 ms steps)
    for step in range(LOG_EVERY, 151, LOG_EVERY):
        first.log(_train_scalars(step, rng), step, epoch=step / 80)
        if step % EVAL_EVERY == 0:
            first.log(_eval_scalars(step), step, epoch=step / 80, kind="eval")
    first.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 160, "loss": 0.4')  # the kill
    second = MetricsLogger(accelerator, tmp_path, total_steps=MAX_STEPS, start_step=RESUME_FROM, show_progress=False)
    for step in range(RESUME_FROM + LOG_EVERY, MAX_STEPS + 1, LOG_EVERY):
        second.log(_train_scalars(step, rng), step, epoch=step / 80)
        if step % EVAL_EVERY == 0 and step < MAX_STEPS:
            second.log(_eval_scalars(step), step, epoch=step / 80, kind="eval")
    second.log_eval(FINAL, MAX_STEPS, epoch=MAX_STEPS / 80)
    second.close()
    cfg = load_config(None, ["train.max_steps=200", "optimizer.lr=0.001", "optimizer.encoder_lr=0.0001"])
    cfg.save(tmp_path / "config.yaml")
    (tmp_path / "eval.json").write_text(json.dumps(FINAL.to_dict()))
    return tmp_path


def test_read_metrics_finds_the_resume_and_each_step_once(run_dir):
    metrics = read_metrics(run_dir / "metrics.jsonl")
    steps, _ = metrics.series["loss"]
    assert steps == list(range(LOG_EVERY, MAX_STEPS + 1, LOG_EVERY))  # each step once, torn line ignored
    assert metrics.resumed_at == [RESUME_FROM + LOG_EVERY]
    assert metrics.series["eval/wer"][0] == [50, 100, 150, 200]
    assert metrics.last("eval/wer") == pytest.approx(FINAL.wer)
    assert metrics.keys("lr/") == ["lr/encoder", "lr/head"]


def test_a_plain_log_that_goes_back_keeps_the_later_values(tmp_path):
    """A metrics file not cleaned up on resume (steps 20 and 30 logged twice): the resumed run's values win."""
    lines = [{"step": s, "loss": 10.0 - s / 10} for s in (10, 20, 30)] + [{"step": s, "loss": 1.0 * s} for s in (20, 30, 40)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert metrics.series["loss"] == ([10, 20, 30, 40], [9.0, 20.0, 30.0, 40.0])
    assert metrics.resumed_at == [20]


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
    assert "| dev-000000 | THE QUICK BROWN FOX | THE QUICK BRAWN FOX |" in text  # MetricsLogger.log_eval's examples
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
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, **_train_scalars(s, rng)}) for s in range(1, 40)))
    text = write_report(tmp_path).read_text()
    assert "No evaluation was logged" in text
    assert (tmp_path / "report" / "loss.png").is_file()
    assert not (tmp_path / "report" / "error_rates.png").exists()


def test_cli_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    assert "nope does not exist" in capsys.readouterr().out
    assert main([str(tmp_path)]) == 1
    assert "is it a run folder" in capsys.readouterr().out


def test_comparison_puts_the_runs_side_by_side(run_dir, tmp_path_factory):
    """Fine-tuned (run_dir) versus a from-scratch run that only learned the short words."""
    scratch_dir = tmp_path_factory.mktemp("scratch")
    scratch = score([{"key": f"dev-{i:06d}", "ref": ref, "hyp": " ".join(w for w in ref.split() if len(w) <= 3),
                      "subset": voice, "loss": 9.0, "tokens": len(ref), "seconds": 2.0}
                     for i, (voice, ref, _) in enumerate(UTTERANCES)])
    rng = random.Random(2)
    lines = [{"kind": "train", "step": s, **_train_scalars(s, rng)} for s in range(LOG_EVERY, MAX_STEPS + 1, LOG_EVERY)]
    lines.append({"kind": "eval", "step": MAX_STEPS, **scratch.scalars()})
    (scratch_dir / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    (scratch_dir / "eval.json").write_text(json.dumps(scratch.to_dict()))

    out = tmp_path_factory.mktemp("compare")
    assert main([str(run_dir), str(scratch_dir), "--compare", str(out)]) == 0
    text = (out / "comparison.md").read_text()
    fine_row = next(line for line in text.splitlines() if line.startswith(f"| {run_dir.name} |"))
    scratch_row = next(line for line in text.splitlines() if line.startswith(f"| {scratch_dir.name} |"))
    assert f"| {100 * FINAL.wer:.2f}% | {100 * FINAL.cer:.2f}% |" in fine_row
    assert f"| {100 * scratch.wer:.2f}% | {100 * scratch.cer:.2f}% |" in scratch_row
    assert scratch.wer > FINAL.wer
    for name in FINAL.subsets:
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert f"{100 * FINAL.subsets[name].wer:.2f}%" in row and f"{100 * scratch.subsets[name].wer:.2f}%" in row
    image = imread(out / "comparison.png")
    assert image.shape[1] >= 1000
    assert (run_dir / "report.md").is_file() and (scratch_dir / "report.md").is_file()


def test_report_on_a_real_training_run(tiny_shards, tmp_path):
    """`asr-dist train` on the tiny corpus (one process), then `asr-dist report`: the report states the
    numbers the trainer itself saved, and draws its curves."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "asr_dist.train", "--config", str(REPO / "configs" / "train" / "tiny.yaml"),
           f"data.train_shards={tiny_shards.train}", f"data.eval_shards={tiny_shards.dev}", f"train.run_dir={run_dir}",
           "train.max_steps=6", "train.log_every=2", "eval.every_steps=3", "checkpoint.every_steps=0",
           "optimizer.encoder_lr=0.0005"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    saved = json.loads((run_dir / "eval.json").read_text())

    assert main([str(run_dir)]) == 0
    text = (run_dir / "report.md").read_text()
    assert f"| **all** | **{100 * saved['wer']:.2f}%** | **{100 * saved['cer']:.2f}%** | {saved['num_samples']} |" in text
    for name, subset in saved["subsets"].items():
        assert f"| {name} | {100 * subset['wer']:.2f}% | {100 * subset['cer']:.2f}% | {subset['num_samples']} |" in text
    assert "| optimizer steps | 6 |" in text and "| resumes | 0 |" in text
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"| peak memory per rank (MB) | {summary['peak_memory_mb'][0]:.0f} |" in text
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert metrics.keys("lr/") == ["lr/encoder", "lr/head"]
    assert metrics.series["eval/wer"][0] == [3, 6]
    for name in ("loss", "learning_rate", "error_rates", "throughput"):
        assert imread(run_dir / "report" / f"{name}.png").shape[1] >= 600
