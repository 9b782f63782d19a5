"""The trainer end to end: real 2-process `accelerate launch` runs on CPU (tiny model, tiny espeak shards).

One scenario per backend (DDP, ZeRO-2, ZeRO-3), each run asserting several things at once to keep launches
few: 10 updates of 2 accumulated micro-batches per rank, CNN + lowest layer frozen for good, the whole
encoder frozen for the first 3 updates (fairseq's freeze_finetune_updates), and inf audio injected into
rank 0's first micro-batch of update 5 (train.debug_nan_steps=[4]). Then:
  - the loss falls; update 5 is skipped on all ranks and counted; the weights stay finite;
  - permanently frozen weights are bit-identical to the initial ones, the others moved;
  - the encoder lr is 0 for the first 3 updates, then follows the schedule;
  - eval.json (WER/CER, per speaker) and a loadable export/ are written;
  - ZeRO-2 and ZeRO-3 losses equal DDP's update by update (float32, tolerance 1e-4 relative).
Plus bf16 runs (DeepSpeed with inputs cast by hand; DDP autocast with layerdrop) and bad configurations that
must fail before any process group or model exists.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "train" / "tiny.yaml")
ACCELERATE_CONFIGS = {"ddp": "cpu_ddp_2proc.yaml", "zero2": "deepspeed_zero2.yaml", "zero3": "deepspeed_zero3.yaml"}
STEPS = 10
ENCODER_FROZEN_UPDATES = 3
NAN_STEP = 4  # updates done before the poisoned one: metrics.jsonl step NAN_STEP + 1
SCENARIO = [f"train.max_steps={STEPS}", "train.grad_accum=2", "train.mixed_precision=no", "freezing.lower_layers=1",
            f"freezing.encoder_updates={ENCODER_FROZEN_UPDATES}", f"train.debug_nan_steps=[{NAN_STEP}]",
            "checkpoint.every_steps=0", "optimizer.lr=0.005"]
PERMANENTLY_FROZEN = ("wav2vec2.feature_extractor.", "wav2vec2.feature_projection.", "wav2vec2.encoder.pos_conv_embed.",
                      "wav2vec2.encoder.layer_norm.", "wav2vec2.encoder.layers.0.")


# DeepSpeed on CPU occasionally aborts a rank while the process exits, after all work is done (shared facts:
# about 1 ZeRO-3 run in 50). Such a run counts as finished when its outputs are complete; anything else fails.
EXIT_ABORT = "terminate called without an active exception"


def launch(backend: str, run_dir: Path, shards, overrides: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / ACCELERATE_CONFIGS[backend]), "-m", "asr_dist.train",
           "--config", TINY, f"data.train_shards={shards.train}", f"data.eval_shards={shards.dev}",
           f"train.run_dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    finished = (run_dir / "export" / "config.json").is_file() and (run_dir / "eval.json").is_file()
    if proc.returncode != 0 and finished and EXIT_ABORT in proc.stdout + proc.stderr:
        proc.returncode = 0
    return proc


def train_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r["kind"] == "train"]


@pytest.fixture(scope="module")
def scenario_runs(tiny_shards, tmp_path_factory):
    """backend -> run folder of the shared scenario, launched on first use (and once per test session)."""
    done: dict[str, Path] = {}

    def get(backend: str) -> Path:
        if backend not in done:
            run_dir = tmp_path_factory.mktemp(f"train_{backend}") / "run"
            proc = launch(backend, run_dir, tiny_shards, SCENARIO)
            assert proc.returncode == 0 and (run_dir / "export" / "config.json").is_file(), \
                f"{backend} run failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            done[backend] = run_dir
        return done[backend]

    return get


def initial_weights(shards) -> dict[str, torch.Tensor]:
    """The weights run() starts from: same config, same seed, same build order."""
    from accelerate.utils import set_seed

    from asr_dist.config import load_config
    from asr_dist.model import build_model
    from asr_dist.text import load_processor

    cfg = load_config(TINY, [f"data.train_shards={shards.train}", *SCENARIO])
    set_seed(cfg.train.seed)
    return {k: v.clone() for k, v in build_model(cfg.model, load_processor(shards.processor)).state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "zero2", "zero3"])
def test_backend_trains_freezes_and_skips_nonfinite_updates(backend, scenario_runs, tiny_shards):
    from transformers import Wav2Vec2ForCTC

    run_dir = scenario_runs(backend)
    rows = train_rows(run_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))

    # the poisoned update is skipped (on all ranks: the weights below are finite and ranks agree on them)
    poisoned = rows[NAN_STEP]
    assert poisoned["skipped"] is True and poisoned["loss"] is None  # NaN is written as null
    assert [r["skipped_updates"] for r in rows] == [0] * NAN_STEP + [1] * (STEPS - NAN_STEP)
    losses = [r["loss"] for r in rows if not r["skipped"]]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0], f"loss did not fall: {losses}"

    # encoder lr 0 while the whole encoder is frozen, then the schedule's; the head learns throughout
    assert [r["lr/encoder"] for r in rows[:ENCODER_FROZEN_UPDATES]] == [0.0] * ENCODER_FROZEN_UPDATES
    assert all(r["lr/encoder"] > 0 for r in rows[ENCODER_FROZEN_UPDATES:])
    assert all(r["lr/head"] > 0 for r in rows)
    assert all(0 <= r["padding_fraction"] < 1 and r["audio_sec_per_sec"] > 0 for r in rows)

    # frozen weights bit-identical, trained ones moved, nothing poisoned
    before = initial_weights(tiny_shards)
    after = Wav2Vec2ForCTC.from_pretrained(run_dir / "export").state_dict()
    assert set(after) == set(before)
    assert all(torch.isfinite(v).all() for v in after.values())
    frozen = [k for k in before if k.startswith(PERMANENTLY_FROZEN)]
    trained = [k for k in before if k not in frozen]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), \
        [k for k in frozen if not torch.equal(before[k], after[k])]
    moved = [k for k in trained if not torch.equal(before[k], after[k])]
    # (a few tensors get exactly zero gradient, e.g. attention key biases: softmax ignores a constant shift)
    assert "lm_head.weight" in moved and "wav2vec2.encoder.layers.1.feed_forward.output_dense.weight" in moved
    assert len(moved) >= 0.8 * len(trained), sorted(set(trained) - set(moved))

    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation["num_samples"] == 4 and 0 <= evaluation["cer"] and math.isfinite(evaluation["loss"])
    assert set(evaluation["subsets"]) == {"en-us_m3", "en-us_f2"}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["zero2", "zero3"])
def test_zero_losses_match_ddp(backend, scenario_runs):
    ddp = [r["loss"] for r in train_rows(scenario_runs("ddp"))]
    zero = [r["loss"] for r in train_rows(scenario_runs(backend))]
    assert [x is None for x in zero] == [x is None for x in ddp]
    assert [x for x in zero if x is not None] == pytest.approx([x for x in ddp if x is not None], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("backend, extra, weights", [
    ("zero2", ["train.mixed_precision=bf16"], "torch.float32"),  # DeepSpeed's torch_autocast, fp32 masters
    ("zero3", ["train.mixed_precision=bf16"], "torch.float32"),
    ("zero2", ["train.mixed_precision=bf16_weights"], "torch.bfloat16"),  # bf16 weights, inputs cast by hand
    ("ddp", ["train.mixed_precision=bf16", "model.layerdrop=0.3"], "torch.float32"),  # autocast; layerdrop
])
def test_bf16_trains(backend, extra, weights, tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    proc = launch(backend, run_dir, tiny_shards, ["train.max_steps=6", *extra])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"weights in {weights}" in proc.stdout + proc.stderr
    losses = [r["loss"] for r in train_rows(run_dir)]
    assert all(x is not None and math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("overrides, message", [
    (["model.layerdrop=0.1", f"train.deepspeed_config={REPO}/configs/deepspeed/zero2.json"], "model.layerdrop"),
    (["optimizer.lr=-1"], "optimizer.lr"),
    (["train.mixed_precision=bf16_weights"], "train.mixed_precision"),  # DeepSpeed only
    (["train.grad_acum=2"], "train.grad_acum"),
    (["freezing.lower_layers=5"], "freezing.lower_layers"),
    (["data.train_shards="], "data.train_shards"),
    ([], "data.train_shards = /nonexistent: no such folder; write it with `asr-dist prepare"),  # pre-flight
])
def test_bad_config_fails_before_any_work(overrides, message, tmp_path, capsys):
    _assert_refused(overrides, message, tmp_path, capsys)


@pytest.mark.parametrize("text, message", [
    (json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}),
     "zero_force_ds_cpu_optimizer"),
    (json.dumps({"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW"}}), "'optimizer' block"),
    (json.dumps({"train_batch_size": 8}), "zero_optimization section"),
    ("{stage: 3", "cannot be read as JSON"),
])
def test_bad_deepspeed_json_fails_before_any_work(text, message, tmp_path, capsys):
    path = tmp_path / "ds.json"
    path.write_text(text)
    _assert_refused([f"train.deepspeed_config={path}"], message, tmp_path, capsys)


def _assert_refused(overrides, message, tmp_path, capsys):
    import torch.distributed as dist

    from asr_dist.train import main

    run_dir = tmp_path / "run"
    code = main(["--config", TINY, f"train.run_dir={run_dir}", "data.train_shards=/nonexistent", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "bad configuration" in err, err
    assert not run_dir.exists() and not dist.is_initialized()


def test_preflight_names_every_missing_input_and_warns_about_senseless_settings(tiny_shards, tmp_path):
    from asr_dist.config import ConfigError, load_config
    from asr_dist.training.preflight import check_paths, warnings_for

    cfg = load_config(TINY, [f"data.train_shards={tiny_shards.train}", f"data.eval_shards={tmp_path / 'dev'}",
                             f"data.processor={tmp_path / 'proc'}", "freezing.encoder_updates=50",
                             "train.max_steps=50"])
    with pytest.raises(ConfigError) as e:
        check_paths(cfg)
    assert f"data.eval_shards = {tmp_path / 'dev'}: no such folder" in str(e.value)
    assert f"data.processor: no processor at {tmp_path / 'proc'}" in str(e.value)
    assert any("the encoder never trains" in w for w in warnings_for(cfg))
