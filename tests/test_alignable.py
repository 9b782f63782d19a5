"""CTC lengths from the real model: prepare's frame chain equals each model's own output-length function,
prepare rejects by the given model's frame rate, and training start leaves out what the model cannot align."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from transformers import Wav2Vec2BertConfig

from asr_dist import families
from asr_dist.config import ModelConfig
from asr_dist.corpus.readers import Utterance
from asr_dist.data.alignable import drop_unalignable
from asr_dist.data.index import load_index
from asr_dist.model import build_model
from asr_dist.shards.encode import WAV2VEC2_CONV_LAYERS, ctc_frames
from asr_dist.shards.prepare import write_shards
from asr_dist.text import build_processor, ctc_label_count

from _shard_factory import write_tiny_shards
from test_families import SIZES

LENGTHS = np.array([0, 399, 400, 719, 720, 1000, 3199, 3200, 16000, 16007, 48321])


@pytest.mark.parametrize("model_type", list(families.FAMILIES))
@pytest.mark.parametrize("adapter", [False, True])
def test_prepare_frame_chain_equals_the_models_own_output_lengths(model_type, adapter):
    if adapter and model_type not in ("wav2vec2", "wav2vec2-bert"):
        pytest.skip("adapters exist in wav2vec2 and w2v-BERT")
    processor = families.pair_processor(families.FAMILIES[model_type], build_processor(["HELLO"]))
    model = build_model(ModelConfig(type=model_type, **SIZES), processor)
    if adapter:
        model.config.add_adapter, model.config.num_adapter_layers = True, 2
    layers = families.frame_layers(model.config, processor.feature_extractor)
    ours = [ctc_frames(int(n), layers) for n in LENGTHS]
    theirs = families.frames_for_samples(model, processor.feature_extractor)(LENGTHS)
    assert ours == theirs.tolist()
    assert max(ours) > 0


def test_training_start_leaves_out_what_the_model_cannot_align(tmp_path):
    shards = write_tiny_shards(tmp_path / "train", [8, 8], seed=3, min_s=0.1, max_s=0.6)
    index = load_index(str(shards))
    model = build_model(ModelConfig(), build_processor(["HELLO"]))  # wav2vec2's 320 samples per frame
    kept, dropped = drop_unalignable(index, families.frames_for_samples(model, build_processor(["H"]).feature_extractor))
    expected = {x.key for sh in index.shards for x in sh.samples
                if ctc_frames(round(x.duration * 16000)) < ctc_label_count(x.text)}
    assert dropped == len(expected) > 0
    assert {x.key for sh in kept.shards for x in sh.samples} == {x.key for sh in index.shards
                                                                for x in sh.samples} - expected


def test_prepare_checks_ctc_lengths_against_the_given_models_frame_rate(tmp_path):
    # 1 s of audio, 30 characters: wav2vec2 has 49 frames of 20 ms; w2v-BERT with a stride-2 adapter 25 of 40 ms
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.2 * np.sin(np.arange(16000) / 9)).astype(np.float32), 16000, subtype="PCM_16")
    utts = [Utterance("a", str(wav), "ABCDEFGHIJ ABCDEFGHIJ ABCDEFGH"), Utterance("b", str(wav), "ABC")]
    assert write_shards(utts, tmp_path / "plain", num_workers=0).num_rejected == 0
    config = Wav2Vec2BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                add_adapter=True, num_adapter_layers=1)
    config.save_pretrained(tmp_path / "w2v-bert")
    layers = families.frame_layers_for(str(tmp_path / "w2v-bert"))
    assert ctc_frames(16000, layers) == 25 and ctc_frames(16000, WAV2VEC2_CONV_LAYERS) == 49
    summary = write_shards(utts, tmp_path / "bert", num_workers=0, ctc_layers=layers)
    rejects = [json.loads(line) for line in (tmp_path / "bert" / "rejects.jsonl").read_text().splitlines()]
    assert summary.num_rejected == 1 and rejects[0]["reason"] == "too_short_for_ctc" and rejects[0]["key"] == "a"
    assert "25 frames of 40 ms" in rejects[0]["detail"]
