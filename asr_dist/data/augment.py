"""On-the-fly augmentation of training audio: speed perturbation, additive noise at a random SNR,
random gain (torchaudio.functional does the signal processing).

Every random choice is a pure function of (seed, epoch, sample key), never of the worker that
happens to decode the sample or of how many samples it decoded before: a resumed run, or the same
epoch on another world size, augments every sample exactly as the uninterrupted run did. Each
augmentation draws from its own stream, so enabling one does not change the others' draws.

The speed factor is known without audio (`speed_factor`), so the epoch plan budgets each batch
with the perturbed durations and the padded-seconds bound holds after augmentation too.
Note: with the feature extractor's `do_normalize` (zero mean, unit variance per utterance), a gain
change is undone by normalization; it matters only when normalization is off (and for clipping).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torchaudio.functional as AF

from asr_dist.config import AugmentConfig


def _stream(seed: int, epoch: int, key: str, purpose: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}\0{epoch}\0{key}\0{purpose}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


class Augmenter:
    """Applies the configured augmentations to one waveform; `enabled=False` makes it the identity."""

    def __init__(self, cfg: AugmentConfig, *, seed: int, sample_rate: int):
        self.cfg, self.seed, self.sample_rate = cfg, seed, sample_rate

    @property
    def changes_durations(self) -> bool:
        return self.cfg.enabled and any(f != 1.0 for f in self.cfg.speed_factors)

    def speed_factor(self, epoch: int, key: str) -> float:
        if not self.changes_durations:
            return 1.0
        return float(_stream(self.seed, epoch, key, "speed").choice(self.cfg.speed_factors))

    def __call__(self, wave: np.ndarray, *, epoch: int, key: str) -> np.ndarray:
        """float32 mono waveform in [-1, 1] -> augmented float32 waveform (length changes with speed)."""
        if not self.cfg.enabled:
            return wave
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None]
        factor = self.speed_factor(epoch, key)
        if factor != 1.0:
            x, _ = AF.speed(x, self.sample_rate, factor)
        lo, hi = self.cfg.gain_db
        if (lo, hi) != (0.0, 0.0):
            x = AF.gain(x, float(_stream(self.seed, epoch, key, "gain").uniform(lo, hi)))
        rng = _stream(self.seed, epoch, key, "noise")
        if self.cfg.noise_prob > 0 and rng.random() < self.cfg.noise_prob:
            snr = float(rng.uniform(*self.cfg.snr_db))
            noise = torch.from_numpy(colored_noise(x.shape[-1], rng))[None]
            x = AF.add_noise(x, noise, torch.tensor([snr], dtype=torch.float32))
        return x[0].clamp_(-1.0, 1.0).numpy()


def colored_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f^beta spectrum, beta drawn from [0, 2] (white .. brown): a stand-in
    for background noise that needs no noise corpus."""
    beta = rng.uniform(0.0, 2.0)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (beta / 2), n)
    return (noise / (np.std(noise) + 1e-12)).astype(np.float32)
