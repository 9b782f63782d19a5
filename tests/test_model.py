"""Model building, freezing and optimizer groups, in one process (fast)."""

from __future__ import annotations

import pytest
import torch

from asr_dist.config import ConfigError, FreezingConfig, ModelConfig, OptimizerConfig
from asr_dist.loss import backward_scale, target_tokens
from asr_dist.model import EncoderFreeze, build_model, freeze_parameters
from asr_dist.optim import build_optimizer
from asr_dist.text import build_processor

TINY = dict(conv_dim=[16, 16, 16], conv_kernel=[10, 3, 3], conv_stride=[5, 4, 4], hidden_size=32, num_hidden_layers=3,
            num_attention_heads=2, intermediate_size=64, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            hidden_dropout=0.0, attention_dropout=0.0, mask_time_prob=0.0)


@pytest.fixture(scope="module")
def processor():
    return build_processor(["HELLO WORLD", "THE QUICK BROWN FOX"])


def batch(processor, seconds: float = 1.0, n: int = 2) -> dict:
    torch.manual_seed(0)
    labels = torch.tensor([processor.tokenizer("HELLO").input_ids + [-100] * 2, processor.tokenizer("THE FOX").input_ids])
    return {"input_values": torch.randn(n, int(16000 * seconds)), "labels": labels[:n]}


def test_built_model_fits_the_vocabulary_and_sums_ctc(processor):
    model = build_model(ModelConfig(**TINY), processor)
    assert model.config.vocab_size == len(processor.tokenizer) == model.lm_head.out_features
    assert model.config.pad_token_id == processor.tokenizer.pad_token_id
    b = batch(processor)
    both = model(**b).loss
    each = sum(model(input_values=b["input_values"][i:i + 1], labels=b["labels"][i:i + 1]).loss for i in range(2))
    assert both.item() == pytest.approx(each.item(), rel=1e-5)  # a sum, not a mean over samples or tokens


def test_pretrained_folder_gets_a_fresh_head_for_our_vocabulary(processor, tmp_path):
    source = build_model(ModelConfig(**TINY), build_processor(["ABC"]))  # another, smaller vocabulary
    source.save_pretrained(tmp_path / "pretrained")
    model = build_model(ModelConfig(pretrained=str(tmp_path / "pretrained"), mask_time_prob=0.0), processor)
    assert model.lm_head.out_features == len(processor.tokenizer)
    src = source.state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith("lm_head."):
            assert torch.equal(value, src[name]), name  # the encoder is the checkpoint's

    # same vocabulary size but (potentially) other characters: the head is still re-initialized...
    same_size = build_model(ModelConfig(**TINY), processor)
    same_size.save_pretrained(tmp_path / "same_size")
    fresh = build_model(ModelConfig(pretrained=str(tmp_path / "same_size")), processor)
    assert not torch.equal(fresh.lm_head.weight, same_size.lm_head.weight)
    # ...unless we say it was trained on this vocabulary
    kept = build_model(ModelConfig(pretrained=str(tmp_path / "same_size"), keep_pretrained_head=True), processor)
    assert torch.equal(kept.lm_head.weight, same_size.lm_head.weight)
    assert kept.config.ctc_loss_reduction == "sum" and kept.config.ctc_zero_infinity


def test_lower_layers_freeze_everything_beneath_and_get_no_optimizer_state(processor):
    model = build_model(ModelConfig(**TINY), processor)
    freeze_parameters(model, FreezingConfig(feature_encoder=False, lower_layers=2))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("wav2vec2.feature_extractor.") for n in frozen)  # beneath layer 0
    assert any(n.startswith("wav2vec2.feature_projection.") for n in frozen)
    assert any(n.startswith("wav2vec2.encoder.layers.1.") for n in frozen)
    assert not any(n.startswith(("wav2vec2.encoder.layers.2.", "lm_head.")) for n in frozen)

    optimizer = build_optimizer(model, OptimizerConfig(lr=1e-3, encoder_lr=1e-4, weight_decay=0.01))
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for n, p in model.named_parameters() if n in frozen)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["head"]["lr"] == 1e-3 and groups["encoder"]["lr"] == 1e-4
    assert groups["encoder_no_decay"]["weight_decay"] == 0.0 and groups["encoder"]["weight_decay"] == 0.01

    model(**batch(processor)).loss.backward()
    optimizer.step()
    assert all(len(optimizer.state[p]) == 0 for n, p in model.named_parameters() if n in frozen)

    with pytest.raises(ConfigError, match="freezing.lower_layers"):
        freeze_parameters(build_model(ModelConfig(**TINY), processor), FreezingConfig(lower_layers=4))


def test_encoder_freeze_runs_the_encoder_without_autograd_then_releases_it(processor):
    model = build_model(ModelConfig(**TINY), processor)
    freeze = EncoderFreeze(model, updates=2)
    for step, encoder_learns in [(0, False), (1, False), (2, True)]:
        model.zero_grad(set_to_none=True)
        freeze.set_step(step)
        model(**batch(processor)).loss.backward()
        encoder_grads = [p.grad for n, p in model.named_parameters() if not n.startswith("lm_head.")]
        assert model.lm_head.weight.grad is not None
        assert all(g is not None for g in encoder_grads) == encoder_learns
        assert all(g is None for g in encoder_grads) == (not encoder_learns)
        assert torch.is_grad_enabled()  # the hook restored grad mode
    model.eval()
    freeze.set_step(0)
    with torch.no_grad():
        model(input_values=batch(processor)["input_values"])
    assert torch.is_grad_enabled()


def test_backward_scale_undoes_the_accumulation_and_rank_means():
    labels = torch.tensor([[5, 6, -100], [7, 0, -100]])  # 0 = blank/pad is not a target
    assert int(target_tokens(labels, blank_id=0)) == 3
    # 2 ranks x 4 micro-batches, 120 target tokens in the step: each micro-batch's CTC sum x 8 / 120,
    # then / 4 (accumulation) and averaged over 2 ranks = sum over everything / 120
    assert backward_scale(120, grad_accum=4, world_size=2) == pytest.approx(8 / 120)
    assert backward_scale(0, grad_accum=4, world_size=2) == 0.0


def test_gradient_checkpointing_gives_the_same_gradients(processor):
    torch.manual_seed(0)
    plain = build_model(ModelConfig(**TINY), processor)
    checkpointed = build_model(ModelConfig(**TINY, gradient_checkpointing=True), processor)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.is_activation_checkpointing and not plain.is_activation_checkpointing
    b = batch(processor)
    for model in (plain, checkpointed):
        model.train()
        model(**b).loss.backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
