"""Pre-flight: everything a run needs on disk, checked in a fraction of a second before any process group
starts and before `asr-dist submit` queues a job. One line per problem, naming the key, the path and the fix.
Also the warnings for configurations that run but make no sense."""

from __future__ import annotations

import logging
from pathlib import Path

from asr_dist.config import Config, ConfigError
from asr_dist.data.index import is_local, local_path

log = logging.getLogger("asr_dist.train")


def _shards_problem(key: str, shards: str, index_key: str, index: str) -> str | None:
    if not shards:
        return f"{key} is empty: set it to a shard folder written by `asr-dist prepare` (with index.json)"
    if index:
        if is_local(index) and not Path(local_path(index)).is_file():
            return f"{index_key} = {index}: no such file (the index.json `asr-dist prepare` wrote)"
        return None
    if not is_local(shards):
        return f"{key} = {shards} is a URL pattern: also set {index_key} to its index.json"
    folder = Path(local_path(shards))
    if not folder.is_dir():
        return f"{key} = {shards}: no such folder; write it with `asr-dist prepare CORPUS {shards}`"
    if not (folder / "index.json").is_file():
        return f"{key} = {shards}: the folder has no index.json; is it a shard folder written by `asr-dist prepare`?"
    return None


def check_paths(cfg: Config) -> None:
    """Raise ConfigError listing every missing input of the run."""
    from asr_dist.training.components import processor_path

    d = cfg.data
    if d.train:  # several sources: each one's shards, named by its position and name
        problems = [_shards_problem(f"data.train[{i}].shards ({s.name})", s.shards, f"data.train[{i}].index", s.index)
                    for i, s in enumerate(d.train)]
    else:
        problems = [_shards_problem("data.train_shards", d.train_shards, "data.train_index", d.train_index)]
    train_ok = not any(problems)
    if d.eval_shards:
        problems.append(_shards_problem("data.eval_shards", d.eval_shards, "data.eval_index", d.eval_index))
    for name, shards in d.eval.items():
        problems.append(_shards_problem(f"data.eval.{name}", shards, "data.eval_shards with data.eval_index "
                                        "(named sets take shard folders)", ""))
    processor = processor_path(cfg)
    if train_ok and not (processor / "vocab.json").is_file():
        key = "data.processor" if d.processor else ("data.train[0].shards" if d.train else "data.train_shards")
        fix = ("a processor folder (vocab.json + preprocessor_config.json)" if d.processor else
               "shards prepared with `asr-dist prepare ... --processor`, or set data.processor")
        problems.append(f"{key}: no processor at {processor} (needs vocab.json): expected {fix}")
    pretrained = cfg.model.pretrained
    if pretrained and (pretrained.startswith((".", "/")) or Path(pretrained).exists()) \
            and not (Path(pretrained) / "config.json").is_file():
        problems.append(f"model.pretrained = {pretrained}: no config.json there (expected a save_pretrained folder "
                        "or a hub id such as facebook/wav2vec2-base)")
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError("\n  ".join(["the run cannot start:", *problems]))


def warnings_for(cfg: Config) -> list[str]:
    """Settings that run but cannot be what was meant."""
    out = []
    if cfg.freezing.encoder_updates >= cfg.train.max_steps:
        out.append(f"freezing.encoder_updates = {cfg.freezing.encoder_updates} >= train.max_steps = "
                   f"{cfg.train.max_steps}: the encoder never trains, only the CTC head does")
    if cfg.eval.every_steps and cfg.eval.every_steps >= cfg.train.max_steps:
        out.append(f"eval.every_steps = {cfg.eval.every_steps} >= train.max_steps: only the final evaluation runs")
    if cfg.checkpoint.every_steps and cfg.checkpoint.every_steps > cfg.train.max_steps:
        out.append(f"checkpoint.every_steps = {cfg.checkpoint.every_steps} > train.max_steps: only the final "
                   "checkpoint is written; a kill before the end loses the whole run")
    return out


def preflight(cfg: Config) -> None:
    """check_paths, then log the warnings (once, from whichever process calls it)."""
    check_paths(cfg)
    for warning in warnings_for(cfg):
        log.warning("%s", warning)
