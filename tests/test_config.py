"""Typed config: YAML + dotted overrides; every mistake is caught before work starts and names the key."""

import pytest
import yaml

from asr_dist.config import Config, ConfigError, config_from_dict, load_config


def write(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_yaml_and_overrides(tmp_path):
    p = write(tmp_path, {"optimizer": {"lr": 3e-4}, "data": {"augment": {"noise_prob": 0.5}}})
    cfg = load_config(p, ["train.max_steps=7", "optimizer.encoder_lr=1e-5", "data.augment.speed_factors=[0.9,1.1]"])
    assert cfg.optimizer.lr == 3e-4
    assert cfg.optimizer.encoder_lr == 1e-5
    assert cfg.train.max_steps == 7
    assert cfg.data.augment.noise_prob == 0.5
    assert cfg.data.augment.speed_factors == [0.9, 1.1]
    assert cfg.schedule.name == "tri_stage"  # untouched default


def test_int_is_accepted_where_a_float_is_expected(tmp_path):
    cfg = load_config(None, ["optimizer.lr=1"])
    assert isinstance(cfg.optimizer.lr, float) and cfg.optimizer.lr == 1.0


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optimizer.lrr=1", "unknown key optimizer.lrr"),
        ("nosuch.key=1", "unknown key nosuch"),
        ("optimizer.lr=-0.1", "optimizer.lr = -0.1"),
        ("optimizer.lr=fast", "optimizer.lr = 'fast' must be a number"),
        ("train.max_steps=1.5", "train.max_steps = 1.5 must be an integer"),
        ("schedule.name=step", "choose one of: constant, linear, cosine, exponential, tri_stage"),
        ("freezing.lower_layers=9", "freezing.lower_layers = 9"),
        ("data.max_duration=100", "data.max_duration"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("model.num_attention_heads=3", "model.num_attention_heads"),
        ("optimizer", "section.key=value"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)


def test_freeze_depth_is_checked_against_the_model():
    with pytest.raises(ConfigError, match="at most model.num_hidden_layers \\(4\\)"):
        load_config(None, ["freezing.lower_layers=5"])
    assert load_config(None, ["freezing.lower_layers=4"]).freezing.lower_layers == 4


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.seed=3", "slurm.additional_parameters={'gres': 'gpu:8'}"])
    cfg.save(tmp_path / "resolved.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "resolved.yaml").read_text()))
    assert again == cfg
    assert isinstance(again, Config)
