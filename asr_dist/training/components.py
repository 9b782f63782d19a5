"""The composition root: `build(cfg)` makes every part of a run from its config section, in the one order
that works, and resumes them from a checkpoint when there is one.

Order matters: the model is built before the Accelerator (ZeRO-3 + from_pretrained crashes otherwise), with the
same seed on every rank; the checkpoint is loaded before the schedule is built, because the schedule starts
from the restored update number and budget (budget.py).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from asr_dist import startup
from asr_dist.checkpoint import CheckpointManager
from asr_dist.config import Config
from asr_dist.data.language import run_language
from asr_dist.data.loader import EvalLoader, TrainLoader, build_train_loader
from asr_dist.eval_sets import build_eval_sets
from asr_dist.families import frames_for_samples, pair_processor
from asr_dist.lr_schedule import build_lr_scheduler
from asr_dist.model import EncoderFreeze, build_model, count_parameters, freeze_parameters, model_family, \
    padding_changes_outputs, takes_attention_mask
from asr_dist.optim import build_optimizer
from asr_dist.text import load_processor
from asr_dist.training.backend import Backend
from asr_dist.training.budget import RunProgress, TrainingBudget
from asr_dist.training.step import Trainer, quiet_known_warnings

log = logging.getLogger("asr_dist.train")


def processor_path(cfg: Config) -> Path:
    """data.processor, or the processor `asr-dist prepare --processor` wrote next to the training shards."""
    return Path(cfg.data.processor) if cfg.data.processor else Path(cfg.data.train_sources()[0].shards) / "processor"


@dataclass
class Components:
    cfg: Config
    backend: Backend
    accelerator: object
    processor: object
    model: torch.nn.Module  # prepared (DDP- or DeepSpeed-wrapped)
    optimizer: object
    train_loader: TrainLoader
    eval_loader: EvalLoader | dict[str, EvalLoader] | None  # several: data.eval's named sets
    trainer: Trainer
    checkpoints: CheckpointManager
    progress: RunProgress
    resumed_from: Path | None
    language: str = "en"  # of the shards' and processor's text rules (asr_dist/text/languages.py)

    @property
    def stateful(self) -> dict:
        """What a checkpoint saves besides model, optimizer and RNG (Accelerate's part)."""
        return checkpointed_state(self.train_loader, self.progress, self.trainer.scaler)


def checkpointed_state(train_loader, progress: RunProgress, scaler) -> dict:
    """The extra state of a checkpoint, by name: data position, counters and budget, fp16 loss scale."""
    return {"loader": train_loader, "trainer": progress, **({"grad_scaler": scaler} if scaler is not None else {})}


def build(cfg: Config, backend: Backend) -> Components:
    """Every part of the run, resumed from `train.resume` when it names a checkpoint."""
    from accelerate.utils import set_seed

    # the shards' tokenizer with the model family's own feature extractor (asr_dist/families.py)
    processor = pair_processor(model_family(cfg.model), load_processor(processor_path(cfg)), cfg.model.pretrained)
    language = run_language(cfg.data, processor)  # train/eval shards and processor share one language's text rules
    if cfg.eval.lm:  # a missing or mismatched LM fails now, not after training
        from asr_dist.lm.score import check_lm_for_training

        check_lm_for_training(cfg.eval.lm, processor)
    set_seed(cfg.train.seed)  # same initial weights on every rank (ZeRO-3 partitions each rank's copy)
    model = build_model(cfg.model, processor)
    freeze_parameters(model, cfg.freezing)
    encoder_freeze = EncoderFreeze(model, cfg.freezing.encoder_updates)
    optimizer = build_optimizer(model, cfg.optimizer)

    world_env = f"{os.environ.get('WORLD_SIZE', '1')} ranks at {os.environ.get('MASTER_ADDR', '?')}:" \
                f"{os.environ.get('MASTER_PORT', '?')}"
    with startup.bounded(f"the rendezvous of {world_env} (torch.distributed process group)"):
        accelerator = backend.build_accelerator(cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    sizes = count_parameters(model)
    log.info("%s on %d process(es), %s; precision %s (%s; %s); model %.2fM parameters (%.2fM trainable)",
             backend.name, world, accelerator.device, backend.mode, backend.precision.reason,
             backend.precision.device, sizes["total"] / 1e6, sizes["trainable"] / 1e6)

    train_loader = build_train_loader(cfg.data, processor, seed=cfg.train.seed, rank=rank, world_size=world,
                                      grad_accum=cfg.train.grad_accum,
                                      frames_for=frames_for_samples(model, processor.feature_extractor))
    eval_loader = build_eval_sets(cfg.data, processor, rank=rank, world_size=world,  # one loader, {name: loader}
                                  unpadded=padding_changes_outputs(model, processor))  # or None
    with startup.bounded(f"the first collectives of {world_env} (model broadcast / DeepSpeed engine set-up)"):
        model, optimizer = accelerator.prepare(model, optimizer)
    checkpoints = CheckpointManager(accelerator, cfg.train.run_dir, cfg.checkpoint, config=cfg, model=model,
                                    processor=processor, precision=backend.precision.to_dict())

    progress = RunProgress()
    scaler = torch.amp.GradScaler(accelerator.device.type) if backend.owns_loss_scaling else None
    stateful = checkpointed_state(train_loader, progress, scaler)
    resumed_from = checkpoints.resolve(cfg.train.resume)
    if resumed_from is not None:
        checkpoints.load(resumed_from, stateful)
    if progress.budget is None:  # a fresh start (or a checkpoint written before budgets were saved)
        progress.budget = TrainingBudget.at_start(cfg.train, len(train_loader))
    else:  # max_steps / max_epochs may have been raised to train longer
        progress.budget = TrainingBudget.with_epoch_length(cfg.train, progress.budget.steps_per_epoch)
    budget = progress.budget
    # Built on the prepared optimizer (its param_groups are the ones DeepSpeed steps), after a resume: the
    # multiplier is a pure function of the step. Stepped once per update by the trainer, never by Accelerate.
    quiet_known_warnings()
    scheduler = build_lr_scheduler(optimizer, cfg.schedule, budget.total_steps, budget.steps_per_epoch,
                                   start_step=progress.step, encoder_frozen_until=cfg.freezing.encoder_updates)
    trainer = Trainer(cfg, backend, accelerator, model, optimizer, scheduler, encoder_freeze,
                      use_attention_mask=takes_attention_mask(processor),
                      blank_id=processor.tokenizer.pad_token_id, progress=progress, scaler=scaler)
    log.info("weights in %s, inputs cast to %s; %d updates (%d per epoch)",
             next(accelerator.unwrap_model(model).parameters()).dtype, trainer.input_dtype, budget.total_steps,
             budget.steps_per_epoch)
    return Components(cfg, backend, accelerator, processor, model, optimizer, train_loader, eval_loader, trainer,
                      checkpoints, progress, resumed_from, language)
