"""The batch handed to the trainer (contract in docs/architecture.md) and how samples become one.

Padding and normalization are done by the run's feature extractor (data/frontend.py): for raw-waveform
models the `Wav2Vec2FeatureExtractor` itself (zero mean, unit variance over the real samples when
`do_normalize`, zero padding), for filterbank models (w2v-BERT) the same filterbanks as its
`SeamlessM4TFeatureExtractor`; so training input is what `transformers.pipeline` feeds the exported model.
Transcripts become label ids with the run's tokenizer; label padding is -100, which CTC loss ignores, so
`(labels != -100).sum()` is the number of target tokens of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch

from asr_dist.data.frontend import featurize, seconds_per_step

LABEL_PAD = -100


class Batch(TypedDict):
    input_values: torch.Tensor  # the model's input: float32 [B, T] samples, or [B, T, F] filterbank steps
    attention_mask: torch.Tensor  # int64 [B, T], 1 on real audio (per sample, or per filterbank step)
    labels: torch.Tensor  # int64 [B, L], padded with -100
    keys: list[str]  # one per row; empty only in loader.silence_batch (every sample of the batch lost)
    meta: list[dict]  # per sample: text, speaker, duration, shard, ... (KEY.json plus the shard name)
    audio_seconds: float  # real audio in the batch
    padded_seconds: float  # B x T x seconds per input step


@dataclass
class DecodedSample:
    key: str
    wave: np.ndarray  # float32 mono at the run's sample rate (after augmentation)
    text: str
    meta: dict


def collate(samples: list[DecodedSample], processor, sample_rate: int, pad_multiple: int = 0) -> Batch:
    """`pad_multiple` > 0 pads the batch's length up to a multiple of that many samples (see
    DataConfig.pad_to_multiple_seconds: repeated shapes let the kernels be reused)."""
    inputs, mask = featurize(processor.feature_extractor, [s.wave for s in samples], sample_rate, pad_multiple)
    input_values = torch.from_numpy(inputs)
    attention_mask = torch.from_numpy(mask)
    ids = processor.tokenizer([s.text for s in samples])["input_ids"]
    width = max(1, max((len(x) for x in ids), default=0))  # >= 1: Wav2Vec2ForCTC calls labels.max()
    labels = torch.full((len(ids), width), LABEL_PAD, dtype=torch.int64)
    for row, x in enumerate(ids):
        labels[row, :len(x)] = torch.tensor(x, dtype=torch.int64)
    return Batch(
        input_values=input_values,
        attention_mask=attention_mask,
        labels=labels,
        keys=[s.key for s in samples],
        meta=[s.meta for s in samples],
        audio_seconds=sum(len(s.wave) for s in samples) / sample_rate,
        padded_seconds=input_values.shape[0] * input_values.shape[1] * seconds_per_step(processor.feature_extractor),
    )
