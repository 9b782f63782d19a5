"""The README's commands, run as written (issue 17, items 5 and 6).

- The `transformers.pipeline` snippet runs verbatim in a folder that holds what it names: an exported tiny
  model at `runs/ls100/export` and a FLAC file at the LibriSpeech path (read by ffmpeg, as on a user's
  machine), and prints the transcript our own greedy decoding gives.
- The quickstart's train, export, transcribe and evaluate commands (steps 3-5) run at tiny size with 2
  processes under DeepSpeed ZeRO-2, in a copy of the repository: from its root, and from another folder with
  the repository's path put in front of `.venv/bin/...` and `configs/...` as the README says. Only these
  substitutions are made: the tiny train config for the 100 h recipe, a few extra overrides (3 updates, a
  checkpoint at the end), `python -m` for the venv's console scripts, the run's own checkpoint step.
  Step 2 (`asr-dist prepare`, tests/test_prepare.py) is replaced by synthetic shards at the paths it writes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from _shard_factory import tiny_processor, write_tiny_shards
from _tiny_model import audio, save_tiny_export

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start: end if end > 0 else None]


# ----------------------------------------------------------------------------- the pipeline() snippet


def test_the_pipeline_snippet_runs_as_written_on_an_exported_model_and_a_flac_file(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is needed by transformers' pipeline to read audio files: run `make deb`")
    (snippet,) = [b for b in code_blocks(README, "python") if "pipeline(" in b]
    model_dir = re.search(r'model="([^"]+)"', snippet).group(1)
    audio_file = re.search(r'asr\("([^"]+)"\)', snippet).group(1)
    assert audio_file.endswith(".flac")
    save_tiny_export(tmp_path / model_dir, processor=tiny_processor())
    wave = audio(2.0, seed=3)
    (tmp_path / audio_file).parent.mkdir(parents=True)
    soundfile.write(tmp_path / audio_file, wave, 16000, format="FLAC", subtype="PCM_16")

    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    import torch
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    processor = Wav2Vec2Processor.from_pretrained(tmp_path / model_dir)
    model = Wav2Vec2ForCTC.from_pretrained(tmp_path / model_dir).eval()
    samples, _ = soundfile.read(tmp_path / audio_file, dtype="float32")  # what ffmpeg decodes: 16-bit / 32768
    inputs = processor(samples, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ids = model(**inputs).logits.argmax(-1)
    expected = processor.batch_decode(ids)[0]
    assert expected.strip(), "the tiny model should spell something for this test to mean anything"
    assert done.stdout.strip() == expected


# ----------------------------------------------------------------------------- the quickstart


def quickstart_commands() -> list[list[str]]:
    """The commands of the quickstart's bash blocks, one argument list each (continuation lines joined)."""
    commands = []
    for block in code_blocks(section(README, "Quickstart on real data"), "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            args = shlex.split(line, comments=True)
            if args and args[0].startswith(".venv/bin/"):
                commands.append(args)
    return commands


def copy_repository(dest: Path) -> Path:
    """The files a clone has (no venv, no runs)."""
    ignore = shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def as_run(args: list[str], prefix: str, steps: int) -> list[str]:
    """One README command as this test runs it (see the module docstring for every substitution)."""
    tool, rest = args[0].removeprefix(".venv/bin/"), args[1:]
    python_m = {"accelerate": [sys.executable, "-m", "accelerate.commands.accelerate_cli"],
                "asr-dist": [sys.executable, "-m", "asr_dist.cli"]}[tool]
    out = []
    for arg in rest:
        arg = arg.replace("configs/train/librispeech_100h_base.yaml", "configs/train/tiny.yaml")
        arg = arg.replace("checkpoints/step-20000", f"checkpoints/step-{steps}")
        if arg.startswith("configs/"):
            arg = prefix + arg
        out.append(arg)
    if tool == "accelerate":
        out += [f"train.max_steps={steps}", f"checkpoint.every_steps={steps}"]
    return python_m + out


def place_inputs(cwd: Path) -> None:
    """What the quickstart's commands read, at the paths they name: shards (step 2's output) and two audio files."""
    train = write_tiny_shards(cwd / "data/shards/train", [8, 8, 8, 8], seed=0)
    tiny_processor().save_pretrained(str(train / "processor"))
    write_tiny_shards(cwd / "data/shards/dev", [4, 4], seed=1, prefix="dev")
    write_tiny_shards(cwd / "data/shards/test", [3], seed=2, prefix="test")
    soundfile.write(cwd / "some.wav", audio(1.0, seed=1), 16000)
    soundfile.write(cwd / "other.flac", audio(1.5, seed=2), 16000, format="FLAC")


@pytest.mark.slow
def test_quickstart_commands_run_from_the_repository_root_and_from_another_folder(tmp_path):
    commands = quickstart_commands()
    tools = [c[0] for c in commands]
    assert tools.count(".venv/bin/accelerate") == 1 and ".venv/bin/asr-dist" in tools
    repo = copy_repository(tmp_path / "asr_dist_clone")
    steps = 3
    results = {}
    for place, cwd, prefix in (("root", repo, ""), ("elsewhere", tmp_path / "elsewhere", f"{repo}/")):
        cwd.mkdir(exist_ok=True)
        place_inputs(cwd)
        env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")  # the clone's code, as if installed
        outputs = []
        for args in commands:
            if args[1] == "prepare":
                continue  # step 2: its output is in place
            cmd = as_run(args, prefix, steps)
            done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{place}: {shlex.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            outputs.append(done.stdout)
        run_dir = cwd / "runs/ls100"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["steps"] == steps
        assert (run_dir / "export/config.json").is_file()
        for args in commands:
            if args[1] == "export":  # export SOURCE OUT: a loadable model folder in OUT
                assert (cwd / args[-1] / "config.json").is_file(), f"{place}: nothing exported by {shlex.join(args)}"
        transcripts = [o for o in outputs if "some.wav\t" in o]
        assert len(transcripts) == 1 and "other.flac\t" in transcripts[0]
        results[place] = summary["final_loss"]
    # same seed, same data, same commands: the place they ran from changes nothing
    assert results["root"] == results["elsewhere"]
    assert np.isfinite(results["root"])
