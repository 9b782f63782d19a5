"""Typed run configuration: dataclasses loaded from YAML, overridden by `section.key=value`.

Every check happens here, before any work starts: an unknown key, a wrong type or an
impossible value raises `ConfigError` naming the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration problem, found before any work starts."""


# ----------------------------------------------------------------------------- sections


@dataclass
class AugmentConfig:
    """On-the-fly augmentation of training audio (never applied to eval)."""

    enabled: bool = False
    speed_factors: list[float] = field(default_factory=list)  # e.g. [0.9, 1.0, 1.1]; empty = off
    noise_prob: float = 0.0  # probability of additive noise per sample
    snr_db: list[float] = field(default_factory=lambda: [10.0, 30.0])  # [low, high]
    gain_db: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [low, high]; 0,0 = off

    def check(self, at: str) -> None:
        for f in self.speed_factors:
            _require(f > 0, f"{at}.speed_factors", "positive factors", f)
        _require(0.0 <= self.noise_prob <= 1.0, f"{at}.noise_prob", "a probability in [0, 1]", self.noise_prob)
        for name in ("snr_db", "gain_db"):
            lo_hi = getattr(self, name)
            _require(len(lo_hi) == 2 and lo_hi[0] <= lo_hi[1], f"{at}.{name}", "[low, high] with low <= high", lo_hi)


@dataclass
class SourceConfig:
    """One training source of data.train (mixing by weight: asr_dist/data/mix.py, docs/config.md)."""

    name: str = ""  # shown in logs, metrics (mix/<name>/...) and the report; letters, digits, - and _
    shards: str = ""  # like data.train_shards: a shard folder, or a URL spec with `index`
    weight: float = 1.0  # share of an epoch's samples (relative to the other sources)
    index: str = ""  # index.json path; empty = <shards>/index.json

    def check(self, at: str) -> None:
        _require(bool(self.name) and all(c.isalnum() or c in "-_" for c in self.name), f"{at}.name",
                 "a non-empty name of letters, digits, '-' and '_'", self.name)
        _require(bool(self.shards), f"{at}.shards", "a shard folder or URL spec", self.shards)
        _require(self.weight > 0, f"{at}.weight", "a number > 0", self.weight)


@dataclass
class DataConfig:
    """Where the shards are and how batches are formed."""

    train_shards: str = ""  # folder with index.json (written by `asr-dist prepare`), or a webdataset URL spec
    eval_shards: str = ""  # (brace pattern, `pipe:...`) listing the index's shards in order; then set *_index
    train_index: str = ""  # index.json path; empty = <train_shards>/index.json
    eval_index: str = ""
    processor: str = ""  # Wav2Vec2Processor folder; empty = <train_shards>/processor (`asr-dist prepare --processor`)
    sample_rate: int = 16000
    max_batch_seconds: float = 60.0  # padded audio seconds per micro-batch
    max_batch_samples: int = 32
    # Pad a batch's length up to a multiple of this many seconds (0 = to its longest sample). With every batch
    # length different, oneDNN (CPU) builds new kernels for nearly every batch (1.6x slower forward+backward for
    # the demo's model); rounded lengths repeat, for ~half a multiple of extra padding per batch row.
    pad_to_multiple_seconds: float = 0.0
    min_duration: float = 0.0  # seconds; shorter samples are left out of the plan
    max_duration: float = 30.0
    bucket_shards: int = 8  # shards per shuffle/bucketing window (reads stay sequential); each DataLoader worker
    # holds its share of a window's FLAC bytes: about bucket_shards x shard size / (world_size x num_workers)
    megabatch_factor: int = 50  # samples sorted by duration together = megabatch_factor x max_batch_samples
    longest_first: bool = False  # put the longest batch first so that an OOM shows at step 1
    num_workers: int = 2
    tolerate_missing_shards: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Several weighted training sources instead of train_shards: [{name, shards, weight, index}, ...]
    train: list[SourceConfig] = field(default_factory=list)
    # Named eval sets instead of (or besides) eval_shards: {name: shard folder}; scores per set
    eval: dict[str, str] = field(default_factory=dict)

    def train_sources(self) -> list[SourceConfig]:
        """data.train, or data.train_shards as one source named `train`."""
        if self.train:
            return list(self.train)
        return [SourceConfig("train", self.train_shards, 1.0, self.train_index)] if self.train_shards else []

    def eval_sets(self) -> dict[str, tuple[str, str]]:
        """name -> (shards, index): data.eval, plus data.eval_shards as the set `eval`."""
        sets = {name: (shards, "") for name, shards in self.eval.items()}
        if self.eval_shards:
            sets = {"eval": (self.eval_shards, self.eval_index), **sets}
        return sets

    def check(self, at: str) -> None:
        _require(not (self.train and self.train_shards), f"{at}.train",
                 f"either {at}.train (sources) or {at}.train_shards, not both", [s.name for s in self.train])
        names = [s.name for s in self.train]
        for i, src in enumerate(self.train):
            src.check(f"{at}.train[{i}]")
            _require(names.count(src.name) == 1, f"{at}.train[{i}].name", "a name no other source has", src.name)
        for name, shards in self.eval.items():
            _require(isinstance(name, str) and bool(name) and all(c.isalnum() or c in "-_" for c in name),
                     f"{at}.eval", "set names of letters, digits, '-' and '_'", name)
            _require(isinstance(shards, str) and bool(shards), f"{at}.eval.{name}", "a shard folder", shards)
        _require(not (self.eval_shards and "eval" in self.eval), f"{at}.eval.eval",
                 f"another name ({at}.eval_shards is already the set 'eval')", self.eval.get("eval"))
        _require(self.sample_rate > 0, f"{at}.sample_rate", "a positive rate in Hz", self.sample_rate)
        _require(self.max_batch_seconds > 0, f"{at}.max_batch_seconds", "a positive number of seconds", self.max_batch_seconds)
        _require(self.pad_to_multiple_seconds >= 0, f"{at}.pad_to_multiple_seconds", "a number of seconds >= 0",
                 self.pad_to_multiple_seconds)
        _require(self.max_batch_samples >= 1, f"{at}.max_batch_samples", "an integer >= 1", self.max_batch_samples)
        _require(0 <= self.min_duration < self.max_duration, f"{at}.min_duration", "0 <= min_duration < max_duration", self.min_duration)
        _require(self.max_duration <= self.max_batch_seconds, f"{at}.max_duration",
                 f"at most data.max_batch_seconds ({self.max_batch_seconds}) so every sample fits a batch", self.max_duration)
        if self.augment.enabled and self.augment.speed_factors:  # the plan budgets perturbed durations
            slowest = min(self.augment.speed_factors)
            _require(self.max_duration / slowest <= self.max_batch_seconds, f"{at}.max_duration",
                     f"at most data.max_batch_seconds x the slowest speed factor ({self.max_batch_seconds * slowest:g}) "
                     "so that every slowed-down sample fits a batch", self.max_duration)
        _require(self.bucket_shards >= 1, f"{at}.bucket_shards", "an integer >= 1", self.bucket_shards)
        _require(self.megabatch_factor >= 1, f"{at}.megabatch_factor", "an integer >= 1", self.megabatch_factor)
        _require(self.num_workers >= 0, f"{at}.num_workers", "an integer >= 0", self.num_workers)
        self.augment.check(f"{at}.augment")


@dataclass
class ModelConfig:
    """A pretrained checkpoint (hub id or folder) or a model built from these sizes."""

    pretrained: str = ""  # e.g. facebook/wav2vec2-base or a local folder; empty = build from config
    keep_pretrained_head: bool = False  # reuse the checkpoint's CTC head (same vocabulary!) instead of a fresh one
    conv_dim: list[int] = field(default_factory=lambda: [64] * 7)
    conv_kernel: list[int] = field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])
    conv_stride: list[int] = field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    num_conv_pos_embeddings: int = 64
    num_conv_pos_embedding_groups: int = 16
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.0
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    final_dropout: float = 0.0
    layerdrop: float = 0.0
    mask_time_prob: float = 0.05  # SpecAugment
    mask_time_length: int = 10
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    gradient_checkpointing: bool = False
    # Layout of a model built from config (ignored for pretrained ones). wav2vec2-base uses group/False;
    # layer norm after every convolution and pre-LN Transformer blocks (large-lv60's layout) train from
    # scratch far more stably at high learning rates.
    feat_extract_norm: Literal["group", "layer"] = "group"
    do_stable_layer_norm: bool = False
    adapter_attn_dim: int = 0  # MMS-style attention adapters of this width after every layer (0 = none; MMS uses 16)
    # Family of a model built from these sizes (asr_dist/families.py, docs/models.md): wav2vec2, hubert, wavlm,
    # data2vec-audio, wav2vec2-conformer, wav2vec2-bert. A pretrained checkpoint brings its own family.
    type: str = "wav2vec2"
    # A strided convolutional adapter between encoder and CTC head (wav2vec2, w2v-BERT; new weights on a
    # pretrained model): halves the frame rate per adapter layer. The w2v-BERT 2.0 fine-tuning recipe uses one.
    add_adapter: bool = False

    def check(self, at: str) -> None:
        from asr_dist.families import FAMILIES

        _require(self.type in FAMILIES, f"{at}.type", f"one of {', '.join(FAMILIES)}", self.type)
        _require(len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride), f"{at}.conv_dim",
                 "conv_dim, conv_kernel and conv_stride of equal length", (self.conv_dim, self.conv_kernel, self.conv_stride))
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            _require(getattr(self, name) >= 1, f"{at}.{name}", "an integer >= 1", getattr(self, name))
        _require(self.adapter_attn_dim >= 0, f"{at}.adapter_attn_dim", "an integer >= 0 (0 = no adapters)",
                 self.adapter_attn_dim)
        _require(self.hidden_size % self.num_attention_heads == 0, f"{at}.num_attention_heads",
                 f"a divisor of model.hidden_size ({self.hidden_size})", self.num_attention_heads)
        for name in ("hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout",
                     "final_dropout", "layerdrop", "mask_time_prob", "mask_feature_prob"):
            _require(0.0 <= getattr(self, name) < 1.0, f"{at}.{name}", "a probability in [0, 1)", getattr(self, name))


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adam"] = "adamw"
    lr: float = 1e-3  # CTC head (and the encoder, unless encoder_lr is set)
    encoder_lr: float | None = None
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping

    def check(self, at: str) -> None:
        _require(self.lr > 0, f"{at}.lr", "a positive learning rate", self.lr)
        _require(self.encoder_lr is None or self.encoder_lr > 0, f"{at}.encoder_lr", "a positive learning rate or null", self.encoder_lr)
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{at}.betas", "two numbers in [0, 1)", self.betas)
        _require(self.eps > 0, f"{at}.eps", "a positive number", self.eps)
        _require(self.weight_decay >= 0, f"{at}.weight_decay", "a number >= 0", self.weight_decay)
        _require(self.max_grad_norm >= 0, f"{at}.max_grad_norm", "a number >= 0 (0 = off)", self.max_grad_norm)


@dataclass
class ScheduleConfig:
    """Learning-rate multiplier as a pure function of the optimizer step (see lr_schedule.py).

    Every schedule has the same three phases: a linear warmup from `init_lr_scale` to 1 over
    `warmup_steps`, a hold at 1 for `hold_steps`, then the decay that `name` picks:
    constant (none), linear or cosine (1 -> final_lr_scale over decay_steps), tri_stage (fairseq's
    exponential 1 -> final_lr_scale over decay_steps), exponential (gamma^t, t in steps after
    warmup + hold, or in epochs with decay_per=epoch). The multiplier scales each optimizer param
    group's own base lr, so the CTC head and the encoder keep their ratio.
    """

    name: Literal["constant", "linear", "cosine", "exponential", "tri_stage"] = "tri_stage"
    warmup_steps: int = 0
    hold_steps: int = 0
    decay_steps: int = 0  # linear/cosine/tri_stage; 0 = decay until train.max_steps
    phase_ratio: list[float] = field(default_factory=list)  # fairseq's [warmup, hold, decay] fractions of max_steps
    init_lr_scale: float = 0.01  # warmup starts at lr * init_lr_scale (fairseq's default)
    final_lr_scale: float = 0.05  # linear/cosine/tri_stage end value (wav2vec2 fine-tuning recipes use 0.05)
    gamma: float = 0.999  # exponential: lr_t = lr_0 * gamma^t
    decay_per: Literal["step", "epoch"] = "step"  # exponential only: t counts steps or epochs

    def check(self, at: str) -> None:
        for name in ("warmup_steps", "hold_steps", "decay_steps"):
            _require(getattr(self, name) >= 0, f"{at}.{name}", "an integer >= 0", getattr(self, name))
        if self.phase_ratio:
            _require(len(self.phase_ratio) == 3 and all(r >= 0 for r in self.phase_ratio)
                     and abs(sum(self.phase_ratio) - 1.0) < 1e-6, f"{at}.phase_ratio",
                     "three fractions [warmup, hold, decay] >= 0 adding up to 1 (or [] to give steps)", self.phase_ratio)
            _require(self.warmup_steps == self.hold_steps == self.decay_steps == 0, f"{at}.phase_ratio",
                     f"either phase_ratio or {at}.warmup_steps/hold_steps/decay_steps, not both", self.phase_ratio)
        _require(0 <= self.init_lr_scale <= 1, f"{at}.init_lr_scale", "a scale in [0, 1]", self.init_lr_scale)
        if self.name == "tri_stage":
            _require(0 < self.final_lr_scale <= 1, f"{at}.final_lr_scale",
                     "a scale in (0, 1] (tri_stage decays exponentially, log(0) is undefined)", self.final_lr_scale)
        else:
            _require(0 <= self.final_lr_scale <= 1, f"{at}.final_lr_scale", "a scale in [0, 1]", self.final_lr_scale)
        _require(0 < self.gamma <= 1, f"{at}.gamma", "a decay factor in (0, 1]", self.gamma)
        _require(self.decay_per == "step" or self.name == "exponential", f"{at}.decay_per",
                 f"'step' unless {at}.name is exponential (only exponential decays per epoch)", self.decay_per)

    def phase_steps(self, total_steps: int) -> tuple[int, int, int]:
        """(warmup, hold, decay) in optimizer steps for a run of `total_steps` updates.

        phase_ratio follows fairseq (int(total * ratio) each); decay_steps = 0 means "until the end".
        """
        if self.phase_ratio:
            warmup, hold, decay = (int(total_steps * r) for r in self.phase_ratio)
            return warmup, hold, decay
        decay = self.decay_steps or max(total_steps - self.warmup_steps - self.hold_steps, 0)
        return self.warmup_steps, self.hold_steps, decay

    def check_steps(self, at: str, total_steps: int, total_key: str) -> None:
        """Fail before training when the phases leave nothing to decay over (a silent constant lr)."""
        if self.name in ("linear", "cosine", "tri_stage"):
            warmup, hold, decay = self.phase_steps(total_steps)
            _require(decay > 0, f"{at}.decay_steps",
                     f"> 0 steps to decay over: warmup ({warmup}) + hold ({hold}) leave none of "
                     f"{total_key} ({total_steps}); lower them or set decay_steps", self.decay_steps)


@dataclass
class FreezingConfig:
    feature_encoder: bool = True  # the CNN over raw audio
    lower_layers: int = 0  # lowest N transformer layers
    encoder_updates: int = 0  # fairseq's freeze_finetune_updates: only the CTC head learns for K updates
    adapters_only: bool = False  # train only the MMS adapter layers and the CTC head; export writes adapter.<lang>.safetensors

    def check(self, at: str) -> None:
        _require(self.lower_layers >= 0, f"{at}.lower_layers", "an integer >= 0", self.lower_layers)
        _require(self.encoder_updates >= 0, f"{at}.encoder_updates", "an integer >= 0", self.encoder_updates)


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000  # optimizer updates
    max_epochs: int = 1000
    grad_accum: int = 1
    # auto: bf16 autocast where the device runs bf16 natively, fp16 + loss scaling on GPUs without bf16, fp32
    # otherwise (asr_dist/training/precision.py); no = fp32; bf16 = autocast, fp32 master weights;
    # fp16 = autocast + dynamic loss scaling; bf16_weights = DeepSpeed's bf16 mode (bf16 weights)
    mixed_precision: Literal["auto", "no", "bf16", "fp16", "bf16_weights"] = "auto"
    log_every: int = 10
    resume: str = "auto"  # auto | none | PATH to a checkpoint folder
    # a fresh start (resume none, or auto with no checkpoint) in a run folder that holds a run: refuse, or move
    # the old run aside to <run_dir>.old-<time> (never truncate it)
    if_run_exists: Literal["refuse", "move_aside"] = "refuse"
    # DeepSpeed JSON for launches without `accelerate launch --config_file` (Slurm, plain torchrun);
    # empty = whatever the accelerate launcher says (DDP when it says nothing)
    deepspeed_config: str = ""
    # testing aid: rank 0's first micro-batch of these updates gets inf audio (proves non-finite skipping)
    debug_nan_steps: list[int] = field(default_factory=list)

    def check(self, at: str) -> None:
        _require(self.max_steps >= 1, f"{at}.max_steps", "an integer >= 1", self.max_steps)
        _require(self.max_epochs >= 1, f"{at}.max_epochs", "an integer >= 1", self.max_epochs)
        _require(self.grad_accum >= 1, f"{at}.grad_accum", "an integer >= 1", self.grad_accum)
        _require(self.log_every >= 1, f"{at}.log_every", "an integer >= 1", self.log_every)
        _require(bool(self.run_dir), f"{at}.run_dir", "a folder path", self.run_dir)
        if self.deepspeed_config:
            from asr_dist.repo_paths import repo_file  # relative: from the current folder, else the repository

            _require(repo_file(self.deepspeed_config).is_file(), f"{at}.deepspeed_config",
                     "an existing DeepSpeed JSON file (see configs/deepspeed/)", self.deepspeed_config)
        for s in self.debug_nan_steps:
            _require(s >= 0, f"{at}.debug_nan_steps", "update numbers >= 0", s)


@dataclass
class CheckpointConfig:
    """Periodic sharded checkpoints in <run_dir>/checkpoints (asr_dist/checkpoint.py, docs/checkpoints.md)."""

    every_steps: int = 500  # 0 = off
    every_minutes: float = 0.0  # wall time since the last save, rank 0's clock; 0 = off
    keep_last: int = 2  # newest complete checkpoints kept (the one `latest` names always is)
    keep_best: bool = False  # also keep the checkpoint with the lowest primary eval metric (eval.primary_metric: WER, CER for zh/ja)
    best_eval_set: str = ""  # which data.eval set's WER keep_best follows; empty = the first set
    on_save_error: Literal["continue", "stop"] = "continue"  # after a failed save (previous one kept): train on, or raise on every rank

    def check(self, at: str) -> None:
        _require(self.every_steps >= 0, f"{at}.every_steps", "an integer >= 0 (0 = off)", self.every_steps)
        _require(self.every_minutes >= 0, f"{at}.every_minutes", "a number >= 0 (0 = off)", self.every_minutes)
        _require(self.keep_last >= 1, f"{at}.keep_last", "an integer >= 1", self.keep_last)


@dataclass
class EvalConfig:
    every_steps: int = 0  # 0 = only at the end
    num_examples: int = 5  # reference/hypothesis pairs printed
    subset_field: str = "speaker"  # per-subset WER breakdown by this metadata field
    primary_metric: str = "auto"  # what eval.json names and checkpoint.keep_best ranks by: auto (the language's: wer, or cer for zh/ja), wer, cer, mer
    lm: str = ""  # LM folder (asr-dist lm build): the final eval also beam-searches with it (eval.json "lm")

    def check(self, at: str) -> None:
        _require(self.every_steps >= 0, f"{at}.every_steps", "an integer >= 0 (0 = only at the end)", self.every_steps)
        _require(self.num_examples >= 0, f"{at}.num_examples", "an integer >= 0", self.num_examples)
        _require(self.primary_metric in ("auto", "wer", "cer", "mer"), f"{at}.primary_metric",
                 "one of auto, wer, cer, mer", self.primary_metric)


@dataclass
class SlurmConfig:
    """Resources and requeue policy for `asr-dist submit` (submitit's AutoExecutor; see docs/slurm.md)."""

    job_name: str = "asr_dist"
    folder: str = ""  # submitit's pickles and logs; empty = <run_dir>/slurm
    nodes: int = 1
    tasks_per_node: int = 1  # one task per GPU (per process on CPU); must equal gpus_per_node when that is > 0
    gpus_per_node: int = 0
    cpus_per_task: int = 1  # also each task's OMP_NUM_THREADS
    mem_gb: float = 0  # per node; 0 = Slurm's default
    timeout_min: int = 60  # Slurm counts whole minutes
    partition: str = ""  # empty = the cluster's default partition
    account: str = ""
    qos: str = ""
    constraint: str = ""
    exclusive: bool = False
    signal_delay_s: int = 90  # USR2 this long before the time limit: the trainer's time to stop and save
    max_requeues: int = 3  # graceful stops (time limit, preemption, USR2) that requeue the job; then it ends
    master_port: int = 0  # torch.distributed port on the first node; 0 = derived from the job id
    setup: list[str] = field(default_factory=list)  # shell lines before srun: `module load ...`, `export NCCL_...`
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # more #SBATCH options: {"mail-type": "END"}

    def check(self, at: str) -> None:
        _require(bool(self.job_name.strip()) and not any(c.isspace() for c in self.job_name), f"{at}.job_name",
                 "a non-empty name without spaces", self.job_name)
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min"):
            _require(getattr(self, name) >= 1, f"{at}.{name}", "an integer >= 1", getattr(self, name))
        for name in ("gpus_per_node", "signal_delay_s", "max_requeues"):
            _require(getattr(self, name) >= 0, f"{at}.{name}", "an integer >= 0", getattr(self, name))
        _require(self.mem_gb >= 0, f"{at}.mem_gb", "a number >= 0", self.mem_gb)
        _require(self.gpus_per_node == 0 or self.tasks_per_node == self.gpus_per_node, f"{at}.tasks_per_node",
                 f"one task per GPU: equal to slurm.gpus_per_node ({self.gpus_per_node})", self.tasks_per_node)
        _require(self.signal_delay_s < self.timeout_min * 60, f"{at}.signal_delay_s",
                 f"less than the time limit (slurm.timeout_min = {self.timeout_min} min)", self.signal_delay_s)
        _require(self.master_port == 0 or 1024 <= self.master_port <= 65535, f"{at}.master_port",
                 "0 (derived from the job id) or a port in 1024..65535", self.master_port)
        for key in self.additional_parameters:
            _require(isinstance(key, str) and bool(key) and not key.startswith("-"), f"{at}.additional_parameters",
                     "sbatch option names without leading dashes, e.g. {mail-type: END}", key)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    freezing: FreezingConfig = field(default_factory=FreezingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def check(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).check(f.name)
        self.schedule.check_steps("schedule", self.train.max_steps, "train.max_steps")
        if self.checkpoint.best_eval_set:
            _require(self.checkpoint.best_eval_set in self.data.eval_sets(), "checkpoint.best_eval_set",
                     f"one of the eval sets ({', '.join(self.data.eval_sets()) or 'none configured'})",
                     self.checkpoint.best_eval_set)
        if not self.model.pretrained:
            _require(self.freezing.lower_layers <= self.model.num_hidden_layers, "freezing.lower_layers",
                     f"at most model.num_hidden_layers ({self.model.num_hidden_layers})", self.freezing.lower_layers)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config (every key, defaults included) as YAML."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML file (optional), apply `section.key=value` overrides, build and check the Config."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else "")
    cfg = _build(Config, raw, "")
    cfg.check()
    return cfg


def config_from_dict(raw: dict) -> Config:
    """Build and check a Config from a plain dict (e.g. a saved resolved config)."""
    cfg = _build(Config, raw, "")
    cfg.check()
    return cfg


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def _build(cls: type, raw: Any, at: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{at or 'config'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"{at}.{unknown[0]}" if at else unknown[0]
        raise ConfigError(f"unknown key {where}; allowed keys{' in ' + at if at else ''}: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in raw:
            key = f"{at}.{name}" if at else name
            kwargs[name] = _coerce(hints[name], raw[name], key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if isinstance(value, bool) and ("yes" if value else "no") in args:  # YAML 1.1 reads `no` as false
            value = "yes" if value else "no"
        if value not in args:
            raise ConfigError(f"{key} = {value!r} is not allowed; choose one of: {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {value!r} must be a list")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} = {value!r} must be a mapping")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r} must be a string")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _require(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed; expected {allowed}")
