"""Reading audio for the model: any file or bytes libsndfile reads, down-mixed to mono float32 and resampled
with torchaudio. The one place for these rules (shard writing, the data pipeline and transcription use it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile


def to_mono(frames: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,): the mean of the channels."""
    return frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]


def resample(wave: np.ndarray, orig: int, new: int) -> np.ndarray:
    """float32 samples at `orig` Hz -> float32 at `new` Hz (torchaudio's windowed-sinc resampler)."""
    if orig == new:
        return np.ascontiguousarray(wave, dtype=np.float32)
    import torch
    import torchaudio.functional as AF

    waveform = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    return AF.resample(waveform, orig, new).numpy()


def read_audio(source: str | Path | bytes, sample_rate: int) -> np.ndarray:
    """A file path or encoded bytes -> float32 mono at `sample_rate`. Raises ValueError for no frames and
    soundfile's errors for undecodable data (callers name the file)."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    wave, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    if wave.shape[0] == 0:
        raise ValueError("no audio frames")
    return resample(to_mono(wave), rate, sample_rate)
