"""Training entry point: `accelerate launch -m asr_dist.train --config X.yaml key=value ...`.

One process (`asr-dist train`, `python -m asr_dist.train`) or many (`accelerate launch`, torchrun, Slurm
through `run(cfg)` in-process), plain DDP or DeepSpeed ZeRO 1/2/3, CPU or GPU. A run is

    Backend.for_run(cfg)   which backend and precision (training/backend.py, training/precision.py)
    preflight(cfg)         every input on disk, before any process group (training/preflight.py)
    RunFolder.lock()       one job per run folder; a fresh start never overwrites a run (runfolder.py)
    build(cfg, backend)    model, optimizer, loaders, checkpoints, resumed (training/components.py)
    TrainingLoop(...).run  updates, logging, evaluation, saves, stop, export (training/loop.py)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from asr_dist.config import Config, ConfigError, load_config
from asr_dist.runfolder import CONFIG, RunFolder

log = logging.getLogger("asr_dist.train")

# A restarted job may find its killed predecessor's ranks still exiting (they die with their launcher, but a
# save in flight finishes its fsync first): wait this long for the run folder before refusing.
LOCK_WAIT_S = 30.0


def _setup_logging(is_main: bool) -> None:
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def open_run_folder(cfg: Config) -> RunFolder:
    """Main process only, before the process group exists: lock the folder and apply the fresh-start rule
    (the other ranks cannot touch it before the main process has joined the rendezvous)."""
    from asr_dist.checkpoint import latest_step

    folder = RunFolder(cfg.train.run_dir)
    folder.lock(wait_s=LOCK_WAIT_S)
    resuming = cfg.train.resume not in ("none", "auto") or (
        cfg.train.resume == "auto" and latest_step(folder.path) is not None)
    if not resuming:
        folder.prepare_fresh_start(cfg.train.if_run_exists)
    return folder


def run(cfg: Config, backend=None) -> dict:
    """Train as `cfg` says, in this process (one rank of a launched job); returns a summary on every rank.

    Keys: steps, skipped_updates, losses (this process's run, per update), final_loss, eval (final
    scores or None), stopped (graceful stop), exit_code (0, or stop.REQUEUE_EXIT_CODE after a graceful
    stop: the caller exits with it so that Slurm/submitit requeue), run_dir, export_dir, precision (what was
    chosen and why), budget, peak_memory_mb and training_memory_mb (one per rank). The run folder's files:
    runfolder.py.
    """
    from asr_dist.training.backend import Backend
    from asr_dist.training.components import build
    from asr_dist.training.loop import TrainingLoop
    from asr_dist.training.preflight import preflight

    from asr_dist import ds_ops, startup

    if startup.launched_by_torchrun():
        startup.die_with_launcher()  # a kill -9 of `accelerate launch` must not leave this rank training
    _setup_logging(_is_main_process())
    backend = backend or Backend.for_run(cfg)
    ds_ops.prepare_ops(deepspeed=backend.is_deepspeed)  # venv build folder, stale locks, bounded op load
    folder = None
    if _is_main_process():
        preflight(cfg)
        folder = open_run_folder(cfg)
    try:
        parts = build(cfg, backend)
        _setup_logging(parts.accelerator.is_main_process)
        if parts.accelerator.is_main_process:  # after the checkpoint was accepted: a refused resume writes nothing
            cfg.save(parts.checkpoints.run_dir / CONFIG)
        return TrainingLoop(parts).run()
    finally:
        if folder is not None:
            folder.unlock()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asr-dist train",
        description="Fine-tune a CTC speech recognizer. Many processes: accelerate launch [--config_file "
                    "configs/accelerate/X.yaml] -m asr_dist.train --config configs/train/X.yaml key=value ...")
    parser.add_argument("--config", help="train config YAML (configs/train/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=100")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        from asr_dist.training.backend import Backend
        from asr_dist.training.preflight import check_paths

        _setup_logging(_is_main_process())
        backend = Backend.for_run(cfg)
        check_paths(cfg)
        result = run(cfg, backend)
    except ConfigError as e:
        print(f"asr-dist train: bad configuration: {e}", file=sys.stderr)
        return 2
    return int(result["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
