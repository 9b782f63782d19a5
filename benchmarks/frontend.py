"""Feature front-end throughput per DataLoader worker: audio seconds featurized per wall second, one thread.

For the filterbank families (w2v-BERT 2.0) the batch's features are computed in the DataLoader workers. Two
implementations give the same features (tests/test_frontend.py: within 2e-3): torchaudio's Kaldi-compatible
`compliance.kaldi.fbank` (asr_dist's default, data/frontend.py) and the model's own
`SeamlessM4TFeatureExtractor` (numpy). For reference, the raw-waveform path (`Wav2Vec2FeatureExtractor`:
normalize + pad). Batches of 8 utterances of 1-8 s (uniform), like a duration-bucketed batch of the plan.

The figure to compare against: a model's training throughput on the same machine (audio-s/s); features never
starve training while one worker's figure x workers is well above it.

`python benchmarks/frontend.py [--quick]` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from transformers import SeamlessM4TFeatureExtractor

from asr_dist.data import frontend
from asr_dist.text import build_processor

SR = 16000


def _batches(n_batches: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[(0.1 * rng.standard_normal(int(rng.uniform(1.0, 8.0) * SR))).astype(np.float32) for _ in range(8)]
            for _ in range(n_batches)]


def _throughput(fe, batches, fast: bool) -> float:
    frontend.FAST_FBANK = fast
    try:
        frontend.featurize(fe, batches[0], SR)  # warm-up (allocations, mel filters)
        started = time.perf_counter()
        for batch in batches:
            frontend.featurize(fe, batch, SR, pad_multiple=SR // 2)
        wall = time.perf_counter() - started
    finally:
        frontend.FAST_FBANK = True
    return sum(len(w) for b in batches for w in b) / SR / wall


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)  # as in a DataLoader worker (loader._worker_init)
    batches = _batches(3 if quick else 12)
    seamless = SeamlessM4TFeatureExtractor(sampling_rate=SR)
    raw = build_processor(["HELLO"]).feature_extractor
    return {
        "audio_seconds": round(sum(len(w) for b in batches for w in b) / SR, 1),
        "fbank_torchaudio_kaldi_audio_s_per_s": round(_throughput(seamless, batches, fast=True), 1),
        "fbank_hf_seamless_m4t_audio_s_per_s": round(_throughput(seamless, batches, fast=False), 1),
        "raw_wav2vec2_normalize_audio_s_per_s": round(_throughput(raw, batches, fast=True), 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=1))
