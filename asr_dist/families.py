"""The CTC encoder families asr_dist trains: one table entry per family, no family branches elsewhere.

An entry says what differs between families and nothing more:

* which transformers classes build it (config, `...ForCTC`, feature extractor, processor),
* its input: `raw` waveform (`input_values`, [B, samples]) or `fbank` log-mel filterbank frames
  (`input_features`, [B, frames, dims]) computed by the feature extractor (asr_dist/data/frontend.py),
* where its parts are, for freezing (model.py): the *front end* that turns the input into frames
  (wav2vec2's CNN feature encoder; w2v-BERT's projection of the stacked filterbanks), the modules
  between it and transformer layer 0, and the transformer layers themselves,
* whether its encoder normalizes layer 0's input (post-LN layouts) or its output (pre-LN).

`model.type` names an entry (its transformers `model_type`); `model.pretrained` checkpoints find theirs
from their config's `model_type`. A checkpoint of any other `AutoModelForCTC` class (SEW, UniSpeech, ...)
gets a wav2vec2-like entry derived from it (those are all wav2vec2 descendants with the same layout).

transformers is imported on use, so that config.py can list the names cheaply.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch

log = logging.getLogger(__name__)


def _post_ln(config) -> bool:
    """wav2vec2-style encoders: `encoder.layer_norm` normalizes layer 0's input unless do_stable_layer_norm."""
    return not getattr(config, "do_stable_layer_norm", False)


def _conv_frame_layers(config, stride_of_features: int = 2) -> tuple[tuple[int, int, int], ...]:
    """Raw waveform -> frames: the CNN's (kernel, stride, padding) layers, then the adapter's (kernel 1)."""
    layers = [(k, s, 0) for k, s in zip(config.conv_kernel, config.conv_stride)]
    if getattr(config, "add_adapter", False):
        layers += [(1, config.adapter_stride, 0)] * config.num_adapter_layers
    return tuple(layers)


def _fbank_frame_layers(config, stride_of_features: int = 2) -> tuple[tuple[int, int, int], ...]:
    """Samples -> 25 ms / 10 ms filterbank frames -> stacked steps -> the adapter's strided convolutions."""
    layers = [(400, 160, 0), (stride_of_features, stride_of_features, 0)]
    if getattr(config, "add_adapter", False):
        k = config.adapter_kernel_size
        layers += [(k, config.adapter_stride, k // 2)] * config.num_adapter_layers
    return tuple(layers)


def _parakeet_frame_layers(config, stride_of_features: int = 2) -> tuple[tuple[int, int, int], ...]:
    """Samples -> 10 ms mel frames (samples // 160) -> log2(subsampling_factor) stride-2 convolutions."""
    enc = config.encoder_config
    k = enc.subsampling_conv_kernel_size
    layers = [(160, 160, 0)] + [(k, enc.subsampling_conv_stride, (k - 1) // 2)] * int(math.log2(enc.subsampling_factor))
    return tuple(layers)


def _parakeet_config(sizes: dict, settings: dict):
    """ParakeetCTCConfig: the sizes go to its FastConformer encoder_config, vocabulary and CTC to the top."""
    from transformers import ParakeetCTCConfig, ParakeetEncoderConfig

    encoder = ParakeetEncoderConfig(
        hidden_size=sizes["hidden_size"], num_hidden_layers=sizes["num_hidden_layers"],
        num_attention_heads=sizes["num_attention_heads"], intermediate_size=sizes["intermediate_size"],
        subsampling_conv_channels=max(16, sizes["hidden_size"] // 4), conv_kernel_size=9,
        dropout=settings.get("hidden_dropout", 0.1), attention_dropout=settings.get("attention_dropout", 0.1),
        activation_dropout=settings.get("activation_dropout", 0.1), layerdrop=settings.get("layerdrop", 0.0))
    top = {k: settings[k] for k in ("vocab_size", "pad_token_id", "ctc_loss_reduction", "ctc_zero_infinity")}
    return ParakeetCTCConfig(encoder_config=encoder.to_dict(), **top)


@dataclass(frozen=True)
class Family:
    model_type: str  # transformers' config.model_type; also the value of model.type
    config_class: str
    model_class: str
    feature_extractor_class: str
    processor_class: str  # pairs feature_extractor_class with our Wav2Vec2CTCTokenizer
    input_kind: Literal["raw", "fbank"]
    base: str  # attribute of the ForCTC model holding the encoder (transformers' base_model_prefix)
    front_end: tuple[str, ...]  # modules under `base` that turn the input into frames (freezing.feature_encoder)
    beneath_layers: tuple[str, ...]  # modules under `base` between the front end and layer 0
    layers: str = "encoder.layers"  # the transformer/conformer blocks under `base`
    head: str = "lm_head"  # the CTC head (fresh for our vocabulary)
    input_norm_first: Callable[[Any], bool] = lambda config: False  # encoder.layer_norm feeds layer 0?
    # its forward takes an attention mask (all do); whether one is *passed* is the feature extractor's
    # return_attention_mask: wav2vec2-base-style checkpoints (group-norm CNN) say no, and must not get one
    attention_mask: bool = True
    # samples -> model frames as a chain of (kernel, stride, padding) windows, for `asr-dist prepare`'s CTC check
    frame_layers: Callable[..., tuple] = _conv_frame_layers
    unused: tuple[str, ...] = ()  # modules under `base` its forward never calls (frozen: DDP waits for no gradient)
    # extra config values for models built from ModelConfig sizes (tests, demo, benchmarks)
    from_sizes: dict = field(default_factory=dict)
    config_builder: Callable | None = None  # (sizes, settings) -> config, where the sizes are nested


_WAV2VEC2_LIKE = dict(input_kind="raw", front_end=("feature_extractor",),
                      beneath_layers=("feature_projection", "encoder.pos_conv_embed"), input_norm_first=_post_ln,
                      feature_extractor_class="Wav2Vec2FeatureExtractor", processor_class="Wav2Vec2Processor")

FAMILIES: dict[str, Family] = {f.model_type: f for f in [
    Family("wav2vec2", "Wav2Vec2Config", "Wav2Vec2ForCTC", base="wav2vec2", **_WAV2VEC2_LIKE),
    Family("hubert", "HubertConfig", "HubertForCTC", base="hubert", **_WAV2VEC2_LIKE),
    Family("wavlm", "WavLMConfig", "WavLMForCTC", base="wavlm", **_WAV2VEC2_LIKE),
    # data2vec-audio: layer-normed convolutions always, post-LN encoder; 5 positional conv layers of kernel 19
    # (its num_conv_pos_embeddings counts positional conv *layers*: keep its published 5)
    Family("data2vec-audio", "Data2VecAudioConfig", "Data2VecAudioForCTC", base="data2vec_audio",
           **{**_WAV2VEC2_LIKE, "input_norm_first": lambda config: True}, from_sizes=dict(num_conv_pos_embeddings=5)),
    # conformer blocks; encoder.layer_norm closes the stack (pre-LN); relative/rotary positions have no weights;
    # transformers builds a positional convolution that the conformer encoder's forward never calls
    Family("wav2vec2-conformer", "Wav2Vec2ConformerConfig", "Wav2Vec2ConformerForCTC", base="wav2vec2_conformer",
           **{**_WAV2VEC2_LIKE, "input_norm_first": lambda config: False,
              "beneath_layers": ("feature_projection",)}, unused=("encoder.pos_conv_embed",),
           from_sizes=dict(position_embeddings_type="relative", conv_depthwise_kernel_size=15)),
    # w2v-BERT 2.0: 80 log-mel filterbanks, 2 frames stacked (160 dims, 20 ms), projected: that is its front end
    Family("wav2vec2-bert", "Wav2Vec2BertConfig", "Wav2Vec2BertForCTC", "SeamlessM4TFeatureExtractor",
           "Wav2Vec2BertProcessor", input_kind="fbank", base="wav2vec2_bert", front_end=("feature_projection",),
           beneath_layers=(), frame_layers=_fbank_frame_layers,
           from_sizes=dict(conv_depthwise_kernel_size=15, add_adapter=False)),
    # Parakeet CTC (NVIDIA FastConformer): 80 mel frames of 10 ms (its own extractor), 8x conv subsampling
    # front end, conformer layers with batch norm; no SpecAugment in transformers' implementation
    Family("parakeet_ctc", "ParakeetCTCConfig", "ParakeetForCTC", "ParakeetFeatureExtractor", "Wav2Vec2Processor",
           input_kind="fbank", base="encoder", front_end=("subsampling",), beneath_layers=(), layers="layers",
           head="ctc_head", frame_layers=_parakeet_frame_layers, config_builder=_parakeet_config),
]}

HEADS = sorted({f.head for f in FAMILIES.values()})

# The wav2vec2 ModelConfig fields that size a model built from scratch (each family takes those it knows).
SIZE_FIELDS = ("conv_dim", "conv_kernel", "conv_stride", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "feat_extract_norm",
               "do_stable_layer_norm")


def family(model_type: str) -> Family:
    """The entry for `model_type`; an unknown AutoModelForCTC type gets a wav2vec2-like entry."""
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

    if model_type not in MODEL_FOR_CTC_MAPPING_NAMES:
        raise ValueError(f"model type {model_type!r} has no CTC model in transformers; known: "
                         f"{', '.join(sorted(MODEL_FOR_CTC_MAPPING_NAMES))}")
    config_class = type(AutoConfig.for_model(model_type)).__name__
    model_class = MODEL_FOR_CTC_MAPPING_NAMES[model_type]
    import transformers

    base = getattr(transformers, model_class).base_model_prefix
    log.warning("model type %r is not in asr_dist's family table; treating it as wav2vec2-like "
                "(raw waveform, CNN feature encoder)", model_type)
    return Family(model_type, config_class, model_class, base=base, **_WAV2VEC2_LIKE)


def family_of(model: torch.nn.Module) -> Family:
    return family(model.config.model_type)


def _cls(name: str):
    import transformers

    return getattr(transformers, name)


# ----------------------------------------------------------------------------- building


def config_from_sizes(fam: Family, sizes: dict, settings: dict):
    """The family's config with the given sizes: keys the family's config does not have are left out
    (conv layers mean nothing to w2v-BERT), then the family's own small-model values and `settings`."""
    if fam.config_builder is not None:
        return fam.config_builder(sizes, settings)
    config_class = _cls(fam.config_class)
    known = set(config_class().to_dict())
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sizes.items() if k in known}
    if "conv_dim" in kwargs:
        kwargs["num_feat_extract_layers"] = len(kwargs["conv_dim"])
    kwargs.update(fam.from_sizes)
    kwargs.update({k: v for k, v in settings.items() if k in known})
    return config_class(**kwargs)


def model_class(fam: Family):
    return _cls(fam.model_class)


def base_model(model: torch.nn.Module, fam: Family) -> torch.nn.Module:
    return getattr(model, fam.base)


def submodule(root: torch.nn.Module, path: str) -> torch.nn.Module | None:
    node = root
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def front_end_modules(model, fam: Family) -> list[torch.nn.Module]:
    base = base_model(model, fam)
    return [m for m in (submodule(base, p) for p in fam.front_end) if m is not None]


def beneath_layer_modules(model, fam: Family) -> list[torch.nn.Module]:
    """Everything between the front end and layer 0: frozen with the lowest layers (freezing.lower_layers)."""
    base = base_model(model, fam)
    paths = list(fam.beneath_layers) + (["encoder.layer_norm"] if fam.input_norm_first(model.config) else [])
    return [m for m in (submodule(base, p) for p in paths) if m is not None]


def encoder_layers(model, fam: Family) -> torch.nn.ModuleList:
    return submodule(base_model(model, fam), fam.layers)


def output_lengths(model, input_lengths: torch.Tensor) -> torch.Tensor:
    """Model frames for inputs of `input_lengths` steps (samples for raw input, feature frames for fbank)."""
    if hasattr(model, "_get_feat_extract_output_lengths"):
        return model._get_feat_extract_output_lengths(input_lengths).to(torch.long)
    return model._get_subsampling_output_length(input_lengths).to(torch.long)  # Parakeet


def frames_for_samples(model, feature_extractor) -> Callable:
    """samples (int array) -> the model's output frames, by the model's own output-length function."""
    from asr_dist.data.frontend import input_lengths_for_samples

    def frames(samples):
        steps = torch.tensor([input_lengths_for_samples(feature_extractor, int(n)) for n in samples])
        return output_lengths(model, steps).clamp(min=0).numpy()

    return frames


def frame_layers(config, feature_extractor=None) -> tuple[tuple[int, int, int], ...]:
    """The (kernel, stride, padding) chain from samples to the frames of a model with this config."""
    return family(config.model_type).frame_layers(config, getattr(feature_extractor, "stride", 2))


def frame_layers_for(model_config: str) -> tuple[tuple[int, int, int], ...]:
    """frame_layers of a train YAML's model (its `model` section) or of a model folder / hub id."""
    from transformers import AutoConfig, AutoFeatureExtractor

    add_adapter = False
    if model_config.endswith((".yaml", ".yml")):
        from asr_dist.config import load_config

        cfg = load_config(model_config).model
        add_adapter = cfg.add_adapter
        if not cfg.pretrained:
            sizes = {name: getattr(cfg, name) for name in SIZE_FIELDS}
            return frame_layers(config_from_sizes(family(cfg.type), sizes, {"add_adapter": add_adapter}))
        model_config = cfg.pretrained
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_config)
    except (OSError, ValueError):
        feature_extractor = None
    config = AutoConfig.from_pretrained(model_config)
    if add_adapter:
        config.add_adapter = True
    return frame_layers(config, feature_extractor)


# ----------------------------------------------------------------------------- the run's processor


def feature_extractor_for(fam: Family, sample_rate: int, pretrained: str = ""):
    """The family's own feature extractor: the checkpoint's when it has one, else the family's defaults."""
    if pretrained:
        from transformers import AutoFeatureExtractor

        try:
            return AutoFeatureExtractor.from_pretrained(pretrained)
        except (OSError, ValueError):
            log.info("%s has no feature extractor config; using %s's defaults", pretrained, fam.feature_extractor_class)
    fe_class = _cls(fam.feature_extractor_class)
    if fam.input_kind == "raw":
        return fe_class(feature_size=1, sampling_rate=sample_rate, padding_value=0.0, do_normalize=True,
                        return_attention_mask=True)
    return fe_class(sampling_rate=sample_rate, return_attention_mask=True)


def pair_processor(fam: Family, processor, pretrained: str = ""):
    """The run's processor: the family's feature extractor with our tokenizer (the shards' processor).

    A raw-waveform model built from sizes keeps the shards' processor as it is (the wav2vec2 path)."""
    fe = processor.feature_extractor
    if fam.input_kind == "raw" and not pretrained and type(fe).__name__ == fam.feature_extractor_class:
        return processor
    new_fe = feature_extractor_for(fam, fe.sampling_rate, pretrained)
    if new_fe.sampling_rate != fe.sampling_rate:
        raise ValueError(f"the model's feature extractor expects {new_fe.sampling_rate} Hz audio but the shards' "
                         f"processor says {fe.sampling_rate} Hz (data.sample_rate)")
    return _cls(fam.processor_class)(feature_extractor=new_fe, tokenizer=processor.tokenizer)


__all__ = ["FAMILIES", "Family", "family", "family_of", "config_from_sizes", "pair_processor", "output_lengths",
           "front_end_modules", "beneath_layer_modules", "encoder_layers"]
