"""MMS-style language adapters: train only the small per-language attention adapters and the CTC head.

transformers' Wav2Vec2 has them built in: a config with `adapter_attn_dim` adds an adapter after every
transformer layer (`Wav2Vec2AttnAdapterLayer`), `_get_adapters()` names the adapter and `lm_head` tensors,
and `Wav2Vec2ForCTC.from_pretrained(folder, target_lang=CODE)` / `model.load_adapter(CODE)` load
`adapter.CODE.safetensors` from the model folder, which is how `facebook/mms-1b-all` ships its 1,000+
languages. Here: `freezing.adapters_only=true` freezes everything else before the optimizer exists (so
DDP and ZeRO only ever see adapter and head parameters), and the export writes the trained adapter as
`adapter.<language>.safetensors` next to the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

ADAPTER_FILE = "adapter.{}.safetensors"  # transformers' WAV2VEC2_ADAPTER_SAFE_FILE


def adapter_parameter_names(model) -> set[str]:
    """Names (as in model.named_parameters()) of the adapter layers and the CTC head."""
    if getattr(model.config, "adapter_attn_dim", None) is None:
        raise ValueError("the model has no adapter layers: set model.adapter_attn_dim (or load an MMS checkpoint)")
    names = set(model._get_adapters())
    if not any(".adapter_layer." in n for n in names):  # transformers adds them to pre-LN layers only
        raise ValueError("the model has no adapter layers: adapters need the pre-LN layout of MMS "
                         "(model.do_stable_layer_norm=true, model.feat_extract_norm=layer)")
    return names


def freeze_all_but_adapters(model) -> int:
    """requires_grad only on adapter and head parameters; returns how many tensors stay trainable."""
    names = adapter_parameter_names(model)
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    return len(names)


def is_adapter_key(key: str) -> bool:
    """A state-dict key of an adapter layer or the CTC head (the tensors an adapter file holds)."""
    return ".adapter_layer." in key or key.startswith("lm_head.")


def write_adapter_file(model_dir: str | Path, language: str) -> Path:
    """Copy the adapter and head tensors of an exported model folder into adapter.<language>.safetensors
    in that folder. Works from the exported weights, so it does not matter how training sharded them."""
    from safetensors.torch import load_file, save_file

    model_dir = Path(model_dir)
    weights: dict[str, torch.Tensor] = {}
    for path in sorted(model_dir.glob("model*.safetensors")):
        weights.update({k: v for k, v in load_file(str(path)).items() if is_adapter_key(k)})
    if not any(".adapter_layer." in k for k in weights):
        raise ValueError(f"{model_dir}: the model has no adapter layers to save")
    out = model_dir / ADAPTER_FILE.format(language)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out), metadata={"format": "pt"})
    return out


def load_with_adapter(model_dir: str | Path, language: str):
    """The model of `model_dir` with the adapter of `language` loaded (transformers' own loader)."""
    from transformers import Wav2Vec2ForCTC

    return Wav2Vec2ForCTC.from_pretrained(str(model_dir), target_lang=language, ignore_mismatched_sizes=True)
