"""A tiny, untrained Wav2Vec2ForCTC + processor for evaluation/transcription tests (seconds on CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from asr_dist.text import build_processor

TEXTS = ["HELLO WORLD", "THE QUICK BROWN FOX", "JUMPS OVER THE LAZY DOG", "DON'T PANIC"]


def tiny_model_and_processor(seed: int = 0, sample_rate: int = 16000, processor=None):
    processor = processor or build_processor(TEXTS, sample_rate=sample_rate)
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        vocab_size=len(processor.tokenizer), pad_token_id=processor.tokenizer.pad_token_id,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 4, 4), feat_extract_norm="layer",
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, do_stable_layer_norm=True,
        mask_time_prob=0.0, layerdrop=0.0, ctc_loss_reduction="sum", ctc_zero_infinity=True,
    )
    model = Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():  # a larger head spread so that argmax paths vary between frames
        model.lm_head.weight.mul_(20.0)
    return model, processor


def save_tiny_export(out_dir: str | Path, seed: int = 0, processor=None) -> Path:
    """An exported folder as `asr-dist export` writes it: model + processor via save_pretrained."""
    model, processor = tiny_model_and_processor(seed, processor=processor)
    model.save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))
    return Path(out_dir)


def audio(seconds: float, seed: int, sample_rate: int = 16000) -> np.ndarray:
    """A reproducible tone-plus-noise signal (float32 in [-1, 1])."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def make_batch(processor, items: list[tuple[str, str, str, np.ndarray]]) -> dict:
    """A batch dict as in docs/architecture.md from (key, text, speaker, audio) items."""
    sr = processor.feature_extractor.sampling_rate
    feats = processor.feature_extractor([a for *_, a in items], sampling_rate=sr, padding=True,
                                        return_attention_mask=True, return_tensors="pt")
    label_ids = [processor.tokenizer(text).input_ids for _, text, _, _ in items]
    labels = torch.full((len(items), max(map(len, label_ids))), -100, dtype=torch.long)
    for i, ids in enumerate(label_ids):
        labels[i, : len(ids)] = torch.tensor(ids)
    mask = feats.attention_mask.to(torch.long)
    return {"input_values": feats.input_values.float(), "attention_mask": mask, "labels": labels,
            "keys": [k for k, *_ in items], "meta": [{"speaker": s, "text": t} for _, t, s, _ in items],
            "audio_seconds": float(mask.sum()) / sr, "padded_seconds": mask.numel() / sr}
