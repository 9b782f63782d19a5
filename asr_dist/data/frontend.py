"""The model's audio front end, run in the DataLoader workers: waveforms -> the padded model input + mask.

* Raw-waveform families (wav2vec2, HuBERT, WavLM, ...): the run's `Wav2Vec2FeatureExtractor` normalizes and
  zero-pads the samples, exactly as before (`input_values` [B, samples], mask over samples).
* Filterbank families (w2v-BERT 2.0: `SeamlessM4TFeatureExtractor`): 80 Kaldi log-mel filterbanks (25 ms
  window, 10 ms hop, povey window, pre-emphasis 0.97, DC offset removed, 16-bit scale), each mel bin
  normalized to zero mean / unit variance over the utterance, padded with zeros, then every 2 frames stacked
  into one 160-dim step of 20 ms (`input_features` [B, steps, 160], mask over steps). We compute the
  filterbanks with `torchaudio.compliance.kaldi.fbank` (C++/ATen) and do the rest like the extractor; the HF
  extractor does the same in numpy, slower (benchmarks/frontend.py measures both; tests/test_frontend.py
  holds them equal within 2e-3 absolute after normalization). `FAST_FBANK = False` uses the extractor itself.
* Any other feature extractor (Parakeet's mel spectrogram): called as it is, padding to the longest (not to
  data.pad_to_multiple_seconds).

Padding to a multiple (data.pad_to_multiple_seconds) is kept in the input's own unit: samples for raw input,
filterbank frames (rounded up to whole stacked steps) for filterbanks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

FAST_FBANK = True  # torchaudio's Kaldi fbank instead of the feature extractor's numpy implementation


def _is_seamless(fe) -> bool:
    return type(fe).__name__ == "SeamlessM4TFeatureExtractor"


def is_raw(fe) -> bool:
    return fe.model_input_names[0] == "input_values"


def seconds_per_step(fe) -> float:
    """Audio seconds one step of the model input stands for (1 / rate for raw audio, 20 ms for w2v-BERT)."""
    if is_raw(fe):
        return 1.0 / fe.sampling_rate
    if _is_seamless(fe):
        return 160 * fe.stride / fe.sampling_rate
    return getattr(fe, "hop_length", 160) / fe.sampling_rate


def featurize(fe, waves: list[np.ndarray], sample_rate: int, pad_multiple: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, attention_mask) for a batch of float32 mono waves; `pad_multiple` in samples (0 = longest)."""
    if is_raw(fe):
        out = fe(waves, sampling_rate=sample_rate, padding="longest", pad_to_multiple_of=pad_multiple or None,
                 return_attention_mask=True, return_tensors="np")
        return np.asarray(out["input_values"], dtype=np.float32), np.asarray(out["attention_mask"], dtype=np.int64)
    if _is_seamless(fe):
        frames_multiple = _frame_multiple(fe, pad_multiple)
        if FAST_FBANK:
            return kaldi_fbank_batch(fe, waves, frames_multiple)
        out = fe(waves, sampling_rate=sample_rate, padding="longest", pad_to_multiple_of=frames_multiple,
                 return_attention_mask=True, return_tensors="np")
        return np.asarray(out["input_features"], dtype=np.float32), np.asarray(out["attention_mask"], dtype=np.int64)
    out = fe(waves, sampling_rate=sample_rate, padding="longest", return_attention_mask=True, return_tensors="np")
    name = fe.model_input_names[0]
    return np.asarray(out[name], dtype=np.float32), np.asarray(out["attention_mask"], dtype=np.int64)


def _frame_multiple(fe, pad_multiple_samples: int) -> int:
    """Filterbank frames to pad to a multiple of: the stride (whole stacked steps), or the rounded length."""
    stride = fe.stride
    if pad_multiple_samples <= 0:
        return stride
    frames = max(1, round(pad_multiple_samples / 160))
    return math.ceil(frames / stride) * stride


def kaldi_fbank(fe, wave: np.ndarray) -> torch.Tensor:
    """Normalized [frames, mel] filterbanks of one wave, as SeamlessM4TFeatureExtractor computes them."""
    import torchaudio.compliance.kaldi as kaldi

    if len(wave) < 400:
        raise ValueError(f"{len(wave)} samples is shorter than one 25 ms filterbank window")
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).unsqueeze(0) * 32768.0
    feats = kaldi.fbank(x, num_mel_bins=fe.num_mel_bins, frame_length=25.0, frame_shift=10.0, dither=0.0,
                        preemphasis_coefficient=0.97, remove_dc_offset=True, window_type="povey",
                        use_energy=False, low_freq=20.0, high_freq=0.0, sample_frequency=fe.sampling_rate,
                        snip_edges=True)
    mean = feats.mean(0, keepdim=True)
    var = feats.var(0, keepdim=True, unbiased=True) if feats.shape[0] > 1 else torch.full_like(mean, math.nan)
    return (feats - mean) / torch.sqrt(var + 1e-7)


def kaldi_fbank_batch(fe, waves: list[np.ndarray], frames_multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded, stacked batch + step mask, laid out exactly as SeamlessM4TFeatureExtractor lays it out."""
    feats = [kaldi_fbank(fe, w) for w in waves]
    longest = max(f.shape[0] for f in feats)
    frames = math.ceil(longest / frames_multiple) * frames_multiple
    stride, mels = fe.stride, feats[0].shape[1]
    batch = torch.full((len(feats), frames, mels), float(fe.padding_value))
    mask = torch.zeros(len(feats), frames, dtype=torch.int64)
    for i, f in enumerate(feats):
        batch[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = 1
    steps = frames // stride
    stacked = batch[:, : steps * stride].reshape(len(feats), steps, mels * stride)
    step_mask = mask[:, stride - 1: steps * stride: stride]  # a step is real when its last frame is
    return stacked.numpy(), step_mask.numpy()


def input_lengths_for_samples(fe, num_samples: int) -> int:
    """Steps of the model input for `num_samples` samples (what the mask of that sample will sum to)."""
    if is_raw(fe):
        return num_samples
    if _is_seamless(fe):
        frames = 0 if num_samples < 400 else 1 + (num_samples - 400) // 160
        return frames // fe.stride
    hop = getattr(fe, "hop_length", 160)
    if type(fe).__name__ == "ParakeetFeatureExtractor":  # (samples + n_fft // 2 * 2 - n_fft) // hop
        return (num_samples + fe.n_fft // 2 * 2 - fe.n_fft) // hop
    return num_samples // hop + 1
