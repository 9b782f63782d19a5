"""One optimizer update: accumulation, global-token loss normalization, clipping, non-finite skipping.

One update = `train.grad_accum` micro-batches per rank (the data plan guarantees every rank gets the same
count). The step pulls them first, all-reduces their target-token count, then runs forward/backward on each
with loss = CTC sum x loss.backward_scale (see loss.py), so that the update is the gradient of
(all CTC) / (all target tokens), whatever the split over micro-batches and ranks.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings

import torch

from asr_dist.config import Config
from asr_dist.loss import backward_scale, target_tokens
from asr_dist.model import EncoderFreeze
from asr_dist.optim import is_encoder_group
from asr_dist.training.backend import Backend
from asr_dist.training.budget import RunProgress

log = logging.getLogger("asr_dist.train")


def quiet_known_warnings() -> None:
    """Filters set once per process, before the first update.

    torch warns at the scheduler's first step when the optimizer's own step() was not called: DeepSpeed steps
    inside backward() and a skipped update has no step; the schedule follows the update count either way.
    torch checks the DataLoader worker count at every DataLoader and iterator (each epoch, each evaluation):
    shown once. Never a `warnings.catch_warnings()` per update: leaving it resets Python's "already shown"
    registry, and every other warning (the worker count, ...) came back at every update.
    """
    warnings.filterwarnings("ignore", category=UserWarning,
                            message=re.escape("Detected call of `lr_scheduler.step()` before `optimizer.step()`"))
    warnings.filterwarnings("once", category=UserWarning, message="This DataLoader will create")


class Trainer:
    """Owns the optimizer update: accumulation, normalization, clipping, non-finite skipping, counters."""

    def __init__(self, cfg: Config, backend: Backend, accelerator, model, optimizer, scheduler,
                 encoder_freeze: EncoderFreeze, use_attention_mask: bool, blank_id: int, progress: RunProgress,
                 scaler: "torch.amp.GradScaler | None" = None):
        self.cfg = cfg
        self.backend = backend
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler  # a pure function of progress.step (lr_schedule.py)
        self.encoder_freeze = encoder_freeze
        self.use_attention_mask = use_attention_mask
        self.blank_id = blank_id
        self.progress = progress  # counters, checkpointed
        self.scaler = scaler  # fp16 under DDP: dynamic loss scaling (backend.owns_loss_scaling)
        self.deepspeed = backend.is_deepspeed
        # DeepSpeed's bf16/fp16 weight modes have no autocast of ours: inputs are cast to the weights' dtype.
        self.input_dtype = next(accelerator.unwrap_model(model).parameters()).dtype if self.deepspeed \
            else torch.float32
        # batch["input_values"] is the model's input whatever its kind: waveform (`input_values`) or
        # filterbank steps (`input_features`, w2v-BERT, Parakeet); the model's forward names it
        self.input_name = accelerator.unwrap_model(model).main_input_name

    @property
    def step(self) -> int:
        return self.progress.step

    # -- one update
    def train_step(self, micro_batches: list[dict]) -> dict:
        """One optimizer update from this rank's `grad_accum` micro-batches; returns global statistics.

        Collective: every rank calls it with the same number of micro-batches.
        """
        acc, cfg = self.accelerator, self.cfg
        if len(micro_batches) != cfg.train.grad_accum:
            raise RuntimeError(f"an update needs train.grad_accum = {cfg.train.grad_accum} micro-batches, got "
                               f"{len(micro_batches)} (the data plan must give every step exactly that many)")
        started = time.perf_counter()
        self.model.train()
        self.encoder_freeze.set_step(self.step)
        local = torch.tensor([float(sum(target_tokens(b["labels"], self.blank_id) for b in micro_batches)),
                              sum(b["audio_seconds"] for b in micro_batches),
                              sum(b["padded_seconds"] for b in micro_batches),
                              float(sum(len(b["labels"]) for b in micro_batches))], dtype=torch.float64)
        tokens, audio_s, padded_s, samples = acc.reduce(local.to(acc.device), reduction="sum").tolist()
        scale = backward_scale(tokens, cfg.train.grad_accum, acc.num_processes)

        ctc_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
        nonfinite = torch.zeros((), dtype=torch.float64, device=acc.device)
        for i, batch in enumerate(micro_batches):
            inputs = self._model_inputs(batch, poison=(i == 0 and acc.process_index == 0
                                                       and self.step in cfg.train.debug_nan_steps))
            with acc.accumulate(self.model):
                with self.backend.autocast(acc.device.type):
                    loss = self.model(**inputs).loss.float()  # CTC sum over the micro-batch (fp32 log-softmax)
                nonfinite += (~torch.isfinite(loss.detach())).double()  # no host sync on GPUs
                ctc_sum += loss.detach().double()
                acc.backward(loss * scale if self.scaler is None else self.scaler.scale(loss * scale))
        if not acc.sync_gradients:
            raise RuntimeError("Accelerate's accumulation counter is out of step with the data plan")
        if self.encoder_freeze.active and not self.deepspeed:
            self._zero_encoder_grads()

        grad_norm, totals, skipped = self._apply_update(ctc_sum, nonfinite)
        progress = self.progress
        if skipped:
            progress.skipped_updates += 1
            log.warning("step %d: non-finite loss or gradient (grad norm %s%s): update skipped on all ranks "
                        "(%d so far)", progress.step, grad_norm, self._scale_note(), progress.skipped_updates)
        lrs = self.learning_rates()
        progress.step += 1
        self.scheduler.step()  # after the update (torch's order warning is a false alarm: see quiet_known_warnings)
        progress.audio_seconds_seen += audio_s
        progress.samples_seen += int(samples)
        if self.scaler is not None:
            lrs["loss_scale"] = float(self.scaler.get_scale())
        return {"loss": totals[0] / max(tokens, 1.0), "grad_norm": grad_norm, "skipped": bool(skipped),
                "skipped_updates": progress.skipped_updates, "tokens": tokens, "samples": samples,
                "audio_seconds": audio_s, "padded_seconds": padded_s,
                "step_seconds": time.perf_counter() - started, **lrs}

    def _apply_update(self, ctc_sum: torch.Tensor, nonfinite: torch.Tensor) -> tuple[float, list[float], bool]:
        """Clip and step, or skip on every rank when the loss or the gradients are not finite (an fp16 overflow
        included). Returns (grad norm, [global CTC sum, non-finite count], skipped)."""
        acc, cfg = self.accelerator, self.cfg
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # true gradients for clipping; an overflow makes the norm inf
        max_norm = cfg.optimizer.max_grad_norm or math.inf
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)  # DeepSpeed: its own (pre-clip) norm
        grad_norm = float(grad_norm) if grad_norm is not None else math.nan
        totals = acc.reduce(torch.stack([ctc_sum, nonfinite]), reduction="sum").tolist()
        if self.deepspeed:
            # DeepSpeed already stepped inside backward(), skipping by itself when the gradients were not
            # finite (all ranks agree: its overflow check is an all-reduce).
            skipped = acc.optimizer_step_was_skipped
            if totals[1] and not skipped:
                log.error("step %d: non-finite loss but DeepSpeed applied the update", self.step)
        else:
            # DDP's gradients and hence grad_norm are identical on all ranks; the loss flag is all-reduced.
            skipped = totals[1] > 0 or not math.isfinite(grad_norm)
            if not skipped:
                self.optimizer.step()
            if self.scaler is not None:
                self.scaler.update()  # halves the scale after an overflow, grows it after a run of good updates
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, totals, skipped

    def _scale_note(self) -> str:
        return f"; fp16 loss scale now {self.scaler.get_scale():g}" if self.scaler is not None else ""

    def _zero_encoder_grads(self) -> None:
        """While EncoderFreeze holds the encoder, give its parameters zero gradients instead of none.

        DeepSpeed's flat partitions always hand the optimizer a gradient (zeros for parameters that got none),
        so Adam counts the frozen updates for the encoder too; torch's Adam skips parameters without a gradient
        and would start the encoder's bias correction afresh at unfreezing. Zero gradients make DDP take the
        same trajectory as ZeRO (tests/test_train.py compares them). With the encoder's lr at 0 meanwhile the
        weights stay bit-identical either way.
        """
        for group in self.optimizer.param_groups:
            if is_encoder_group(group):
                for param in group["params"]:
                    if param.grad is None:
                        param.grad = torch.zeros_like(param)

    def learning_rates(self) -> dict[str, float]:
        """The lr each group used for the update just made, e.g. {"lr/head": ..., "lr/encoder": ...}."""
        out = {}
        for group in self.optimizer.param_groups:
            out.setdefault(f"lr/{group.get('name', 'group').removesuffix('_no_decay')}", group["lr"])
        return out

    def _model_inputs(self, batch: dict, poison: bool = False) -> dict:
        device = self.accelerator.device
        input_values = batch["input_values"].to(device, non_blocking=True)  # pinned by the loader on GPUs
        if poison:  # train.debug_nan_steps: prove a non-finite update is skipped everywhere
            input_values = input_values.clone()
            input_values[0] = math.inf
        inputs = {self.input_name: input_values.to(self.input_dtype),
                  "labels": batch["labels"].to(device, non_blocking=True)}
        if self.use_attention_mask:
            inputs["attention_mask"] = batch["attention_mask"].to(device, non_blocking=True)
        return inputs
