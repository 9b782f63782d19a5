"""CTC normalized by the target tokens of the whole optimizer step (all micro-batches, all ranks).

Why: with a per-batch mean, a step's gradient depends on how its samples were cut into micro-batches and
spread over ranks (short and long utterances get different weights). Normalizing the CTC *sum* by the
global token count makes the gradient of one update a property of the global batch only: 4 micro-batches
of B equal one batch of 4B, and 2 ranks equal 1 rank with twice the batch.

The backward pass sees `ctc_sum * backward_scale(...)`: Accelerate (and DeepSpeed's engine) divide every
micro-batch loss by grad_accum, and DDP/ZeRO average gradients over ranks, so the scale multiplies both
back in before dividing by the global token count. The count costs one all-reduce per update, done before
the first forward (the trainer pulls the update's micro-batches first).
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # label padding, as in the batch contract


def target_tokens(labels: torch.Tensor, blank_id: int) -> torch.Tensor:
    """Label tokens CTC aligns (padding and any blank excluded, as transformers' CTC loss counts them)."""
    return ((labels != IGNORE_INDEX) & (labels != blank_id)).sum()


def backward_scale(global_tokens: float, grad_accum: int, world_size: int) -> float:
    """Factor for a micro-batch's CTC sum so that the update's gradient is d(sum of all CTC) / global_tokens.

    Undoes the division by grad_accum (Accelerate's backward, DeepSpeed's engine) and the mean over ranks
    (DDP, ZeRO). A step without any target token (impossible with real transcripts) gets scale 0.
    """
    if global_tokens <= 0:
        return 0.0
    return grad_accum * world_size / float(global_tokens)
