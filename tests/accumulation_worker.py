"""Two optimizer updates of the real trainer on a FIXED global batch, split over ranks and micro-batches as asked.

For tests/test_accumulation.py: the same 8 samples per update, cut into world_size x grad_accum micro-batches
(global micro-batch j goes to rank j % world_size, as the data plan deals them), must give the same update
whatever the cut. All samples have the same length, so no cut adds padding, and every source of randomness
(dropout, SpecAugment, layerdrop) is off: what remains is float summation order.

Started by `accelerate launch` (DDP or DeepSpeed, from the accelerate config) or plainly for one process:

    python tests/accumulation_worker.py OUT.pt PROCESSOR_DIR GRAD_ACCUM [key=value ...]

Writes OUT.pt on the main process: {"losses", "grad_norms", "initial", "final"} (full fp32 state dicts).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from accelerate.utils import set_seed

from asr_dist.config import load_config
from asr_dist.lr_schedule import build_lr_scheduler
from asr_dist.model import EncoderFreeze, build_model, freeze_parameters
from asr_dist.optim import build_optimizer
from asr_dist.text import load_processor
from asr_dist.training.backend import Backend, read_deepspeed_config
from asr_dist.training.budget import RunProgress, TrainingBudget
from asr_dist.training.precision import choose_precision
from asr_dist.training.step import Trainer

GLOBAL_BATCH = 8
SECONDS = 1.2
TEXTS = ["THE SUN IS WARM", "A CAT SAT ON THE MAT", "GOOD MORNING", "IT'S TIME TO GO", "PLEASE CLOSE THE WINDOW",
         "DON'T FORGET YOUR COAT", "THANK YOU VERY MUCH", "HE DRANK A CUP OF HOT TEA", "BIRDS SING IN THE GREEN TREES",
         "MY FRIEND LIVES NEAR THE PARK", "WE WALKED HOME IN THE RAIN", "JUMP OVER THE LAZY BOX", "THE SUN IS WARM",
         "GOOD MORNING", "A CAT SAT ON THE MAT", "THANK YOU VERY MUCH"]


def global_batch(processor, update: int) -> list[dict]:
    """8 samples of SECONDS each (tone + noise, seeded) with transcripts of different lengths."""
    sr = processor.feature_extractor.sampling_rate
    t = np.arange(int(SECONDS * sr)) / sr
    samples = []
    for i in range(GLOBAL_BATCH):
        rng = np.random.default_rng(1000 * update + i)
        wave = (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)
        samples.append((wave, TEXTS[(GLOBAL_BATCH * update + i) % len(TEXTS)]))
    return samples


def collate(processor, samples) -> dict:
    feats = processor.feature_extractor([w for w, _ in samples], sampling_rate=processor.feature_extractor.sampling_rate,
                                        padding=True, return_attention_mask=True, return_tensors="pt")
    ids = [processor.tokenizer(text).input_ids for _, text in samples]
    labels = torch.full((len(ids), max(map(len, ids))), -100, dtype=torch.long)
    for row, x in enumerate(ids):
        labels[row, : len(x)] = torch.tensor(x)
    mask = feats.attention_mask.long()
    sr = processor.feature_extractor.sampling_rate
    return {"input_values": feats.input_values.float(), "attention_mask": mask, "labels": labels,
            "audio_seconds": float(mask.sum()) / sr, "padded_seconds": mask.numel() / sr}


def full_state(accelerator, model) -> dict:
    return {k: v.detach().float().cpu().clone() for k, v in accelerator.get_state_dict(model).items()}


def main(out: str, processor_dir: str, grad_accum: str, *overrides: str) -> None:
    cfg = load_config("configs/train/tiny.yaml", [f"data.processor={processor_dir}", f"train.grad_accum={grad_accum}",
                                                  "train.mixed_precision=no", "schedule.warmup_steps=0",
                                                  *overrides])
    backend = Backend(read_deepspeed_config(cfg), choose_precision(cfg.train.mixed_precision))
    processor = load_processor(processor_dir)
    set_seed(cfg.train.seed)
    model = build_model(cfg.model, processor)
    freeze_parameters(model, cfg.freezing)
    encoder_freeze = EncoderFreeze(model, cfg.freezing.encoder_updates)
    optimizer = build_optimizer(model, cfg.optimizer)
    accelerator = backend.build_accelerator(cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = build_lr_scheduler(optimizer, cfg.schedule, total_steps=100)
    trainer = Trainer(cfg, backend, accelerator, model, optimizer, scheduler, encoder_freeze, use_attention_mask=True,
                      blank_id=processor.tokenizer.pad_token_id, progress=RunProgress(TrainingBudget(100, 100)))
    initial = full_state(accelerator, model)

    world, rank, accum = accelerator.num_processes, accelerator.process_index, cfg.train.grad_accum
    micro = GLOBAL_BATCH // (world * accum)
    assert micro * world * accum == GLOBAL_BATCH, "world_size x grad_accum must divide the global batch"
    losses, grad_norms = [], []
    for update in range(2):
        samples = global_batch(processor, update)
        cuts = [samples[j * micro:(j + 1) * micro] for j in range(world * accum)]
        mine = [collate(processor, cut) for j, cut in enumerate(cuts) if j % world == rank]
        stats = trainer.train_step(mine)
        losses.append(stats["loss"])
        grad_norms.append(stats["grad_norm"])
    final = full_state(accelerator, model)
    if accelerator.is_main_process:
        torch.save({"losses": losses, "grad_norms": grad_norms, "initial": initial, "final": final}, out)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(*sys.argv[1:])
