"""The Wav2Vec2-CTC model: built from a checkpoint or from `ModelConfig`, then partly frozen.

Two sources:
- `model.pretrained` = a hub id (`facebook/wav2vec2-base`) or a local `save_pretrained` folder. The encoder
  comes from the checkpoint; the CTC head is always sized to *our* vocabulary and freshly initialized
  (unless `model.keep_pretrained_head`, for continuing from a model trained with this very vocabulary).
  Architecture fields of ModelConfig (sizes, conv layers) are then ignored; the regularization fields
  (dropouts, SpecAugment, layerdrop) still apply.
- otherwise a model of ModelConfig's sizes with random weights (the tests' and the demo's tiny models).

Either way the loss is the CTC *sum* with `zero_infinity`: the trainer divides it by the target tokens
of the whole global batch (loss.py), which a per-sample mean would make impossible.

Freezing (see `freeze_parameters` and `EncoderFreeze`) happens before the optimizer is built, so frozen
parameters never get optimizer state, and the set of trainable parameters handed to DDP or DeepSpeed never
changes afterwards.
"""

from __future__ import annotations

import logging

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Processor

from asr_dist.config import ConfigError, FreezingConfig, ModelConfig

log = logging.getLogger(__name__)

_REGULARIZATION = ("hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout",
                   "final_dropout", "layerdrop", "mask_time_prob", "mask_time_length", "mask_feature_prob",
                   "mask_feature_length")


def _ctc_settings(cfg: ModelConfig, processor: Wav2Vec2Processor) -> dict:
    """Settings imposed on every model, pretrained or not: our vocabulary, summed CTC, our regularization."""
    tokenizer = processor.tokenizer
    return dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,  # also the CTC blank
        ctc_loss_reduction="sum",
        ctc_zero_infinity=True,  # an impossible alignment (text too long for the audio) gives 0, not inf
        **{name: getattr(cfg, name) for name in _REGULARIZATION},
    )


def build_model(cfg: ModelConfig, processor: Wav2Vec2Processor) -> Wav2Vec2ForCTC:
    """The model described by `cfg`, with a CTC head over `processor`'s vocabulary (see module doc).

    Under DeepSpeed ZeRO-3 call this before creating the Accelerator: `from_pretrained` inside an active
    ZeRO-3 config crashes on wav2vec2's weight-normed positional convolution (shared/facts).
    """
    settings = _ctc_settings(cfg, processor)
    if cfg.pretrained:
        model = Wav2Vec2ForCTC.from_pretrained(cfg.pretrained, ignore_mismatched_sizes=True, **settings)
        if not cfg.keep_pretrained_head:
            # ignore_mismatched_sizes only re-initializes a head of another size; a head of the same size
            # trained on another vocabulary would silently map our labels to its characters.
            with torch.no_grad():
                model.lm_head.weight.normal_(0.0, model.config.initializer_range)  # as transformers inits it
                model.lm_head.bias.zero_()
        log.info("loaded %s (%d layers, hidden %d); CTC head over %d labels%s", cfg.pretrained,
                 model.config.num_hidden_layers, model.config.hidden_size, settings["vocab_size"],
                 " (kept)" if cfg.keep_pretrained_head else " (fresh)")
    else:
        config = Wav2Vec2Config(
            conv_dim=list(cfg.conv_dim), conv_kernel=list(cfg.conv_kernel), conv_stride=list(cfg.conv_stride),
            num_feat_extract_layers=len(cfg.conv_dim),
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
            num_conv_pos_embeddings=cfg.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=cfg.num_conv_pos_embedding_groups,
            feat_extract_norm=cfg.feat_extract_norm, do_stable_layer_norm=cfg.do_stable_layer_norm,
            adapter_attn_dim=cfg.adapter_attn_dim or None,
            **settings,
        )
        model = Wav2Vec2ForCTC(config)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable()  # (transformers 5 name of gradient_checkpointing_enable)
    return model


def freeze_parameters(model: Wav2Vec2ForCTC, cfg: FreezingConfig) -> None:
    """Permanent freezing: requires_grad=False, before the optimizer exists (so no optimizer state).

    `lower_layers = N` freezes transformer layers 0..N-1 and everything beneath them (CNN feature
    encoder, feature projection, positional convolution, input layer norm, SpecAugment's mask
    embedding): training something under a frozen layer would only spend backward passes through it.
    """
    wav2vec2 = model.wav2vec2
    if getattr(cfg, "adapters_only", False):  # MMS-style: only adapter layers and the CTC head learn
        from asr_dist.adapters import freeze_all_but_adapters

        freeze_all_but_adapters(model)
        return
    if cfg.feature_encoder or cfg.lower_layers > 0:
        model.freeze_feature_encoder()
    layers = wav2vec2.encoder.layers
    if cfg.lower_layers > len(layers):
        raise ConfigError(f"freezing.lower_layers = {cfg.lower_layers} is not allowed; the model has only "
                          f"{len(layers)} transformer layers")
    if cfg.lower_layers > 0:
        below = [wav2vec2.feature_projection, wav2vec2.encoder.pos_conv_embed]
        if not model.config.do_stable_layer_norm:  # post-LN models normalize the input of layer 0
            below.append(wav2vec2.encoder.layer_norm)
        for module in below + list(layers[: cfg.lower_layers]):
            module.requires_grad_(False)
        if getattr(wav2vec2, "masked_spec_embed", None) is not None:
            wav2vec2.masked_spec_embed.requires_grad_(False)


class EncoderFreeze:
    """fairseq's `freeze_finetune_updates`: only the CTC head learns during the first K updates. ZeRO-safe.

    The parameter set handed to DDP/DeepSpeed never changes (toggling requires_grad mid-run would break
    ZeRO's flat partitions). Instead, while active, `model.wav2vec2` runs with autograd off (as fairseq
    does: no encoder gradients, no backward through it), and the trainer gives the encoder param groups
    lr 0 (so no weight decay or momentum residue can move them). DDP must be built with
    find_unused_parameters=True while this can be active (train.py does that).
    """

    def __init__(self, model: Wav2Vec2ForCTC, updates: int):
        self.updates = updates
        self.active = updates > 0
        self._saved_grad_mode: bool | None = None
        if updates > 0:
            model.wav2vec2.register_forward_pre_hook(self._enter)
            model.wav2vec2.register_forward_hook(self._leave)

    def set_step(self, step: int) -> None:
        """Call before each update with the number of updates done so far."""
        self.active = step < self.updates

    def _enter(self, module: torch.nn.Module, args) -> None:
        if self.active and module.training:
            self._saved_grad_mode = torch.is_grad_enabled()
            torch.set_grad_enabled(False)

    def _leave(self, module: torch.nn.Module, args, output) -> None:
        if self._saved_grad_mode is not None:
            torch.set_grad_enabled(self._saved_grad_mode)
            self._saved_grad_mode = None


def is_head_parameter(name: str) -> bool:
    """The CTC head is `lm_head`; everything else is encoder (names as in Wav2Vec2ForCTC)."""
    return name.startswith("lm_head.")


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def takes_attention_mask(processor) -> bool:
    """Whether the model gets an attention mask: its feature extractor says so (wav2vec2-base style models,
    feat_extract_norm="group", must not get one: their group norm was trained over padded batches)."""
    return bool(getattr(processor.feature_extractor, "return_attention_mask", True))


def padding_changes_outputs(model, processor) -> bool:
    """Whether zero padding changes what the model computes for an utterance: a group-norm feature encoder
    (wav2vec2-base style) normalizes over the whole padded length, and a model without an attention mask attends
    to the padding. Such models are evaluated one utterance per batch, so that scores never depend on batching."""
    config = getattr(model, "config", None)
    return getattr(config, "feat_extract_norm", "layer") == "group" or not takes_attention_mask(processor)
