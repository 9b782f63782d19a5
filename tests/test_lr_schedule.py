"""The learning-rate curves: exact values, shapes, resume by step number, per-group ratios."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from asr_dist.config import ConfigError, ScheduleConfig, load_config
from asr_dist.lr_schedule import build_lr_scheduler, lr_multiplier


def curve(cfg: ScheduleConfig, total: int, upto: int | None = None, steps_per_epoch: int | None = None) -> list[float]:
    return [lr_multiplier(cfg, s, total, steps_per_epoch) for s in range(upto if upto is not None else total + 1)]


def two_group_optimizer(head_lr: float = 1e-3, encoder_lr: float = 1e-4) -> torch.optim.Optimizer:
    head, encoder = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    return torch.optim.AdamW([{"params": [head], "lr": head_lr}, {"params": [encoder], "lr": encoder_lr}])


def lrs_after(cfg: ScheduleConfig, total: int, steps: int, **kw) -> list[float]:
    opt = two_group_optimizer()
    sched = build_lr_scheduler(opt, cfg, total, **kw)
    for _ in range(steps):
        opt.step()
        sched.step()
    return [g["lr"] for g in opt.param_groups]


# ----------------------------------------------------------------------------- exact values


def test_constant_with_warmup_values():
    cfg = ScheduleConfig(name="constant", warmup_steps=4, init_lr_scale=0.2)
    assert curve(cfg, 10, 7) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])


def test_linear_values_and_floor():
    cfg = ScheduleConfig(name="linear", warmup_steps=10, init_lr_scale=0.0, final_lr_scale=0.1)
    values = curve(cfg, 110, 200)
    assert values[0] == 0.0 and values[5] == pytest.approx(0.5) and values[10] == 1.0
    assert values[60] == pytest.approx(0.55)  # halfway through 100 decay steps: 1 - 0.9 * 0.5
    assert values[110] == pytest.approx(0.1) and values[199] == pytest.approx(0.1)  # stays at the floor


def test_cosine_values():
    cfg = ScheduleConfig(name="cosine", warmup_steps=0, final_lr_scale=0.1, decay_steps=100)
    values = curve(cfg, 1000, 300)
    assert values[0] == 1.0
    assert values[50] == pytest.approx(0.55)  # cos(pi/2) = 0: the middle of [0.1, 1]
    assert values[25] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert values[100] == pytest.approx(0.1) and values[299] == pytest.approx(0.1)


@pytest.mark.parametrize("name,hf", [("linear", get_linear_schedule_with_warmup),
                                     ("cosine", get_cosine_schedule_with_warmup)])
def test_linear_and_cosine_equal_transformers_with_zero_init_and_floor(name, hf):
    total, warmup = 57, 7
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = hf(opt, num_warmup_steps=warmup, num_training_steps=total)
    expected = [reference.lr_lambdas[0](s) for s in range(total + 1)]
    cfg = ScheduleConfig(name=name, warmup_steps=warmup, init_lr_scale=0.0, final_lr_scale=0.0)
    assert curve(cfg, total) == pytest.approx(expected, abs=1e-12)


def fairseq_tri_stage(lr: float, warmup: int, hold: int, decay: int, init_scale: float, final_scale: float,
                      updates: int) -> list[float]:
    """fairseq's TriStageLRSchedule.step_update(num_updates), transcribed from its docstring and stages."""
    peak, init, final = lr, init_scale * lr, final_scale * lr
    warmup_rate = (peak - init) / warmup if warmup else 0
    decay_factor = -math.log(final_scale) / decay
    out = []
    for n in range(updates):
        if n < warmup:
            out.append(init + warmup_rate * n)
        elif n < warmup + hold:
            out.append(peak)
        elif n <= warmup + hold + decay:
            out.append(peak * math.exp(-decay_factor * (n - warmup - hold)))
        else:
            out.append(final)
    return out


def test_tri_stage_matches_fairseq():
    cfg = ScheduleConfig(name="tri_stage", warmup_steps=10, hold_steps=20, decay_steps=30,
                         init_lr_scale=0.01, final_lr_scale=0.05)
    expected = fairseq_tri_stage(1.0, 10, 20, 30, 0.01, 0.05, 100)
    assert curve(cfg, 1000, 100) == pytest.approx(expected, rel=1e-12)
    values = curve(cfg, 1000, 100)
    assert values[0] == pytest.approx(0.01) and values[10] == 1.0 and values[29] == 1.0
    assert values[45] == pytest.approx(math.sqrt(0.05))  # halfway through an exponential decay to 0.05
    assert values[60] == pytest.approx(0.05) and values[99] == pytest.approx(0.05)


def test_tri_stage_phase_ratio_like_fairseq_wav2vec2_recipes():
    cfg = ScheduleConfig(name="tri_stage", phase_ratio=[0.1, 0.4, 0.5], final_lr_scale=0.05)
    assert cfg.phase_steps(1000) == (100, 400, 500)
    assert curve(cfg, 1000) == pytest.approx(fairseq_tri_stage(1.0, 100, 400, 500, 0.01, 0.05, 1001), rel=1e-12)


def test_tri_stage_decays_until_the_end_when_decay_steps_is_zero():
    cfg = ScheduleConfig(name="tri_stage", warmup_steps=5, hold_steps=5, final_lr_scale=0.05)
    assert cfg.phase_steps(50) == (5, 5, 40)
    assert lr_multiplier(cfg, 50, 50) == pytest.approx(0.05)


def test_exponential_per_step_counts_steps_after_warmup():
    cfg = ScheduleConfig(name="exponential", gamma=0.9, warmup_steps=2, init_lr_scale=0.5)
    values = curve(cfg, 100, 6)
    assert values == pytest.approx([0.5, 0.75, 1.0, 0.9, 0.81, 0.729])


def test_exponential_per_epoch_steps_at_epoch_boundaries():
    cfg = ScheduleConfig(name="exponential", gamma=0.9, decay_per="epoch")
    values = curve(cfg, 100, 10, steps_per_epoch=4)
    assert values == pytest.approx([1.0] * 4 + [0.9] * 4 + [0.81] * 2)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        lr_multiplier(cfg, 5, 100)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_lr_scheduler(two_group_optimizer(), cfg, 100)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", ["constant", "linear", "cosine", "exponential", "tri_stage"])
def test_warmup_rises_then_never_rises_again(name):
    cfg = ScheduleConfig(name=name, warmup_steps=20, hold_steps=5, gamma=0.99, final_lr_scale=0.05)
    values = curve(cfg, 200, 300)
    warmup = values[:21]
    assert all(a < b for a, b in zip(warmup, warmup[1:])) and warmup[-1] == 1.0
    after = values[20:]
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert min(values) >= (0.0 if name == "exponential" else 0.01)
    if name != "constant":
        assert values[-1] < 1.0


# ----------------------------------------------------------------------------- the torch scheduler


def test_two_param_groups_keep_their_ratio():
    cfg = ScheduleConfig(name="tri_stage", warmup_steps=3, hold_steps=2, decay_steps=10)
    opt = two_group_optimizer(head_lr=1e-3, encoder_lr=2.5e-5)
    sched = build_lr_scheduler(opt, cfg, total_steps=20)
    for step in range(20):
        head, encoder = (g["lr"] for g in opt.param_groups)
        assert head == pytest.approx(1e-3 * lr_multiplier(cfg, step, 20))
        assert head / encoder == pytest.approx(40.0)
        opt.step()
        sched.step()


def test_encoder_groups_wait_at_zero_while_the_encoder_is_frozen():
    cfg = ScheduleConfig(name="linear", warmup_steps=2, init_lr_scale=0.5)
    head, encoder = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([{"name": "head", "params": [head], "lr": 1e-3},
                             {"name": "encoder", "params": [encoder], "lr": 1e-4}])
    sched = build_lr_scheduler(opt, cfg, total_steps=10, encoder_frozen_until=3)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    for step, (head_lr, encoder_lr) in enumerate(seen):
        assert head_lr == pytest.approx(1e-3 * lr_multiplier(cfg, step, 10))
        assert encoder_lr == (0.0 if step < 3 else pytest.approx(1e-4 * lr_multiplier(cfg, step, 10)))
    resumed = torch.optim.AdamW([{"name": "head", "params": [head], "lr": 1e-3},
                                 {"name": "encoder", "params": [encoder], "lr": 1e-4}])
    build_lr_scheduler(resumed, cfg, total_steps=10, start_step=2, encoder_frozen_until=3)
    assert [g["lr"] for g in resumed.param_groups] == pytest.approx([seen[2][0], 0.0])


@pytest.mark.parametrize("name", ["linear", "cosine", "exponential", "tri_stage"])
def test_rebuilt_at_step_k_equals_stepped_k_times(name):
    cfg = ScheduleConfig(name=name, warmup_steps=4, hold_steps=3, gamma=0.95)
    total, k = 40, 13
    stepped_opt = two_group_optimizer()
    stepped = build_lr_scheduler(stepped_opt, cfg, total)
    for _ in range(k):
        stepped_opt.step()
        stepped.step()

    by_number_opt = two_group_optimizer()  # a fresh optimizer, as after a restart
    by_number = build_lr_scheduler(by_number_opt, cfg, total, start_step=k)

    by_state_opt = two_group_optimizer()  # scheduler built first, then both states loaded (torch's advice)
    by_state = build_lr_scheduler(by_state_opt, cfg, total)
    by_state_opt.load_state_dict(stepped_opt.state_dict())
    by_state.load_state_dict(stepped.state_dict())

    for _ in range(5):  # and they stay together afterwards
        want = [g["lr"] for g in stepped_opt.param_groups]
        assert want == pytest.approx([1e-3 * lr_multiplier(cfg, k, total), 1e-4 * lr_multiplier(cfg, k, total)])
        assert [g["lr"] for g in by_number_opt.param_groups] == pytest.approx(want, rel=1e-12)
        assert [g["lr"] for g in by_state_opt.param_groups] == pytest.approx(want, rel=1e-12)
        for opt, sched in ((stepped_opt, stepped), (by_number_opt, by_number), (by_state_opt, by_state)):
            opt.step()
            sched.step()
        k += 1


# ----------------------------------------------------------------------------- config checks


@pytest.mark.parametrize("override,key", [
    ("schedule.phase_ratio=[0.5, 0.6, 0.1]", "schedule.phase_ratio"),
    ("schedule.phase_ratio=[0.5, 0.5]", "schedule.phase_ratio"),
    ("schedule.final_lr_scale=0", "schedule.final_lr_scale"),  # tri_stage (the default) needs log(final)
    ("schedule.decay_per=epoch", "schedule.decay_per"),  # only exponential decays per epoch
    ("schedule.gamma=1.5", "schedule.gamma"),
    ("schedule.init_lr_scale=-0.1", "schedule.init_lr_scale"),
    ("schedule.warmup_steps=1000", "schedule.decay_steps"),  # nothing left to decay over in 1000 steps
])
def test_bad_schedule_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, ["train.max_steps=1000", override])


def test_phase_ratio_and_steps_are_exclusive():
    with pytest.raises(ConfigError, match=r"schedule\.phase_ratio.*not both"):
        load_config(None, ["schedule.phase_ratio=[0.1, 0.4, 0.5]", "schedule.warmup_steps=10"])
    cfg = load_config(None, ["schedule.phase_ratio=[0.1, 0.4, 0.5]", "train.max_steps=200"])
    assert cfg.schedule.phase_steps(cfg.train.max_steps) == (20, 80, 100)
