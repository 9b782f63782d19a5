"""Export: checkpoints (single process, ZeRO-3 shards of 2 ranks) and the live model -> a save_pretrained folder
that transformers.pipeline loads and that holds exactly the trained weights."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from asr_dist.config import CheckpointConfig
from asr_dist.export import export_pretrained, main
from ckpt_worker import TinyRun, sample
from _ranks import REPO, logs, run_ranks


def check_pipeline_folder(out, expected: dict[str, torch.Tensor]) -> None:
    """Weights bit-identical to `expected`, and the pipeline's transcript = greedy CTC decoding of the model."""
    saved = load_file(str(out / "model.safetensors"))
    assert saved.keys() == expected.keys()
    assert all(saved[k].dtype == torch.float32 and torch.equal(saved[k], expected[k]) for k in saved)
    asr = transformers.pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    audio, _ = sample(12345)
    text = asr(audio.numpy().astype(np.float32))["text"]
    model = asr.model.eval()
    processor = transformers.Wav2Vec2Processor.from_pretrained(str(out))
    with torch.no_grad():
        inputs = processor(audio.numpy(), sampling_rate=16000, return_tensors="pt")
        ids = model(inputs.input_values).logits.argmax(-1)
    assert text == processor.batch_decode(ids)[0]


def test_single_process_checkpoint_and_live_model_export_the_same_loadable_folder(tmp_path):
    AcceleratorState._reset_state(reset_partial_state=True)
    run = TinyRun(tmp_path / "run", "single", cfg=CheckpointConfig(every_steps=3))
    run.train(3)
    weights = run.weights()

    assert main([str(tmp_path / "run"), str(tmp_path / "from_checkpoint")]) == 0  # a run folder: its latest
    check_pipeline_folder(tmp_path / "from_checkpoint", weights)

    export_pretrained(run.accelerator, run.model, run.processor, tmp_path / "live")
    check_pipeline_folder(tmp_path / "live", weights)
    AcceleratorState._reset_state(reset_partial_state=True)


def test_export_errors_name_the_folder_and_the_reason(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints" / "step-5").mkdir(parents=True)
    assert main([str(tmp_path / "run" / "checkpoints" / "step-5"), str(tmp_path / "out")]) == 1
    assert "step-5 has no COMPLETE marker" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert "nowhere does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_zero3_shards_of_two_ranks_and_the_live_zero3_model_export_the_same_weights(tmp_path):
    run_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    args = ["tests/ckpt_worker.py", str(run_dir), "--backend", "zero3", "--steps", "2", "--save-every", "2", "--export"]
    assert run_ranks(args, 2, log_dir) == [0, 0], logs(log_dir)
    out = tmp_path / "exported"
    done = subprocess.run([sys.executable, "-m", "asr_dist.cli", "export", str(run_dir / "checkpoints" / "step-2"),
                           str(out)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    shards = sorted(p.name for p in (run_dir / "checkpoints" / "step-2" / "pytorch_model").glob("*optim_states.pt"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    gathered = torch.load(run_dir / "final.pt")["weights"]  # gathered live by ZeRO-3
    check_pipeline_folder(out, gathered)
    check_pipeline_folder(run_dir / "export", gathered)  # export_pretrained on both ranks at the end
