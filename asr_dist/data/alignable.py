"""Samples the model cannot align under CTC: fewer output frames than the transcript needs.

CTC emits at most one label per model frame and needs a blank between two equal neighbours
(text.ctc_label_count); a shorter output gives an infinite loss, which `ctc_zero_infinity` turns into a
silent zero: the sample costs a forward and backward pass and teaches nothing. How many frames a sample
gets depends on the model (wav2vec2's CNN: 320 samples per frame; w2v-BERT: 2 stacked 10 ms filterbank
frames; an adapter halves that again), so `asr-dist prepare` can only check against the default wav2vec2
layout unless it is given a model config. The trainer checks again at start, with the real model's own
output-length function (families.frames_for_samples), and leaves such samples out of the plan, counted
and logged. Speed perturbation is not taken into account (a 1.1x faster copy has 10 % fewer frames).
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from asr_dist.data.index import DatasetIndex
from asr_dist.text import ctc_label_count

log = logging.getLogger(__name__)


def unalignable(index: DatasetIndex, frames_for: Callable[[np.ndarray], np.ndarray]) -> dict[str, tuple[int, int]]:
    """{key: (model frames, frames the transcript needs)} of every sample with too few frames."""
    infos = [x for shard in index.shards for x in shard.samples]
    if not infos:
        return {}
    samples = np.array([round(x.duration * index.sample_rate) for x in infos], dtype=np.int64)
    frames = np.asarray(frames_for(samples))
    return {x.key: (int(f), need) for x, f in zip(infos, frames)
            if f < (need := ctc_label_count(x.text))}


def drop_unalignable(index: DatasetIndex, frames_for: Callable[[np.ndarray], np.ndarray],
                     what: str = "train shards") -> tuple[DatasetIndex, int]:
    """The index without the samples the model cannot align, and how many were left out (logged)."""
    bad = unalignable(index, frames_for)
    if not bad:
        return index, 0
    examples = ", ".join(f"{k} ({f} frames < {n} needed)" for k, (f, n) in list(bad.items())[:3])
    log.warning("%s: leaving out %d of %d samples that the model cannot align under CTC (fewer output frames than "
                "the transcript needs), e.g. %s", what, len(bad), index.num_samples, examples)
    return index.without_samples(set(bad)), len(bad)
