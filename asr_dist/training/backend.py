"""The one place that answers "how does this run compute": DDP or DeepSpeed ZeRO-N, which precision, what
dtype the inputs get, and the Accelerator built from those answers.

Launch quirks handled here (shared/facts/distributed-cpu.md): on a machine without CUDA, DDP needs
`Accelerator(cpu=True)` and DeepSpeed needs the gloo backend and must NOT get cpu=True. On GPUs neither
applies. Precisions (training/precision.py decides which):

    no            fp32 everywhere
    bf16          torch.autocast(bf16), fp32 master weights; under DeepSpeed through its torch_autocast section,
                  so that "bf16" means the same on DDP and ZeRO
    fp16          torch.autocast(fp16) + dynamic loss scaling: a torch GradScaler owned by the update step under
                  DDP (so it runs, and is tested, on CPUs too); DeepSpeed's own fp16 loss scaler under ZeRO (GPU)
    bf16_weights  DeepSpeed's bf16 mode: bf16 weights, fp32 copies in the optimizer; inputs cast by hand
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from asr_dist.config import Config, ConfigError
from asr_dist.repo_paths import repo_file
from asr_dist.training.precision import PrecisionChoice, choose_precision


def read_deepspeed_config(cfg: Config) -> dict | None:
    """The DeepSpeed JSON this run uses, or None for DDP. Read and checked before any process group exists.

    `train.deepspeed_config` wins; otherwise what `accelerate launch` put in the environment
    (ACCELERATE_USE_DEEPSPEED + ACCELERATE_DEEPSPEED_CONFIG_FILE, or just a ZeRO stage).
    """
    path = cfg.train.deepspeed_config
    if not path and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
        if not path or path == "none":  # `accelerate launch --use_deepspeed --zero_stage N` without a JSON
            stage = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", 2))
            return {"zero_optimization": {"stage": stage}}
    if not path:
        return None
    from_launcher = path == os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    path = str(repo_file(path))  # configs/deepspeed/X.json works from any folder (asr_dist/repo_paths.py)
    if from_launcher:
        os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = path  # the same file for Accelerate's own readers
    try:
        ds = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"DeepSpeed config {path}: cannot be read as JSON ({e})") from None
    if not isinstance(ds, dict) or "zero_optimization" not in ds:
        raise ConfigError(f"DeepSpeed config {path}: needs a zero_optimization section (see configs/deepspeed/)")
    for owned, where in (("optimizer", "the optimizer section"), ("scheduler", "the schedule section")):
        if owned in ds:
            raise ConfigError(f"DeepSpeed config {path}: remove its {owned!r} block; asr_dist builds the {owned} "
                              f"from {where} of the train config (one source of truth for lr and schedule)")
    return ds


@dataclass(frozen=True)
class Backend:
    """DDP (ds_config None) or DeepSpeed ZeRO-N, and the precision chosen for this device."""

    ds_config: dict | None
    precision: PrecisionChoice

    @classmethod
    def for_run(cls, cfg: Config) -> "Backend":
        """Reads the DeepSpeed config, chooses the precision and refuses combinations that would only fail deep
        inside DDP/DeepSpeed (or silently). No process group is needed."""
        ds_config = read_deepspeed_config(cfg)
        try:
            precision = choose_precision(cfg.train.mixed_precision)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        backend = cls(ds_config, precision)
        backend.check(cfg)
        return backend

    # -- what it is
    @property
    def is_deepspeed(self) -> bool:
        return self.ds_config is not None

    @property
    def zero_stage(self) -> int | None:
        return int(self.ds_config["zero_optimization"].get("stage", 0)) if self.ds_config is not None else None

    @property
    def name(self) -> str:
        return f"DeepSpeed ZeRO-{self.zero_stage}" if self.is_deepspeed else "DDP"

    @property
    def mode(self) -> str:
        return self.precision.mode

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)

    @property
    def owns_loss_scaling(self) -> bool:
        """fp16 under DDP: the update step scales the loss with a torch GradScaler."""
        return self.mode == "fp16" and not self.is_deepspeed

    def autocast(self, device_type: str):
        """The autocast the forward pass runs under (also in evaluation)."""
        dtype = self.autocast_dtype
        return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    # -- checks
    def check(self, cfg: Config) -> None:
        if not cfg.data.train_shards:
            raise ConfigError("data.train_shards = '' is not allowed for training; expected the shard folder "
                              "written by `asr-dist prepare` (with index.json)")
        stage = self.zero_stage
        if cfg.model.layerdrop > 0 and stage in (0, 1, 2):
            raise ConfigError(f"model.layerdrop = {cfg.model.layerdrop} is not allowed with DeepSpeed ZeRO-{stage} "
                              "(ranks skip different layers and the gradient buckets no longer match); use 0, "
                              "DDP or ZeRO-3")
        if self.ds_config is not None:
            offload = self.ds_config["zero_optimization"].get("offload_optimizer", {}).get("device", "none")
            if offload not in ("none", None) and self.ds_config.get("zero_force_ds_cpu_optimizer", True):
                raise ConfigError("DeepSpeed config with offload_optimizer needs \"zero_force_ds_cpu_optimizer\": "
                                  "false: otherwise Accelerate swaps in DeepSpeedCPUAdam and the lr schedule drives "
                                  "an orphaned optimizer after a resume (see configs/deepspeed/zero2_offload.json)")
        if self.mode == "bf16_weights" and not self.is_deepspeed:
            raise ConfigError("train.mixed_precision = 'bf16_weights' is not allowed without DeepSpeed (it is "
                              "DeepSpeed's bf16 mode); use 'bf16' (autocast) for DDP")
        if self.mode == "fp16" and self.is_deepspeed and not torch.cuda.is_available():
            raise ConfigError("train.mixed_precision = 'fp16' under DeepSpeed needs a GPU (DeepSpeed's CPU backend "
                              "has no fp16); use DDP (configs/accelerate/cpu_ddp_2proc.yaml) or 'auto'")

    # -- the Accelerator
    def build_accelerator(self, cfg: Config):
        """The Accelerator for this backend, with this machine's launch quirks applied."""
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, DistributedDataParallelKwargs, InitProcessGroupKwargs

        on_gpu = torch.cuda.is_available()
        # Autocast is ours (self.autocast) on every backend, so Accelerate is told "no" except for DeepSpeed's
        # bf16 weights, which it configures.
        common = dict(mixed_precision="bf16" if self.mode == "bf16_weights" else "no",
                      gradient_accumulation_steps=cfg.train.grad_accum, step_scheduler_with_optimizer=False,
                      project_dir=cfg.train.run_dir,
                      log_with="tensorboard")  # metrics.MetricsLogger starts the tracker (run_dir/tensorboard/)
        if self.ds_config is None:
            # Unused parameters: layerdrop skips layers; EncoderFreeze runs the encoder without autograd.
            unused = cfg.model.layerdrop > 0 or cfg.freezing.encoder_updates > 0
            handlers = [DistributedDataParallelKwargs(find_unused_parameters=unused)]
            return Accelerator(cpu=not on_gpu, kwargs_handlers=handlers, **common)
        plugin = DeepSpeedPlugin(hf_ds_config=self._filled_ds_config(cfg),
                                 gradient_accumulation_steps=cfg.train.grad_accum,
                                 gradient_clipping=cfg.optimizer.max_grad_norm, zero3_init_flag=False)
        handlers = [] if on_gpu else [InitProcessGroupKwargs(backend="gloo")]  # CPU: no NCCL
        return Accelerator(deepspeed_plugin=plugin, kwargs_handlers=handlers, **common)

    def _filled_ds_config(self, cfg: Config) -> dict:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        ds = json.loads(json.dumps(self.ds_config))  # a copy we may fill in
        # Our config is the one source of truth for these; DeepSpeed's `auto` would otherwise become 1.0 etc.
        ds["gradient_accumulation_steps"] = cfg.train.grad_accum
        ds["gradient_clipping"] = cfg.optimizer.max_grad_norm
        # Batches have a variable number of samples (bounded by audio seconds), so DeepSpeed's batch sizes
        # are only bookkeeping; they must merely be consistent: train = micro x accumulation x world.
        ds["train_micro_batch_size_per_gpu"] = 1
        ds["train_batch_size"] = cfg.train.grad_accum * world_size
        # bf16_weights trains worse from scratch than autocast with fp32 masters (the demo's model left the CTC
        # blank plateau ~100 updates later and ended at CER 0.46 instead of 0.39), so autocast is the default.
        ds.setdefault("bf16", {})["enabled"] = self.mode == "bf16_weights"
        ds["bf16"].setdefault("check_grad_overflow", True)  # skip updates with non-finite gradients
        ds.setdefault("fp16", {})["enabled"] = self.mode == "fp16"
        if self.mode == "fp16":  # dynamic loss scaling; overflow steps are skipped (and counted by the trainer)
            ds["fp16"].setdefault("loss_scale", 0)
            ds["fp16"].setdefault("initial_scale_power", 16)
        ds["torch_autocast"] = {"enabled": self.mode == "bf16", "dtype": "bfloat16"}
        if self.zero_stage == 3:  # export gathers the full weights
            ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
        return ds


def zero_stage_of(accelerator) -> int | None:
    """The ZeRO stage an Accelerator runs (None for DDP / one process): for code that only has the Accelerator
    (checkpoint loading, evaluation, export)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    return int(accelerator.state.deepspeed_plugin.zero_stage or 0)
