"""Training entry point and orchestrator: `accelerate launch -m asr_dist.train --config X.yaml key=value ...`.

One process (`asr-dist train`, `python -m asr_dist.train`) or many (`accelerate launch`, torchrun, Slurm
through `run(cfg)` in-process), plain DDP or DeepSpeed ZeRO 1/2/3, CPU or GPU. The pieces are built by
their own modules; this file wires them together and owns the optimizer step:

    model.py       build_model + freezing          optim.py      param groups (head / encoder lr)
    loss.py        global-token CTC normalization  lr_schedule   per-step lr multiplier
    data/loader    this rank's batches             evaluate.py   loss, WER/CER
    metrics.py     TensorBoard + metrics.jsonl     checkpoint.py save/resume; stop.py graceful stop

One optimizer update = `train.grad_accum` micro-batches per rank (the data plan guarantees every rank
gets the same count). The trainer pulls them first, all-reduces their target-token count, then runs
forward/backward on each with loss = CTC sum x loss.backward_scale (see loss.py), so that the update is
the gradient of (all CTC) / (all target tokens), whatever the split over micro-batches and ranks.

Launch quirks handled here (shared/facts/distributed-cpu.md): on a machine without CUDA, DDP needs
`Accelerator(cpu=True)` and DeepSpeed needs the gloo backend and must NOT get cpu=True. On GPUs neither
applies. The model is built before the Accelerator (ZeRO-3 + from_pretrained crashes otherwise).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from asr_dist.config import Config, ConfigError, load_config
from asr_dist.loss import backward_scale, target_tokens
from asr_dist.lr_schedule import build_lr_scheduler
from asr_dist.model import EncoderFreeze, build_model, count_parameters, freeze_parameters, model_family
from asr_dist.optim import build_optimizer, is_encoder_group

log = logging.getLogger("asr_dist.train")


# ----------------------------------------------------------------------------- launch checks


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


def check_launch(cfg: Config, ds_config: dict | None) -> None:
    """Combinations that only fail deep inside DDP/DeepSpeed (or silently): refuse them up front."""
    if not cfg.data.train_shards:
        raise ConfigError("data.train_shards = '' is not allowed for training; expected the shard folder written "
                          "by `asr-dist prepare` (with index.json)")
    stage = int(ds_config["zero_optimization"].get("stage", 0)) if ds_config is not None else None
    if cfg.model.layerdrop > 0 and stage in (0, 1, 2):
        raise ConfigError(f"model.layerdrop = {cfg.model.layerdrop} is not allowed with DeepSpeed ZeRO-{stage} "
                          "(ranks skip different layers and the gradient buckets no longer match); use 0, "
                          "DDP or ZeRO-3")
    if ds_config is not None:
        offload = ds_config["zero_optimization"].get("offload_optimizer", {}).get("device", "none")
        if offload not in ("none", None) and ds_config.get("zero_force_ds_cpu_optimizer", True):
            raise ConfigError("DeepSpeed config with offload_optimizer needs \"zero_force_ds_cpu_optimizer\": false: "
                              "otherwise Accelerate swaps in DeepSpeedCPUAdam and the lr schedule drives an orphaned "
                              "optimizer after a resume (see configs/deepspeed/zero2_offload.json)")
    precision = cfg.train.mixed_precision
    if precision != "no" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.mixed_precision = {precision!r} is not allowed on this GPU (no bf16 support); "
                          "use 'no'")
    if precision == "bf16_weights" and ds_config is None:
        raise ConfigError("train.mixed_precision = 'bf16_weights' is not allowed without DeepSpeed (it is "
                          "DeepSpeed's bf16 mode); use 'bf16' (autocast) for DDP")


# ----------------------------------------------------------------------------- accelerator


def build_accelerator(cfg: Config, ds_config: dict | None):
    """The Accelerator for DDP (ds_config None) or DeepSpeed, with this machine's launch quirks applied."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, DistributedDataParallelKwargs, InitProcessGroupKwargs

    on_gpu = torch.cuda.is_available()
    precision = cfg.train.mixed_precision
    # Accelerate's "bf16" is autocast under DDP but bf16 weights under DeepSpeed; we ask DeepSpeed for autocast
    # itself (its torch_autocast section) so that "bf16" means the same on both.
    accelerate_precision = precision if ds_config is None else ("bf16" if precision == "bf16_weights" else "no")
    common = dict(mixed_precision=accelerate_precision, gradient_accumulation_steps=cfg.train.grad_accum,
                  step_scheduler_with_optimizer=False, project_dir=cfg.train.run_dir,
                  log_with="tensorboard")  # metrics.MetricsLogger starts the tracker (run_dir/tensorboard/)
    if ds_config is None:
        # Unused parameters: layerdrop skips layers; EncoderFreeze runs the encoder without autograd.
        unused = cfg.model.layerdrop > 0 or cfg.freezing.encoder_updates > 0
        handlers = [DistributedDataParallelKwargs(find_unused_parameters=unused)]
        return Accelerator(cpu=not on_gpu, kwargs_handlers=handlers, **common)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    ds = json.loads(json.dumps(ds_config))  # a copy we may fill in
    # Our config is the one source of truth for these; DeepSpeed's `auto` would otherwise become 1.0 etc.
    ds["gradient_accumulation_steps"] = cfg.train.grad_accum
    ds["gradient_clipping"] = cfg.optimizer.max_grad_norm
    # Batches have a variable number of samples (bounded by audio seconds), so DeepSpeed's batch sizes
    # are only bookkeeping; they must merely be consistent: train = micro x accumulation x world.
    ds["train_micro_batch_size_per_gpu"] = 1
    ds["train_batch_size"] = cfg.train.grad_accum * world_size
    # bf16: fp32 master weights, bf16 matmuls/convolutions under torch.autocast (Linear/Conv gradients are
    # reduced in bf16). bf16_weights: DeepSpeed's bf16 mode, bf16 weights with fp32 copies in the optimizer;
    # it halves weight memory but trains worse from scratch (the demo's model left the CTC blank plateau
    # ~100 updates later and ended at CER 0.46 instead of 0.39).
    ds.setdefault("bf16", {})["enabled"] = precision == "bf16_weights"
    ds["bf16"].setdefault("check_grad_overflow", True)  # skip updates with non-finite gradients
    ds["torch_autocast"] = {"enabled": precision == "bf16", "dtype": "bfloat16"}
    if int(ds["zero_optimization"].get("stage", 0)) == 3:  # export gathers the full weights
        ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    plugin = DeepSpeedPlugin(hf_ds_config=ds, gradient_accumulation_steps=cfg.train.grad_accum,
                             gradient_clipping=cfg.optimizer.max_grad_norm, zero3_init_flag=False)
    handlers = [] if on_gpu else [InitProcessGroupKwargs(backend="gloo")]  # CPU: no NCCL
    return Accelerator(deepspeed_plugin=plugin, kwargs_handlers=handlers, **common)


def is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """Owns the optimizer update: accumulation, normalization, clipping, non-finite skipping, counters."""

    def __init__(self, cfg: Config, accelerator, model, optimizer, encoder_freeze: EncoderFreeze,
                 use_attention_mask: bool, blank_id: int):
        self.cfg = cfg
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.scheduler = None  # set by run() once the number of steps is known
        self.encoder_freeze = encoder_freeze
        self.use_attention_mask = use_attention_mask
        self.blank_id = blank_id
        self.deepspeed = is_deepspeed(accelerator)
        # batch["input_values"] is the model's input whatever its kind: waveform (`input_values`) or
        # filterbank steps (`input_features`, w2v-BERT); the model's forward names it
        self.input_name = accelerator.unwrap_model(model).main_input_name
        # DeepSpeed's bf16_weights mode has no autocast: inputs must be cast to the weights' dtype by hand.
        self.input_dtype = next(accelerator.unwrap_model(model).parameters()).dtype if self.deepspeed \
            else torch.float32
        # counters (checkpointed through state_dict)
        self.step = 0  # optimizer updates done (skipped ones included: their data was consumed)
        self.skipped_updates = 0
        self.audio_seconds_seen = 0.0
        self.samples_seen = 0

    # -- state for the checkpoint manager
    def state_dict(self) -> dict:
        return {"step": self.step, "skipped_updates": self.skipped_updates,
                "audio_seconds_seen": self.audio_seconds_seen, "samples_seen": self.samples_seen}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.skipped_updates = int(state["skipped_updates"])
        self.audio_seconds_seen = float(state["audio_seconds_seen"])
        self.samples_seen = int(state["samples_seen"])

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
                loss = self.model(**inputs).loss.float()  # CTC sum over the micro-batch (fp32 log-softmax)
                nonfinite += (~torch.isfinite(loss.detach())).double()  # no host sync on GPUs
                ctc_sum += loss.detach().double()
                acc.backward(loss * scale)
        if not acc.sync_gradients:
            raise RuntimeError("Accelerate's accumulation counter is out of step with the data plan")
        if self.encoder_freeze.active and not self.deepspeed:
            self._zero_encoder_grads()

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
        self.optimizer.zero_grad(set_to_none=True)
        if skipped:
            self.skipped_updates += 1
            log.warning("step %d: non-finite loss or gradient (grad norm %s): update skipped on all ranks "
                        "(%d so far)", self.step, grad_norm, self.skipped_updates)
        lrs = self.learning_rates()
        self.step += 1
        with warnings.catch_warnings():
            # torch warns when the optimizer's own step() was not called: DeepSpeed steps inside backward()
            # and a skipped update has no step; the schedule follows the update count either way.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
            self.scheduler.step()
        self.audio_seconds_seen += audio_s
        self.samples_seen += int(samples)
        return {"loss": totals[0] / max(tokens, 1.0), "grad_norm": grad_norm, "skipped": bool(skipped),
                "skipped_updates": self.skipped_updates, "tokens": tokens, "samples": samples,
                "audio_seconds": audio_s, "padded_seconds": padded_s,
                "step_seconds": time.perf_counter() - started, **lrs}

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
        input_values = batch["input_values"].to(device)
        if poison:  # train.debug_nan_steps: prove a non-finite update is skipped everywhere
            input_values = input_values.clone()
            input_values[0] = math.inf
        inputs = {self.input_name: input_values.to(self.input_dtype), "labels": batch["labels"].to(device)}
        if self.use_attention_mask:
            inputs["attention_mask"] = batch["attention_mask"].to(device)
        return inputs


# ----------------------------------------------------------------------------- run


def memory_mb(trim: bool = False) -> dict[str, float]:
    """This process's memory now and at its peak: torch's allocated GPU memory on CUDA, else the resident set
    (Linux /proc; on CPU it includes Python and the libraries, about 1 GB, and transient copies at start-up).

    `trim` first hands freed heap memory back to the OS (glibc malloc_trim): without it the resident set of a
    CPU process keeps every tensor it ever freed and shows no difference between DDP and ZeRO."""
    if torch.cuda.is_available():
        return {"now": torch.cuda.memory_allocated() / 2**20, "peak": torch.cuda.max_memory_allocated() / 2**20}
    if trim:
        import ctypes
        import gc

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc
            pass
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"now": int(status["VmRSS"].split()[0]) / 1024, "peak": int(status["VmHWM"].split()[0]) / 1024}


def processor_path(cfg: Config) -> Path:
    return Path(cfg.data.processor) if cfg.data.processor else Path(cfg.data.train_shards) / "processor"


def _setup_logging(is_main: bool) -> None:
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(cfg: Config) -> dict:
    """Train as `cfg` says, in this process (one rank of a launched job); returns a summary on every rank.

    Keys: steps, skipped_updates, losses (this process's run, per update), final_loss, eval (final
    scores or None), stopped (graceful stop), exit_code (0, or stop.REQUEUE_EXIT_CODE after a graceful
    stop: the caller exits with it so that Slurm/submitit requeue), run_dir, export_dir, peak_memory_mb and
    training_memory_mb (one per rank). Files in train.run_dir: config.yaml, metrics.jsonl, tensorboard/, checkpoints/,
    eval.json, export/, summary.json (this dict without losses and eval).
    """
    from accelerate.utils import gather_object, set_seed

    from asr_dist.checkpoint import CheckpointManager
    from asr_dist.data.loader import build_eval_loader, build_train_loader
    from asr_dist.evaluate import evaluate
    from asr_dist.export import export_pretrained
    from asr_dist.families import frames_for_samples, pair_processor
    from asr_dist.metrics import MetricsLogger, ThroughputMeter
    from asr_dist.stop import REQUEUE_EXIT_CODE, GracefulStop
    from asr_dist.text import load_processor

    ds_config = read_deepspeed_config(cfg)
    check_launch(cfg, ds_config)
    _setup_logging(int(os.environ.get("RANK", "0")) == 0)
    # the shards' tokenizer with the model family's own feature extractor (asr_dist/families.py)
    processor = pair_processor(model_family(cfg.model), load_processor(processor_path(cfg)), cfg.model.pretrained)

    set_seed(cfg.train.seed)  # same initial weights on every rank (ZeRO-3 partitions each rank's copy)
    model = build_model(cfg.model, processor)
    freeze_parameters(model, cfg.freezing)
    encoder_freeze = EncoderFreeze(model, cfg.freezing.encoder_updates)
    optimizer = build_optimizer(model, cfg.optimizer)

    accelerator = build_accelerator(cfg, ds_config)
    _setup_logging(accelerator.is_main_process)
    rank, world = accelerator.process_index, accelerator.num_processes
    run_dir = Path(cfg.train.run_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
    sizes = count_parameters(model)
    backend = f"DeepSpeed ZeRO-{ds_config['zero_optimization'].get('stage')}" if ds_config else "DDP"
    log.info("%s on %d process(es), %s, %s; model %.2fM parameters (%.2fM trainable)", backend, world,
             accelerator.device, cfg.train.mixed_precision, sizes["total"] / 1e6, sizes["trainable"] / 1e6)

    train_loader = build_train_loader(cfg.data, processor, seed=cfg.train.seed, rank=rank, world_size=world,
                                      grad_accum=cfg.train.grad_accum,
                                      frames_for=frames_for_samples(model, processor.feature_extractor))
    eval_loader = (build_eval_loader(cfg.data, processor, rank=rank, world_size=world)
                   if cfg.data.eval_shards else None)
    model, optimizer = accelerator.prepare(model, optimizer)
    trainer = Trainer(cfg, accelerator, model, optimizer, encoder_freeze,
                      use_attention_mask=bool(getattr(processor.feature_extractor, "return_attention_mask", True)),
                      blank_id=processor.tokenizer.pad_token_id)
    log.info("weights in %s, inputs cast to %s", next(accelerator.unwrap_model(model).parameters()).dtype,
             trainer.input_dtype)

    checkpoints = CheckpointManager(accelerator, run_dir, cfg.checkpoint, config=cfg, model=model,
                                    processor=processor)
    extra_state = {"loader": train_loader, "trainer": trainer}
    resume_from = checkpoints.resolve(cfg.train.resume)
    if resume_from is not None:
        checkpoints.load(resume_from, extra_state)

    steps_per_epoch = max(len(train_loader) // cfg.train.grad_accum, 1)
    total_steps = min(cfg.train.max_steps, cfg.train.max_epochs * steps_per_epoch)
    # Built on the prepared optimizer (its param_groups are the ones DeepSpeed steps), after a resume: the
    # multiplier is a pure function of the step. Stepped once per update by the trainer, never by Accelerate
    # (its prepared scheduler steps once per process).
    trainer.scheduler = build_lr_scheduler(optimizer, cfg.schedule, total_steps, steps_per_epoch,
                                           start_step=trainer.step,
                                           encoder_frozen_until=cfg.freezing.encoder_updates)
    metrics = MetricsLogger(accelerator, run_dir, total_steps=total_steps, start_step=trainer.step,
                            hparams=cfg.to_dict())
    throughput = ThroughputMeter()
    stop = GracefulStop().install()

    def epoch() -> float:
        return trainer.step / steps_per_epoch

    def run_eval() -> dict | None:
        if eval_loader is None:
            return None
        result = evaluate(model, eval_loader, processor, accelerator, cfg.eval,
                          mixed_precision=cfg.train.mixed_precision)
        metrics.log_eval(result, trainer.step, epoch())
        return result

    losses: list[float] = []
    micro_batches = _micro_batches(train_loader)
    last_saved = trainer.step if resume_from is not None else -1
    window_loss, window_steps = 0.0, 0
    try:
        while trainer.step < total_steps:
            waited = time.perf_counter()
            batches = [next(micro_batches) for _ in range(cfg.train.grad_accum)]
            data_wait = time.perf_counter() - waited
            for batch in batches:
                throughput.add_batch(batch["audio_seconds"], batch["padded_seconds"], data_wait / len(batches))
            stats = trainer.train_step(batches)
            losses.append(stats["loss"])
            if not stats["skipped"]:
                window_loss, window_steps = window_loss + stats["loss"], window_steps + 1
            step = trainer.step
            metrics.progress(loss=stats["loss"], lr=stats.get("lr/head"))
            if step % cfg.train.log_every == 0 or step == total_steps:
                metrics.log({**stats, "loss_avg": window_loss / max(window_steps, 1),
                             **throughput.summary(accelerator), "data_wait_seconds": data_wait,
                             "epoch_index": train_loader.epoch, "memory_mb": memory_mb()["now"]},  # main rank's
                            step, epoch())
                window_loss, window_steps = 0.0, 0
            evaluation = None
            if cfg.eval.every_steps and step % cfg.eval.every_steps == 0 and step < total_steps:
                evaluation = run_eval()
            if checkpoints.due(step):
                checkpoints.save(step, extra_state, {"wer": evaluation.wer} if evaluation else None)
                last_saved = step
            if stop.should_stop(accelerator):
                metrics.write(f"stopping at step {step}: {stop.reason}; saving a checkpoint to resume from")
                if last_saved != step:
                    checkpoints.save(step, extra_state)
                break
    finally:
        stop.uninstall()
    trained_memory = memory_mb(trim=True)

    result: dict = {"steps": trainer.step, "skipped_updates": trainer.skipped_updates, "losses": losses,
                    "final_loss": losses[-1] if losses else math.nan, "eval": None, "stopped": stop.stopping,
                    "exit_code": REQUEUE_EXIT_CODE if stop.stopping else 0, "run_dir": str(run_dir),
                    "export_dir": None}
    if not stop.stopping:
        final = run_eval()
        if final is not None:
            result["eval"] = final.to_dict()
            if accelerator.is_main_process:
                (run_dir / "eval.json").write_text(json.dumps(result["eval"], indent=1))
        if cfg.checkpoint.every_steps and last_saved != trainer.step:
            checkpoints.save(trainer.step, extra_state, {"wer": final.wer} if final else None)
        result["export_dir"] = str(export_pretrained(accelerator, model, processor, run_dir / "export"))
    memory = gather_object([{"end_of_training": trained_memory["now"], **memory_mb()}])  # per rank (collective)
    result["peak_memory_mb"] = [m["peak"] for m in memory]  # the whole run: start-up, training, eval, export
    result["training_memory_mb"] = [m["end_of_training"] for m in memory]  # held after the last update
    if accelerator.is_main_process:
        summary = {k: v for k, v in result.items() if k not in ("losses", "eval")}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    metrics.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _micro_batches(train_loader):
    """This rank's batches, epoch after epoch (the loader moves to the next epoch when one is exhausted)."""
    while True:
        yield from train_loader


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asr-dist train",
        description="Fine-tune a wav2vec2-CTC model. Many processes: accelerate launch [--config_file "
                    "configs/accelerate/X.yaml] -m asr_dist.train --config configs/train/X.yaml key=value ...")
    parser.add_argument("--config", help="train config YAML (configs/train/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=100")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        ds_config = read_deepspeed_config(cfg)
        check_launch(cfg, ds_config)
    except ConfigError as e:
        print(f"asr-dist train: bad configuration: {e}", file=sys.stderr)
        return 2
    result = run(cfg)
    return int(result["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
