"""The CTC model: built from a checkpoint or from `ModelConfig`, then partly frozen.

Any family of asr_dist/families.py (wav2vec2, HuBERT, WavLM, data2vec-audio, wav2vec2-conformer, w2v-BERT 2.0):
the table says which classes build it and where its front end and layers are; nothing here names a family.

Two sources:
- `model.pretrained` = a hub id (`facebook/wav2vec2-base`) or a local `save_pretrained` folder of any
  `AutoModelForCTC` class (its family from its config's model_type; `model.type` is then ignored). The encoder
  comes from the checkpoint; the CTC head is always sized to *our* vocabulary and freshly initialized
  (unless `model.keep_pretrained_head`, for continuing from a model trained with this very vocabulary).
  Architecture fields of ModelConfig (sizes, conv layers) are then ignored; the regularization fields
  (dropouts, SpecAugment, layerdrop) still apply.
- otherwise a model of family `model.type` with ModelConfig's sizes and random weights (the tests' and the
  demo's tiny models; sizes a family has no use for, such as conv layers for w2v-BERT, are ignored).

Either way the loss is the CTC *sum* with `zero_infinity`: the trainer divides it by the target tokens
of the whole global batch (loss.py), which a per-sample mean would make impossible.

Freezing (see `freeze_parameters` and `EncoderFreeze`) happens before the optimizer is built, so frozen
parameters never get optimizer state, and the set of trainable parameters handed to DDP or DeepSpeed never
changes afterwards.
"""

from __future__ import annotations

import logging

import torch

from asr_dist import families
from asr_dist.config import ConfigError, FreezingConfig, ModelConfig

log = logging.getLogger(__name__)

_REGULARIZATION = ("hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout",
                   "final_dropout", "layerdrop", "mask_time_prob", "mask_time_length", "mask_feature_prob",
                   "mask_feature_length")


def _ctc_settings(cfg: ModelConfig, processor) -> dict:
    """Settings imposed on every model, pretrained or not: our vocabulary, summed CTC, our regularization."""
    tokenizer = processor.tokenizer
    return dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,  # also the CTC blank
        ctc_loss_reduction="sum",
        ctc_zero_infinity=True,  # an impossible alignment (text too long for the audio) gives 0, not inf
        **{name: getattr(cfg, name) for name in _REGULARIZATION},
        **({"add_adapter": True} if cfg.add_adapter else {}),
        **({"adapter_attn_dim": cfg.adapter_attn_dim} if cfg.adapter_attn_dim else {}),  # MMS-style adapters
    )


def model_family(cfg: ModelConfig) -> families.Family:
    """The family of the model `cfg` describes: the checkpoint's own for `model.pretrained`, else model.type."""
    if cfg.pretrained:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(cfg.pretrained).model_type
        if cfg.type not in ("wav2vec2", model_type):  # (the default says nothing: any checkpoint is fine)
            raise ConfigError(f"model.type = {cfg.type!r} but model.pretrained = {cfg.pretrained} is a "
                              f"{model_type!r} checkpoint; drop model.type or make them agree")
        return families.family(model_type)
    return families.family(cfg.type)


def build_model(cfg: ModelConfig, processor) -> torch.nn.Module:
    """The model described by `cfg`, with a CTC head over `processor`'s vocabulary (see module doc).

    Under DeepSpeed ZeRO-3 call this before creating the Accelerator: `from_pretrained` inside an active
    ZeRO-3 config crashes on wav2vec2's weight-normed positional convolution (shared/facts).
    """
    settings = _ctc_settings(cfg, processor)
    fam = model_family(cfg)
    model_class = families.model_class(fam)
    if cfg.pretrained:
        model = model_class.from_pretrained(cfg.pretrained, ignore_mismatched_sizes=True, **settings)
        if not cfg.keep_pretrained_head:
            # ignore_mismatched_sizes only re-initializes a head of another size; a head of the same size
            # trained on another vocabulary would silently map our labels to its characters.
            head = getattr(model, fam.head)
            with torch.no_grad():
                head.weight.normal_(0.0, model.config.initializer_range)  # as transformers inits it
                head.bias.zero_()
        log.info("loaded %s (%s, %d layers, hidden %d); CTC head over %d labels%s", cfg.pretrained, fam.model_type,
                 model.config.num_hidden_layers, model.config.hidden_size, settings["vocab_size"],
                 " (kept)" if cfg.keep_pretrained_head else " (fresh)")
    else:
        sizes = {name: getattr(cfg, name) for name in families.SIZE_FIELDS}
        model = model_class(families.config_from_sizes(fam, sizes, settings))
    for path in fam.unused:  # modules the forward never calls: no gradient ever, so DDP must not wait for one
        families.submodule(families.base_model(model, fam), path).requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable()  # (transformers 5 name of gradient_checkpointing_enable)
    return model


def freeze_parameters(model: torch.nn.Module, cfg: FreezingConfig) -> None:
    """Permanent freezing: requires_grad=False, before the optimizer exists (so no optimizer state).

    `feature_encoder` freezes the family's front end (wav2vec2's CNN over raw audio; w2v-BERT's projection
    of the filterbank frames). `lower_layers = N` freezes transformer layers 0..N-1 and everything beneath
    them (front end, feature projection, positional convolution, the input layer norm of post-LN encoders,
    SpecAugment's mask embedding): training something under a frozen layer would only spend backward
    passes through it. Which modules those are per family: asr_dist/families.py, docs/models.md.
    """
    if getattr(cfg, "adapters_only", False):  # MMS-style: only adapter layers and the CTC head learn
        from asr_dist.adapters import freeze_all_but_adapters

        freeze_all_but_adapters(model)
        return
    fam = families.family_of(model)
    if cfg.feature_encoder or cfg.lower_layers > 0:
        for module in families.front_end_modules(model, fam):
            module.requires_grad_(False)
            if hasattr(module, "_requires_grad"):  # the CNN then also skips building its autograd graph
                module._requires_grad = False
    layers = families.encoder_layers(model, fam)
    if cfg.lower_layers > len(layers):
        raise ConfigError(f"freezing.lower_layers = {cfg.lower_layers} is not allowed; the model has only "
                          f"{len(layers)} transformer layers")
    if cfg.lower_layers > 0:
        for module in families.beneath_layer_modules(model, fam) + list(layers[: cfg.lower_layers]):
            module.requires_grad_(False)
        base = families.base_model(model, fam)
        if getattr(base, "masked_spec_embed", None) is not None:
            base.masked_spec_embed.requires_grad_(False)


class EncoderFreeze:
    """fairseq's `freeze_finetune_updates`: only the CTC head learns during the first K updates. ZeRO-safe.

    The parameter set handed to DDP/DeepSpeed never changes (toggling requires_grad mid-run would break
    ZeRO's flat partitions). Instead, while active, `model.wav2vec2` runs with autograd off (as fairseq
    does: no encoder gradients, no backward through it), and the trainer gives the encoder param groups
    lr 0 (so no weight decay or momentum residue can move them). DDP must be built with
    find_unused_parameters=True while this can be active (train.py does that). "The encoder" is the family's
    base model (`model.wav2vec2`, `model.hubert`, `model.wav2vec2_bert`, ...): everything but the CTC head.
    """

    def __init__(self, model: torch.nn.Module, updates: int):
        self.updates = updates
        self.active = updates > 0
        self._saved_grad_mode: bool | None = None
        if updates > 0:
            encoder = families.base_model(model, families.family_of(model))
            encoder.register_forward_pre_hook(self._enter)
            encoder.register_forward_hook(self._leave)

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
    """The CTC head (`lm_head` in every family of the table); everything else is encoder."""
    return name.startswith(tuple(f"{head}." for head in families.HEADS))


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
