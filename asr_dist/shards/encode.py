"""Check, convert and FLAC-encode one utterance: the work `asr-dist prepare` spreads over processes.

Everything here is a pure function of the input file and the limits, so that shards come out
byte-identical whatever the number of workers: audio is read with libsndfile (soundfile), downmixed by
averaging channels, resampled with torchaudio only when the rate differs, rounded to 16-bit PCM and
encoded as FLAC (lossless: the pipeline decodes exactly these samples).

A bad input is not an exception to the caller: `encode_utterance` returns a `Rejected` with a short
stable reason (see REASONS) and a human detail, and prepare lists it in rejects.jsonl.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from asr_dist.audio import to_mono

from asr_dist.corpus.readers import Utterance
from asr_dist.text import ctc_label_count

REASONS = {
    "missing_audio": "the audio file does not exist",
    "unreadable": "libsndfile cannot open the file (not audio, unknown format, header damaged)",
    "truncated": "fewer frames than the header declares, or a decode error mid-file",
    "empty_audio": "no samples, or only digital silence",
    "empty_text": "no transcript, or nothing left after normalization",
    "unnormalizable_text": "the transcript holds digits or symbols (their spoken form is unknown)",
    "foreign_script": "the transcript holds letters of a script the corpus' language (--language) does not use",
    "too_short": "shorter than min_duration",
    "too_long": "longer than max_duration",
    "too_short_for_ctc": "fewer model frames than the transcript needs under CTC",
    "duplicate_key": "another utterance already has this key",
    "bad_key": "the key is empty or has characters other than A-Za-z0-9_- (a dot would split the sample)",
    "bad_segment": "a manifest segment (offset, duration) that starts beyond the end of its audio file",
}

# Kept samples with something to know about (prepare's warnings.jsonl); the audio is the truth.
WARNINGS = {
    "duration_mismatch": "the manifest's duration differs from the audio's by more than 0.1 s and 5 %",
}


def duration_mismatch(declared: float | None, actual: float) -> str:
    """A warning detail when a manifest's duration is wrong (it would mislead any plan built from it), else ""."""
    if declared is None or abs(declared - actual) <= max(0.1, 0.05 * actual):
        return ""
    return f"the manifest says {declared:.3f} s, the audio has {actual:.3f} s (the audio's length is used)"

# wav2vec2's convolutional feature encoder (kernel, stride): 320 samples per frame, 20 ms at 16 kHz. Other
# models' chains come from their config (families.frame_layers; `asr-dist prepare --model-config`).
WAV2VEC2_CONV_LAYERS = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))


def ctc_frames(num_samples: int, conv_layers=WAV2VEC2_CONV_LAYERS) -> int:
    """Output frames for `num_samples` input samples through (kernel, stride[, padding]) windows."""
    length = num_samples
    for layer in conv_layers:
        kernel, stride, padding = (*layer, 0)[:3]
        length = (length + 2 * padding - kernel) // stride + 1
        if length <= 0:
            return 0
    return length


@dataclass(frozen=True)
class AudioLimits:
    sample_rate: int = 16000
    min_duration: float = 0.2  # seconds
    max_duration: float = 30.0
    ctc_layers: tuple = WAV2VEC2_CONV_LAYERS  # samples -> model frames, for the too_short_for_ctc check

    @property
    def frame_ms(self) -> float:
        hop = 1
        for layer in self.ctc_layers:
            hop *= layer[1]
        return 1000.0 * hop / self.sample_rate


@dataclass
class EncodedSample:
    """One sample ready for the shard: KEY.flac bytes and the KEY.json fields."""

    key: str
    flac: bytes
    num_samples: int
    duration: float
    text: str  # normalized
    speaker: str
    source: str
    meta: dict = field(default_factory=dict)
    warnings: dict = field(default_factory=dict)  # WARNINGS reason -> detail

    def json_bytes(self) -> bytes:
        record = {**self.meta, "text": self.text, "duration": self.duration, "speaker": self.speaker,
                  "source": self.source}
        return json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8")


@dataclass
class Rejected:
    key: str
    source: str
    reason: str  # one of REASONS
    detail: str

    def to_json(self) -> dict:
        return {"source": self.source, "key": self.key, "reason": self.reason, "detail": self.detail}


class AudioProblem(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def encode_utterance(utt: Utterance, limits: AudioLimits) -> EncodedSample | Rejected:
    """Read `utt.audio`, check it against `utt.text` (already normalized) and the limits, encode FLAC."""
    try:  # a segment of a longer file (NeMo offset) is cut after reading: the file itself may be long
        pcm = read_pcm16(utt.audio, limits.sample_rate, max_seconds=None if utt.offset else limits.max_duration)
    except AudioProblem as e:
        return Rejected(utt.key, utt.audio, e.reason, e.detail)
    if utt.offset:
        start = round(utt.offset * limits.sample_rate)
        if start >= len(pcm):
            return Rejected(utt.key, utt.audio, "bad_segment",
                            f"offset {utt.offset} s is beyond the file's {len(pcm) / limits.sample_rate:.3f} s")
        pcm = pcm[start:start + round(utt.duration * limits.sample_rate)]
    duration = len(pcm) / limits.sample_rate
    mismatch = duration_mismatch(utt.duration, duration)
    if duration < limits.min_duration:
        return Rejected(utt.key, utt.audio, "too_short", f"{duration:.3f} s < min_duration {limits.min_duration} s")
    if duration > limits.max_duration:
        return Rejected(utt.key, utt.audio, "too_long", f"{duration:.3f} s > max_duration {limits.max_duration} s")
    frames, needed = ctc_frames(len(pcm), limits.ctc_layers), ctc_label_count(utt.text)
    if frames < needed:
        return Rejected(utt.key, utt.audio, "too_short_for_ctc",
                        f"{duration:.3f} s gives {frames} frames of {limits.frame_ms:g} ms; the transcript needs {needed}")
    buffer = io.BytesIO()
    sf.write(buffer, pcm, limits.sample_rate, format="FLAC", subtype="PCM_16")
    return EncodedSample(key=utt.key, flac=buffer.getvalue(), num_samples=len(pcm), duration=duration,
                         text=utt.text, speaker=utt.speaker, source=utt.audio, meta=dict(utt.meta),
                         warnings={"duration_mismatch": mismatch} if mismatch else {})


def init_worker() -> None:
    """Pool initializer: one thread per worker process (the pool already uses every core). It lives
    here, not in prepare.py, so that a spawned worker imports only this light module (no torch
    unless it has to resample, no transformers)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


# ----------------------------------------------------------------------------- reading audio

_WAV_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMED_WAV_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)  # writers that could not seek back put these


def read_pcm16(path: str, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Mono int16 samples at `sample_rate`, or AudioProblem naming what is wrong with the file.
    A file whose header declares more than `max_seconds` (+1 s) is rejected as too_long unread,
    so that an hour-long recording in a corpus of sentences costs nothing."""
    source = path
    if path.startswith("hfds:"):  # a row of a saved Hugging Face dataset (asr_dist/corpus/hf.py)
        from asr_dist.corpus.hf import open_audio
        try:
            source = open_audio(path)
        except FileNotFoundError as e:
            raise AudioProblem("missing_audio", str(e)) from None
    elif not Path(path).is_file():
        raise AudioProblem("missing_audio", f"no such file: {path}")
    size = Path(path).stat().st_size if isinstance(source, str) else source.getbuffer().nbytes
    if size == 0:
        raise AudioProblem("unreadable", "empty file (0 bytes)")
    try:
        info = sf.info(source)
    except Exception as e:  # libsndfile's error for anything it cannot open
        raise AudioProblem("unreadable", _one_line(e)) from None
    if info.frames == 0:
        raise AudioProblem("empty_audio", "the file holds no samples")
    if max_seconds is not None and info.frames > (max_seconds + 1.0) * info.samplerate:
        raise AudioProblem("too_long", f"the header declares {info.frames / info.samplerate:.1f} s > max_duration {max_seconds} s")
    declared = _declared_wav_data_bytes(info)
    if declared is not None:
        raise AudioProblem("truncated", f"the WAV header declares {declared[0]} data bytes, the file has {declared[1]}")
    exact = info.samplerate == sample_rate and info.channels == 1 and info.subtype == "PCM_16"
    try:
        if not isinstance(source, str):
            source.seek(0)
        with sf.SoundFile(source) as f:
            data = f.read(dtype="int16" if exact else "float64", always_2d=True)
    except Exception as e:  # a decode error after a good header: the stream is cut or damaged
        raise AudioProblem("truncated", f"decode error: {_one_line(e)}") from None
    if len(data) < info.frames and info.format not in ("MPEG",):  # MP3 headers only estimate the length
        raise AudioProblem("truncated", f"read {len(data)} of the {info.frames} frames the header declares")
    if len(data) == 0 or not np.any(data):
        raise AudioProblem("empty_audio", "no samples" if len(data) == 0 else "digital silence (all samples zero)")
    if exact:
        return np.ascontiguousarray(data[:, 0])
    mono = to_mono(data)
    if info.samplerate != sample_rate:
        mono = _resample(mono, info.samplerate, sample_rate)
    return np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)


def _resample(samples: np.ndarray, orig: int, new: int) -> np.ndarray:
    import torch

    from asr_dist.audio import resample

    if os.environ.get("OMP_NUM_THREADS") == "1":  # a pool worker that just imported torch
        torch.set_num_threads(1)
    return resample(samples, orig, new).astype(np.float64)


def _declared_wav_data_bytes(info) -> tuple[int, int] | None:
    """(declared, present) data-chunk bytes when a WAV header promises more than the file holds.
    libsndfile silently reads what is there, so a cut WAV is only visible in its header log."""
    if info.format not in ("WAV", "WAVEX", "RF64", "W64"):
        return None
    match = _WAV_DATA_SIZE.search(info.extra_info or "")
    if not match:
        return None
    declared, present = int(match.group(1)), int(match.group(2))
    if declared in _STREAMED_WAV_SIZES or declared <= present:
        return None
    return declared, present


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
