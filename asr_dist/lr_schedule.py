"""Learning-rate schedules as pure functions of the optimizer step.

`lr_multiplier(cfg, step, ...)` says by how much every param group's base lr is scaled for the
update that follows `step` finished updates. Because it depends on nothing but the step number,
a resumed run only needs the step to be back on the curve, and the head and encoder param groups
(each with its own base lr, see optim.py) keep their ratio at every step.

`build_lr_scheduler` wraps it in a plain `torch.optim.lr_scheduler.LambdaLR`. The trainer calls
`scheduler.step()` itself once per optimizer update and does NOT pass the scheduler through
`accelerator.prepare`: Accelerate's prepared scheduler steps `num_processes` times per update.

Phases (all schedules; see ScheduleConfig in config.py):

    warmup  step < W:        init + (1 - init) * step / W          (fairseq's tri_stage warmup)
    hold    W <= step < W+H: 1
    decay   t = step - W - H, over D steps (D = decay_steps, or until total_steps when 0):
        constant     1
        linear       1 - (1 - final) * min(t / D, 1)
        cosine       final + (1 - final) * (1 + cos(pi * min(t / D, 1))) / 2
        tri_stage    exp(-t * ln(1 / final) / D) for t <= D, then final   (fairseq, exactly)
        exponential  gamma^t, or gamma^epoch with decay_per=epoch (epoch = step // steps_per_epoch,
                     as torch's ExponentialLR stepped once per epoch; warmup and hold still win)

With init_lr_scale = 0 and final_lr_scale = 0, linear and cosine equal transformers'
get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from asr_dist.config import ScheduleConfig


def lr_multiplier(cfg: ScheduleConfig, step: int, total_steps: int, steps_per_epoch: int | None = None) -> float:
    """Factor applied to each param group's base lr for the update after `step` finished updates."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    warmup, hold, decay = cfg.phase_steps(total_steps)
    if step < warmup:
        return cfg.init_lr_scale + (1.0 - cfg.init_lr_scale) * step / warmup
    if step < warmup + hold:
        return 1.0
    t = step - warmup - hold
    final = cfg.final_lr_scale
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "exponential":
        if cfg.decay_per == "epoch":
            if not steps_per_epoch or steps_per_epoch < 1:
                raise ValueError("schedule.decay_per=epoch needs the number of optimizer steps per epoch "
                                 f"(steps_per_epoch >= 1), got {steps_per_epoch!r}")
            return cfg.gamma ** (step // steps_per_epoch)
        return cfg.gamma**t
    if decay <= 0:
        raise ValueError(f"schedule {cfg.name!r} has no steps to decay over (warmup {warmup}, hold {hold}, "
                         f"total {total_steps}); see ScheduleConfig.check_steps")
    if cfg.name == "tri_stage":
        if t <= decay:
            return math.exp(-t * (-math.log(final) / decay))
        return final
    progress = min(t / decay, 1.0)
    if cfg.name == "linear":
        return 1.0 - (1.0 - final) * progress
    if cfg.name == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule.name {cfg.name!r}")


def build_lr_scheduler(optimizer: Optimizer, cfg: ScheduleConfig, total_steps: int,
                       steps_per_epoch: int | None = None, start_step: int = 0,
                       encoder_frozen_until: int = 0) -> LambdaLR:
    """LambdaLR over every param group of `optimizer` (group lr = its base lr x multiplier).

    Step it once per optimizer update, outside `accelerator.prepare`. `start_step` = k puts a fresh
    scheduler where one stepped k times would be (resume by number); loading a saved state_dict
    does the same. As torch advises, build it before loading the optimizer's state_dict.
    `encoder_frozen_until` = K gives the encoder groups (optim.py's names "encoder*") lr 0 for the
    first K updates (freezing.encoder_updates), then the same curve as the head.
    """
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    if cfg.name == "exponential" and cfg.decay_per == "epoch" and not (steps_per_epoch and steps_per_epoch >= 1):
        raise ValueError("schedule.decay_per=epoch needs steps_per_epoch >= 1 (optimizer updates per epoch), "
                         f"got {steps_per_epoch!r}")
    cfg.check("schedule")
    cfg.check_steps("schedule", total_steps, "total_steps")

    def schedule(step: int) -> float:
        return lr_multiplier(cfg, step, total_steps, steps_per_epoch)

    def encoder_schedule(step: int) -> float:
        return 0.0 if step < encoder_frozen_until else schedule(step)

    for group in optimizer.param_groups:  # the base lr; kept when an optimizer state already set it
        group.setdefault("initial_lr", group["lr"])
    lambdas = [schedule] * len(optimizer.param_groups)
    if encoder_frozen_until > 0:
        from asr_dist.optim import is_encoder_group

        lambdas = [encoder_schedule if is_encoder_group(g) else schedule for g in optimizer.param_groups]
    return LambdaLR(optimizer, lambdas, last_epoch=start_step - 1)
