"""`asr-dist transcribe` on an exported folder: the transformers pipeline loads it, and its text is
exactly greedy_decode of the model's logits for the same audio."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor, pipeline

from asr_dist import cli
from asr_dist.evaluate import greedy_decode
from asr_dist.transcribe import load_audio

from _tiny_model import audio, save_tiny_export


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return save_tiny_export(tmp_path_factory.mktemp("export") / "model")


def direct_greedy(model_dir, samples: np.ndarray) -> str:
    """The model and processor loaded by hand, no pipeline."""
    processor = Wav2Vec2Processor.from_pretrained(str(model_dir))
    model = Wav2Vec2ForCTC.from_pretrained(str(model_dir)).eval()
    inputs = processor(samples, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(inputs.input_values).logits
    return greedy_decode(logits, processor)[0]


def test_pipeline_loads_the_export_and_agrees_with_greedy_decode(export_dir):
    pipe = pipeline("automatic-speech-recognition", model=str(export_dir), device="cpu")
    samples = audio(1.3, seed=3)
    text = pipe({"raw": samples, "sampling_rate": 16000})["text"]
    assert text == direct_greedy(export_dir, samples) and len(text) > 0


def test_cli_prints_one_line_per_file_equal_to_greedy_decode(export_dir, tmp_path, capsys):
    mono16k = audio(1.0, seed=1)
    sf.write(tmp_path / "a.flac", mono16k, 16000, subtype="PCM_16")
    stereo = np.stack([audio(0.8, seed=2, sample_rate=22050), audio(0.8, seed=5, sample_rate=22050)], axis=1)
    sf.write(tmp_path / "b.wav", stereo, 22050, subtype="FLOAT")
    files = [str(tmp_path / "a.flac"), str(tmp_path / "b.wav")]

    assert cli.main(["transcribe", str(export_dir), *files]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == files

    flac_samples = sf.read(files[0], dtype="float32")[0]  # 16-bit quantized, as the file holds it
    mixed = torch.from_numpy(stereo.mean(axis=1).astype(np.float32))
    resampled = AF.resample(mixed, 22050, 16000).numpy()
    assert lines[0].split("\t")[1] == direct_greedy(export_dir, flac_samples)
    assert lines[1].split("\t")[1] == direct_greedy(export_dir, resampled)


def test_load_audio_resamples_and_mixes_down(tmp_path):
    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(tmp_path / "tone.wav", np.stack([tone, tone], axis=1), 8000, subtype="FLOAT")
    out = load_audio(tmp_path / "tone.wav", 16000)
    assert out.dtype == np.float32 and out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) == 440  # 1 s at 16 kHz: bin k is k Hz


def test_bad_inputs_stop_with_the_file_name(export_dir, tmp_path, capsys):
    (tmp_path / "notes.wav").write_text("not audio at all")
    assert cli.main(["transcribe", str(export_dir), str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav: no such file" in capsys.readouterr().err
    assert cli.main(["transcribe", str(export_dir), str(tmp_path / "notes.wav")]) == 2
    assert "notes.wav: not readable as audio" in capsys.readouterr().err
    assert cli.main(["transcribe", str(tmp_path), str(tmp_path / "notes.wav")]) == 2
    assert "not an exported model folder" in capsys.readouterr().err
