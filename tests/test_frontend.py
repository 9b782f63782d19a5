"""The filterbank front end (data/frontend.py) against w2v-BERT's own SeamlessM4TFeatureExtractor.

Tolerance: 2e-3 absolute on the normalized features (unit variance per mel bin, so 0.2 % of one standard
deviation): torchaudio computes the filterbanks in float32, the extractor in float64 numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SeamlessM4TFeatureExtractor

from asr_dist.data import frontend
from asr_dist.data.batch import DecodedSample, collate
from asr_dist.families import FAMILIES, pair_processor
from asr_dist.text import build_processor

from _tiny_model import audio

TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def fe():
    return SeamlessM4TFeatureExtractor(sampling_rate=16000)


def waves() -> list[np.ndarray]:
    return [audio(s, seed=i) for i, s in enumerate([1.37, 0.52, 2.013])]  # odd frame counts included


def test_kaldi_fbank_matches_the_models_feature_extractor_padding_and_mask_included(fe):
    ours, our_mask = frontend.kaldi_fbank_batch(fe, waves(), frames_multiple=2)
    theirs = fe(waves(), sampling_rate=16000, padding="longest", return_attention_mask=True, return_tensors="np")
    assert ours.shape == theirs["input_features"].shape and ours.shape[2] == 160
    np.testing.assert_array_equal(our_mask, theirs["attention_mask"])
    np.testing.assert_allclose(ours, theirs["input_features"], atol=TOLERANCE, rtol=0)
    # real steps = whole pairs of 10 ms frames: 1 + (samples - 400) // 160 frames, halved
    assert our_mask.sum(1).tolist() == [frontend.input_lengths_for_samples(fe, len(w)) for w in waves()]
    # padding is zeros (a step whose second frame is padding is masked out, as the extractor does)
    assert all(not ours[i, n + 1:].any() for i, n in enumerate(our_mask.sum(1)))


def test_rounded_lengths_are_whole_multiples_of_the_padding_in_frames(fe):
    processor = pair_processor(FAMILIES["wav2vec2-bert"], build_processor(["HELLO"]))
    samples = [DecodedSample(f"k{i}", w, "HELLO", {}) for i, w in enumerate(waves())]
    batch = collate(samples, processor, 16000, pad_multiple=8800)  # 0.55 s = 55 frames -> 56 (whole steps)
    assert batch["input_values"].shape[1] * 2 == 224  # the longest, 2.013 s, has 199 frames: 4 x 56
    assert batch["padded_seconds"] == pytest.approx(3 * batch["input_values"].shape[1] * 0.02)
    plain = collate(samples, processor, 16000)
    n = plain["input_values"].shape[1]
    torch.testing.assert_close(batch["input_values"][:, :n], plain["input_values"])
    assert torch.equal(batch["attention_mask"][:, :n], plain["attention_mask"])
    assert batch["attention_mask"][:, n:].sum() == 0
    # the extractor's own path (FAST_FBANK off) gives the same batch within the tolerance
    frontend.FAST_FBANK = False
    try:
        slow = collate(samples, processor, 16000, pad_multiple=8800)
    finally:
        frontend.FAST_FBANK = True
    torch.testing.assert_close(batch["input_values"], slow["input_values"], atol=TOLERANCE, rtol=0)
    assert torch.equal(batch["attention_mask"], slow["attention_mask"])


def test_raw_waveform_front_end_is_the_wav2vec2_feature_extractor_unchanged():
    processor = build_processor(["HELLO"])
    inputs, mask = frontend.featurize(processor.feature_extractor, waves(), 16000, pad_multiple=1600)
    ref = processor.feature_extractor(waves(), sampling_rate=16000, padding="longest", pad_to_multiple_of=1600,
                                      return_attention_mask=True, return_tensors="np")
    np.testing.assert_array_equal(inputs, ref["input_values"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
