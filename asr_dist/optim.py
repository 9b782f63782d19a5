"""The optimizer: AdamW/Adam over the trainable parameters, in named param groups.

Groups: `head` (the CTC head, lr = optimizer.lr) and `encoder` (everything else, lr = optimizer.encoder_lr or
optimizer.lr), each split into a weight-decayed part and a `*_no_decay` part (biases, norms, 1-d tensors:
decaying those only shrinks them toward zero). The group names let the trainer log one lr per group and
gate the encoder groups to lr 0 while `freezing.encoder_updates` holds the encoder (see model.EncoderFreeze).

Frozen parameters (requires_grad False) are left out entirely, so they get no optimizer state.
"""

from __future__ import annotations

import torch

from asr_dist.config import OptimizerConfig
from asr_dist.model import is_head_parameter

_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def build_param_groups(model: torch.nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """Named param groups (see module doc); empty groups are dropped."""
    encoder_lr = cfg.encoder_lr if cfg.encoder_lr is not None else cfg.lr
    buckets: dict[str, list[torch.nn.Parameter]] = {"head": [], "head_no_decay": [], "encoder": [],
                                                    "encoder_no_decay": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "head" if is_head_parameter(name) else "encoder"
        no_decay = param.ndim < 2 or "norm" in name.lower()
        buckets[part + ("_no_decay" if no_decay else "")].append(param)
    groups = []
    for name, params in buckets.items():
        if params:
            groups.append({"name": name, "params": params,
                           "lr": cfg.lr if name.startswith("head") else encoder_lr,
                           "weight_decay": 0.0 if name.endswith("_no_decay") else cfg.weight_decay})
    return groups


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """A torch optimizer over the trainable parameters (Accelerate/DeepSpeed wrap it in `prepare`)."""
    groups = build_param_groups(model, cfg)
    if not groups:
        raise ValueError("every parameter is frozen: nothing to train (check the freezing section)")
    return _OPTIMIZERS[cfg.name](groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)


def is_encoder_group(group: dict) -> bool:
    return group.get("name", "").startswith("encoder")
