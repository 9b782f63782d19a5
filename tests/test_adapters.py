"""MMS-style adapter training (asr_dist/adapters.py): only adapter and head tensors move, in one process and
under DDP / ZeRO-2; the saved adapter.<lang>.safetensors loads into a fresh model and transcribes the same."""

from __future__ import annotations

import shutil

import pytest
import torch

from asr_dist.adapters import ADAPTER_FILE, adapter_parameter_names, is_adapter_key, load_with_adapter, write_adapter_file
from asr_dist.config import FreezingConfig, ModelConfig
from asr_dist.model import build_model, freeze_parameters
from asr_dist.text import build_processor

TINY = dict(conv_dim=[16] * 7, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, hidden_dropout=0.0, attention_dropout=0.0,
            mask_time_prob=0.0, adapter_attn_dim=8, do_stable_layer_norm=True, feat_extract_norm="layer")


def _tiny(processor, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**TINY), processor)


def test_only_adapter_and_head_tensors_change_and_the_adapter_loads_back(tmp_path):
    processor = build_processor(["你好世界", "我说hello"], language="zh")
    model = _tiny(processor)
    base_dir = tmp_path / "base"
    model.save_pretrained(str(base_dir))  # the "pretrained" model the adapter is trained for
    freeze_parameters(model, FreezingConfig(adapters_only=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == adapter_parameter_names(model) and trainable
    assert all(is_adapter_key(n) for n in trainable)
    assert any(".adapter_layer." in n for n in trainable) and "lm_head.weight" in trainable
    before = {k: v.clone() for k, v in model.state_dict().items()}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 16000, generator=generator)
    labels = torch.tensor([processor.tokenizer("你好世界").input_ids, processor.tokenizer("我说你好").input_ids])
    model.train()
    for _ in range(3):
        loss = model(input_values=audio, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    for key, value in before.items():
        if is_adapter_key(key):
            assert not torch.equal(value, after[key]), f"{key} did not train"
        else:
            assert torch.equal(value, after[key]), f"{key} changed but is not an adapter or head tensor"

    trained_dir = tmp_path / "trained"
    model.save_pretrained(str(trained_dir))
    path = write_adapter_file(trained_dir, "zh")
    assert path.name == ADAPTER_FILE.format("zh")
    shutil.copy(path, base_dir / path.name)  # ship the adapter next to the base model, as MMS does
    fresh = load_with_adapter(base_dir, "zh").eval()
    model.eval()
    with torch.no_grad():
        expected = model(input_values=audio).logits
        got = fresh(input_values=audio).logits
    assert fresh.target_lang == "zh"
    assert torch.equal(expected.argmax(-1), got.argmax(-1)) and torch.allclose(expected, got, atol=1e-6)


def test_adapter_errors_are_clear(tmp_path):
    processor = build_processor(["ab"])
    plain = build_model(ModelConfig(**{**TINY, "adapter_attn_dim": 0}), processor)
    with pytest.raises(ValueError, match="no adapter layers"):
        freeze_parameters(plain, FreezingConfig(adapters_only=True))
    post_ln = build_model(ModelConfig(**{**TINY, "do_stable_layer_norm": False}), processor)
    with pytest.raises(ValueError, match="pre-LN layout"):
        freeze_parameters(post_ln, FreezingConfig(adapters_only=True))
    plain.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="no adapter layers to save"):
        write_adapter_file(tmp_path, "en")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "zero2"])
def test_adapter_only_training_under_ddp_and_zero2(backend, tiny_shards, tmp_path):
    from accelerate.utils import set_seed
    from safetensors.torch import load_file

    from asr_dist.config import load_config
    from asr_dist.text import load_processor
    from tests.test_train import TINY as TINY_YAML
    from tests.test_train import launch

    overrides = ["train.max_steps=3", "train.grad_accum=1", "train.mixed_precision=no", "optimizer.lr=0.01",
                 "checkpoint.every_steps=0", "model.adapter_attn_dim=8", "model.do_stable_layer_norm=true",
                 "model.feat_extract_norm=layer", "freezing.adapters_only=true"]
    run_dir = tmp_path / "run"
    proc = launch(backend, run_dir, tiny_shards, overrides)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    cfg = load_config(TINY_YAML, [f"data.train_shards={tiny_shards.train}", *overrides])
    set_seed(cfg.train.seed)  # the weights run() started from
    initial = build_model(cfg.model, load_processor(tiny_shards.processor))
    before = initial.state_dict()
    after = load_file(str(run_dir / "export" / "model.safetensors"))
    assert set(after) == set(before)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {k for k in before if is_adapter_key(k)}, sorted(moved ^ {k for k in before if is_adapter_key(k)})

    adapter = run_dir / "export" / ADAPTER_FILE.format("en")
    assert set(load_file(str(adapter))) == moved
    initial.save_pretrained(str(tmp_path / "base"))
    shutil.copy(adapter, tmp_path / "base" / adapter.name)
    fresh = load_with_adapter(tmp_path / "base", "en").eval()
    trained = load_with_adapter(run_dir / "export", "en").eval()
    audio = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fresh(input_values=audio).logits.argmax(-1), trained(input_values=audio).logits.argmax(-1))
