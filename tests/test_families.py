"""Every encoder family of asr_dist/families.py: a tiny model trains (1 process, loss falls), exports, and
`transformers.pipeline` on the export transcribes exactly as `asr-dist transcribe` and as our own
front end + greedy decoding; plus freezing picks each family's own modules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from asr_dist import cli, families
from asr_dist.config import FreezingConfig, ModelConfig, load_config
from asr_dist.data.frontend import featurize
from asr_dist.evaluate import greedy_decode
from asr_dist.model import build_model, freeze_parameters
from asr_dist.text import build_processor

from _shard_factory import write_tiny_shards
from _tiny_model import audio
from test_train import TINY

FAMILIES = list(families.FAMILIES)
SIZES = dict(conv_dim=[16, 16, 16], conv_kernel=[10, 3, 3], conv_stride=[5, 4, 4], hidden_size=32,
             num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, num_conv_pos_embeddings=16,
             num_conv_pos_embedding_groups=2, mask_time_prob=0.0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_shards")
    train = write_tiny_shards(root / "train", [6, 6], seed=1, min_s=0.6, max_s=1.2)
    dev = write_tiny_shards(root / "dev", [4], seed=2, prefix="dev", min_s=0.6, max_s=1.2)
    texts = [s["text"] for sh in json.loads((train / "index.json").read_text())["shards"] for s in sh["samples"]]
    build_processor(texts, train / "processor")
    return train, dev


@pytest.mark.parametrize("model_type", FAMILIES)
def test_tiny_model_of_each_family_trains_exports_and_transcribes_like_the_pipeline(model_type, shards, tmp_path,
                                                                                   capsys):
    from asr_dist.train import run

    train, dev = shards
    sizes = [f"model.{k}={json.dumps(v)}" for k, v in SIZES.items()]
    cfg = load_config(TINY, [f"data.train_shards={train}", f"data.eval_shards={dev}", f"model.type={model_type}",
                             f"train.run_dir={tmp_path / 'run'}", "train.max_steps=12", "optimizer.lr=0.005",
                             "data.max_batch_seconds=4", "data.max_duration=2", "train.log_every=12",
                             "checkpoint.every_steps=12", *sizes])
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        result = run(cfg)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    losses = result["losses"]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses  # the loss falls
    export = tmp_path / "run" / "export"
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == model_type and config["vocab_size"] == result_vocab(train)
    # `asr-dist export` of the checkpoint writes the same weights as the live export
    assert cli.main(["export", str(tmp_path / "run"), str(tmp_path / "offline")]) == 0
    live, offline = load_file(str(export / "model.safetensors")), load_file(str(tmp_path / "offline" /
                                                                              "model.safetensors"))
    assert live.keys() == offline.keys() and all(torch.equal(live[k], offline[k]) for k in live)
    capsys.readouterr()

    wave = audio(1.1, seed=5)
    wav = tmp_path / "probe.wav"
    sf.write(wav, wave, 16000, subtype="FLOAT")
    assert cli.main(["transcribe", str(export), str(wav)]) == 0
    transcribed = capsys.readouterr().out.rstrip("\n").split("\t", 1)[1]
    pipe = transformers.pipeline("automatic-speech-recognition", model=str(export), device="cpu")
    assert pipe({"raw": wave, "sampling_rate": 16000})["text"] == transcribed

    # our front end (the DataLoader's) + the model + greedy decoding: the same frames, the same text
    processor = transformers.AutoProcessor.from_pretrained(str(export))
    model = transformers.AutoModelForCTC.from_pretrained(str(export)).eval()
    ours, mask = featurize(processor.feature_extractor, [wave], 16000)
    theirs = processor.feature_extractor(wave, sampling_rate=16000, return_tensors="pt")
    name = model.main_input_name
    with torch.no_grad():
        our_logits = model(**{name: torch.from_numpy(ours)}, attention_mask=torch.from_numpy(mask)).logits
        their_logits = model(**{name: theirs[name]}, attention_mask=theirs.get("attention_mask")).logits
    torch.testing.assert_close(our_logits, their_logits, rtol=1e-3, atol=2e-3)
    assert greedy_decode(our_logits, processor)[0] == transcribed


def result_vocab(train) -> int:
    return len(transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(train / "processor")))


FRONT_END = {"wav2vec2": "wav2vec2.feature_extractor.", "hubert": "hubert.feature_extractor.",
             "wavlm": "wavlm.feature_extractor.", "data2vec-audio": "data2vec_audio.feature_extractor.",
             "wav2vec2-conformer": "wav2vec2_conformer.feature_extractor.",
             "wav2vec2-bert": "wav2vec2_bert.feature_projection.", "parakeet_ctc": "encoder.subsampling."}


@pytest.mark.parametrize("model_type", FAMILIES)
def test_freezing_takes_each_familys_front_end_and_lowest_layers(model_type):
    processor = build_processor(["HELLO WORLD"])
    model = build_model(ModelConfig(type=model_type, **SIZES), processor)
    base = families.FAMILIES[model_type].base
    always_frozen = {n for n, p in model.named_parameters() if not p.requires_grad}  # modules never called
    freeze_parameters(model, FreezingConfig(feature_encoder=True))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad} - always_frozen
    assert frozen and all(n.startswith(FRONT_END[model_type]) for n in frozen), sorted(frozen)
    assert sum(1 for n, _ in model.named_parameters() if n.startswith(FRONT_END[model_type])) == len(frozen)

    model = build_model(ModelConfig(type=model_type, **SIZES), processor)
    freeze_parameters(model, FreezingConfig(feature_encoder=False, lower_layers=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    fam = families.FAMILIES[model_type]
    top_layer = f"{base}.{fam.layers}.2."
    # above layer 1 everything learns, at and below it nothing does
    assert all(n.startswith((top_layer, f"{fam.head}.")) or
               (n.startswith(f"{base}.encoder.layer_norm.") and not fam.input_norm_first(model.config))
               for n in trainable), sorted(trainable)
    assert any(n.startswith(top_layer) for n in trainable)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "zero2", "zero3"])
@pytest.mark.parametrize("model_type", ["hubert", "wav2vec2-bert"])
def test_two_processes_train_the_family_under_each_backend(model_type, backend, shards, tmp_path):
    from types import SimpleNamespace

    from test_train import launch, train_rows

    train, dev = shards
    run_dir = tmp_path / "run"
    sizes = [f"model.{k}={json.dumps(v)}" for k, v in SIZES.items()]
    proc = launch(backend, run_dir, SimpleNamespace(train=train, dev=dev),
                  [f"model.type={model_type}", *sizes, "train.max_steps=10", "optimizer.lr=0.005",
                   "train.mixed_precision=no", "checkpoint.every_steps=0", "data.max_batch_seconds=4",
                   "data.max_duration=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [r["loss"] for r in train_rows(run_dir)]
    print(f"\n{model_type} {backend} losses", [round(x, 3) for x in losses])
    assert len(losses) == 10 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert json.loads((run_dir / "export" / "config.json").read_text())["model_type"] == model_type
