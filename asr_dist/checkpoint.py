"""Training checkpoints that survive kill -9, full disks, preemption and a different number of ranks.

Accelerate's `save_state`/`load_state` already write and read everything that is sharded: model, optimizer
and scheduler (one ZeRO shard per rank under DeepSpeed), per-rank RNG. This module adds what they lack:

* **Atomic publication.** All ranks write into `checkpoints/.tmp-step-N`; only when every rank reports
  success (one all-reduce) does the main process write the completion marker, rename the folder to
  `step-N` and then replace the `latest` pointer (write a temp file + `os.replace`). A kill at any moment
  leaves either the previous checkpoint or the new one, never a half-written folder that looks complete.
* **Agreement on failure.** A failing write (no space, permission) on any rank is all-reduced, so no rank
  publishes, continues or stops alone. The previous checkpoint and `latest` stay untouched.
* **Retention.** The last `keep_last` checkpoints (and, with `keep_best`, the one with the lowest eval WER).
* **Resume checks.** The resolved config, the model's `config.json` and the vocabulary are stored in every
  checkpoint; a run whose model shape or vocabulary changed refuses to resume with a message that says what
  changed.
* **A different world size.** ZeRO shards cannot be loaded by a different number of ranks; the manager
  converts the checkpoint once to DeepSpeed's universal format (`ds_to_universal`) and loads that.
* **Extras.** Everything else with state (data position, trainer counters) is passed as `extra_state`
  objects with `state_dict()`/`load_state_dict()` and saved per rank.

Layout:
    run_dir/checkpoints/
      step-200/                 a published checkpoint
        pytorch_model/          DeepSpeed: ZeRO shards (one optimizer file per rank) + model states
        model.safetensors, optimizer.bin, scheduler.bin    (DDP / single process, from Accelerate)
        random_states_R.pkl     per-rank RNG (Accelerate)
        extra_state/rank-R.pt   data position, trainer counters... of rank R
        hf_config/config.json   the model's transformers config (for export and resume checks)
        processor/              the Wav2Vec2Processor, when the manager was given one (export needs it)
        checkpoint.json         step, world size, backend, metrics, the resolved run config
        COMPLETE                written last, before the rename
        universal/              (created on demand) the same state in DeepSpeed's universal format
      latest                    text: "step-200", replaced atomically after the rename
      .tmp-step-300/            a save in progress (or an interrupted one, removed by the next save)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from asr_dist.config import CheckpointConfig

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest"
COMPLETE = "COMPLETE"
META = "checkpoint.json"
HF_CONFIG_DIR = "hf_config"
PROCESSOR_DIR = "processor"
EXTRA_DIR = "extra_state"
UNIVERSAL_DIR = "universal"
DS_TAG = "pytorch_model"  # the tag Accelerate passes to DeepSpeed's save_checkpoint/load_checkpoint
FORMAT_VERSION = 1

# transformers config keys that change parameter shapes or the meaning of the output units.
SHAPE_KEYS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "do_stable_layer_norm",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "add_adapter", "num_adapter_layers",
    "output_hidden_size", "pad_token_id",
)
# Run-config keys whose change is expected on resume; any other change is logged as a warning.
RESUME_FREE_KEYS = ("train.resume", "train.max_steps", "train.max_epochs", "train.run_dir", "checkpoint", "slurm",
                    "eval", "data.num_workers")

_STEP_DIR = re.compile(r"^step-(\d+)$")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: missing, incomplete, or incompatible with this run."""


class CheckpointSaveError(RuntimeError):
    """A save failed on at least one rank and `checkpoint.on_save_error` is "stop" (raised on every rank)."""


def checkpoint_step(path: Path) -> int | None:
    m = _STEP_DIR.match(Path(path).name)
    return int(m.group(1)) if m else None


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE).is_file()


def read_meta(path: str | Path) -> dict:
    """checkpoint.json of a complete checkpoint; a clear error for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a folder")
    if not is_complete(path):
        raise CheckpointError(f"checkpoint {path} has no {COMPLETE} marker: the save that wrote it was interrupted "
                              "or it is not a checkpoint folder; use a published step-N folder")
    try:
        return json.loads((path / META).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: cannot read {META}: {e}") from None


def find_checkpoint(where: str | Path) -> Path:
    """A checkpoint folder from a checkpoint, a `checkpoints` folder or a run folder (follows `latest`)."""
    where = Path(where)
    if not where.is_dir():
        raise CheckpointError(f"checkpoint {where} does not exist or is not a folder")
    if is_complete(where):
        return where
    if checkpoint_step(where) is not None or where.name.startswith(".tmp-") or (where / META).exists():
        read_meta(where)  # raises: an incomplete checkpoint, say so
    for root in (where, where / CHECKPOINTS_DIR):
        found = _latest_in(root)
        if found is not None:
            return found
    raise CheckpointError(f"{where} is neither a complete checkpoint nor a run/checkpoints folder holding one")


def latest_step(run_dir: str | Path) -> int | None:
    """Step of the run's newest complete checkpoint (None before the first save)."""
    try:
        return checkpoint_step(find_checkpoint(run_dir))
    except CheckpointError:
        return None


def _latest_in(root: Path) -> Path | None:
    """The checkpoint `latest` names when it is complete, else the newest complete step-N folder."""
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if is_complete(target):
            return target
        log.warning("%s names %s, which is not a complete checkpoint; using the newest complete one", pointer, target)
    complete = _complete_checkpoints(root)
    return complete[-1] if complete else None


def _complete_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if checkpoint_step(p) is not None and is_complete(p)]
    return sorted(found, key=checkpoint_step)


# ----------------------------------------------------------------------------- the manager


class CheckpointManager:
    """Saves, publishes, keeps, finds and loads the run's checkpoints. Every rank builds one and calls
    `save`/`load` at the same point of the program (they contain collectives).

    Args:
        accelerator: the run's Accelerator, after `prepare` (DDP, DeepSpeed ZeRO-1/2/3 or one process).
        run_dir: the run folder; checkpoints go to run_dir/checkpoints.
        cfg: the `checkpoint` config section.
        config: the resolved run config (Config or dict) stored in every checkpoint; read from
            run_dir/config.yaml when not given.
        model: the prepared model (default: the first model Accelerate prepared); its transformers config is
            stored for export and for the resume check.
        processor: the Wav2Vec2Processor; stored in every checkpoint so that `asr-dist export` needs nothing
            else, and its vocabulary is compared on resume.
    """

    def __init__(self, accelerator, run_dir: str | Path, cfg: CheckpointConfig, *, config: Any = None,
                 model: Any = None, processor: Any = None, precision: dict | None = None):
        self.accelerator = accelerator
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / CHECKPOINTS_DIR
        self.cfg = cfg
        self.config = _config_dict(config, self.run_dir)
        # Unwrapped once here: the first unwrap_model call imports torch._dynamo (about 0.5 s), which would
        # otherwise be charged to the first save or load.
        if model is None and accelerator._models:
            model = accelerator._models[0]
        self.model = None if model is None else accelerator.unwrap_model(model)
        self.processor = processor
        self.precision = precision  # training/precision.py's choice, recorded in checkpoint.json
        self.last_save_error: BaseException | None = None
        self._last_save_time = time.monotonic()
        self._backend_saved = False  # set by the Accelerate pre-hook: DeepSpeed's part of save_state finished
        accelerator.register_save_state_pre_hook(self._after_model_save)

    # ------------------------------------------------------------------ when to save

    def due(self, step: int) -> bool:
        """True (on every rank) when a save is due at this optimizer step: every_steps, or every_minutes of
        wall time since the last save — the main process's clock decides, so that all ranks agree."""
        if self.cfg.every_steps and step % self.cfg.every_steps == 0:
            return True
        if not self.cfg.every_minutes:
            return False
        elapsed = time.monotonic() - self._last_save_time >= 60.0 * self.cfg.every_minutes
        return bool(self._share_flag(elapsed))

    # ------------------------------------------------------------------ saving

    def save(self, step: int, extra_state: dict[str, Stateful] | None = None,
             metrics: dict[str, float] | None = None) -> Path | None:
        """Write, agree, publish. Returns the published folder, or None when the save failed and
        `on_save_error` is "continue" (the error is logged and kept in `last_save_error`).
        Raises CheckpointSaveError on every rank when it failed and `on_save_error` is "stop"."""
        acc = self.accelerator
        final = self.root / f"step-{step}"
        tmp = self.root / f".tmp-step-{step}"
        started = time.monotonic()

        # 1. The main process makes an empty temp folder (removing what an interrupted save left) before
        #    anyone writes into it.
        error = None
        if acc.is_main_process:
            error = _capture(lambda: _fresh_dir(tmp))
        error = self._agree(error, "preparing " + str(tmp))
        if error is not None:
            return self._failed(error, tmp)

        # 2. Every rank writes its part.
        self._backend_saved = False
        error = _capture(lambda: self._write(tmp, step, extra_state or {}, metrics))
        if error is not None and self._is_deepspeed() and not self._backend_saved:
            # DeepSpeed's save_checkpoint ends with a barrier that the other ranks are waiting in; meet them
            # there, or this rank's next collective would pair with it and everyone would hang.
            dist.barrier()
        error = self._agree(error, "writing " + str(tmp))
        if error is not None:
            return self._failed(error, tmp)

        # 3. The main process publishes: marker, rename, then `latest`.
        if acc.is_main_process:
            error = _capture(lambda: self._publish(tmp, final))
        error = self._agree(error, "publishing " + str(final))
        if error is not None:
            return self._failed(error, tmp)

        # 4. Retention: best effort, a failure to delete an old checkpoint is not a failed save.
        if acc.is_main_process:
            try:
                self._retain()
            except OSError as e:
                log.warning("could not remove old checkpoints in %s: %s", self.root, e)
        acc.wait_for_everyone()
        self._last_save_time = time.monotonic()
        self.last_save_error = None
        if acc.is_main_process:
            log.info("saved checkpoint %s in %.1f s", final, time.monotonic() - started)
        return final

    def _after_model_save(self, models, weights, output_dir) -> None:
        self._backend_saved = True

    def _write(self, tmp: Path, step: int, extra_state: dict[str, Stateful], metrics: dict | None) -> None:
        acc = self.accelerator
        acc.save_state(str(tmp))
        (tmp / EXTRA_DIR).mkdir(exist_ok=True)
        states = {name: obj.state_dict() for name, obj in extra_state.items()}
        torch.save(states, tmp / EXTRA_DIR / f"rank-{acc.process_index}.pt")
        if not acc.is_main_process:
            return
        model = self.model
        vocab = None
        if model is not None and hasattr(model, "config"):
            model.config.save_pretrained(tmp / HF_CONFIG_DIR)
        if self.processor is not None:
            self.processor.save_pretrained(tmp / PROCESSOR_DIR)
            vocab = self.processor.tokenizer.get_vocab()
        meta = {
            "format": FORMAT_VERSION,
            "step": step,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "world_size": acc.num_processes,
            "distributed_type": str(acc.distributed_type).split(".")[-1],
            "zero_stage": self._zero_stage(),
            # what the run computed in, and why (Accelerate's own setting says "no": autocast is ours)
            "mixed_precision": (self.precision or {}).get("mode") or
            (self.config or {}).get("train", {}).get("mixed_precision"),
            "precision": self.precision,
            "metrics": metrics or {},
            "extra_state": sorted(extra_state),
            "vocab": vocab,
            "config": self.config,
        }
        (tmp / META).write_text(json.dumps(meta, indent=1, default=str))

    def _publish(self, tmp: Path, final: Path) -> None:
        _fsync_tree(tmp)  # data first, marker second: a marker must never describe unflushed files
        _write_durably(tmp / COMPLETE, "")
        if final.exists():  # the same step saved again (e.g. a final save right after a periodic one)
            trash = self.root / f".trash-{final.name}"
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(self.root)
        _write_durably(self.root / LATEST, final.name + "\n", atomic=True)

    def _retain(self) -> None:
        complete = _complete_checkpoints(self.root)
        keep = set(complete[-self.cfg.keep_last:])
        latest = _latest_in(self.root)
        if latest is not None:
            keep.add(latest)
        if self.cfg.keep_best:
            scored = [(meta["metrics"]["wer"], checkpoint_step(p), p) for p in complete
                      if "wer" in (meta := json.loads((p / META).read_text())).get("metrics", {})]
            if scored:
                keep.add(min(scored)[2])  # lowest WER; the earlier step on a tie
        for path in complete:
            if path not in keep:
                _remove(path, self.root)
        for leftover in self.root.glob(".trash-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _failed(self, error: BaseException, tmp: Path) -> None:
        self.last_save_error = error
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # frees the space a full disk needs; `latest` was not touched
        self.accelerator.wait_for_everyone()
        message = f"checkpoint save failed, previous checkpoint kept ({_describe(self.root)}): {error}"
        if self.cfg.on_save_error == "stop":
            raise CheckpointSaveError(message) from error
        log.error("%s; training continues (checkpoint.on_save_error=continue)", message)
        return None

    # ------------------------------------------------------------------ finding

    def resolve(self, resume: str) -> Path | None:
        """`train.resume` -> the checkpoint to load: "none" -> None; "auto" -> the newest complete checkpoint
        of this run (the one `latest` names) or None for a fresh run; anything else is a path that must be
        a complete checkpoint (or a run/checkpoints folder holding one)."""
        if resume == "none":
            return None
        if resume == "auto":
            found = _latest_in(self.root)
            leftovers = sorted(p.name for p in self.root.glob(".tmp-step-*")) if self.root.is_dir() else []
            if leftovers and self.accelerator.is_main_process:
                log.warning("interrupted saves in %s (%s) are ignored and will be removed", self.root, ", ".join(leftovers))
            return found
        return find_checkpoint(resume)

    # ------------------------------------------------------------------ loading

    def load(self, path: str | Path, extra_state: dict[str, Stateful] | None = None) -> dict:
        """Restore model, optimizer, scheduler, RNG and the extras from `path`; returns its checkpoint.json.

        Same world size: Accelerate's load_state, bit-exact. A different world size under DeepSpeed: the
        checkpoint is converted once to DeepSpeed's universal format and loaded from there (weights and
        optimizer state exact; see docs/checkpoints.md for what is approximate)."""
        acc = self.accelerator
        path = Path(path)
        meta = read_meta(path)
        self.check_compatible(meta, path)

        saved_ds = meta["distributed_type"] == "DEEPSPEED"
        if saved_ds != self._is_deepspeed():
            raise CheckpointError(
                f"checkpoint {path} was written by a {meta['distributed_type']} run and this run uses "
                f"{str(acc.distributed_type).split('.')[-1]}: optimizer state cannot move between DeepSpeed and "
                f"DDP; export it (`asr-dist export {path} OUT`) and start from OUT with model.pretrained=OUT")
        if saved_ds and meta["zero_stage"] != self._zero_stage():
            raise CheckpointError(
                f"checkpoint {path} was written under ZeRO-{meta['zero_stage']} and this run uses "
                f"ZeRO-{self._zero_stage()}: DeepSpeed cannot load shards across stages (even through its universal "
                f"format); resume with the same stage, or export it (`asr-dist export {path} OUT`) and start from OUT")
        reshard = saved_ds and meta["world_size"] != acc.num_processes
        if reshard:
            source = self._universal(path)
            engine = acc.deepspeed_engine_wrapped.engine
            engine._config.load_universal_checkpoint = True  # read once per load_checkpoint call
            try:
                acc.load_state(str(source))
            finally:
                engine._config.load_universal_checkpoint = False
        else:
            acc.load_state(str(path))

        if meta["world_size"] != acc.num_processes and acc.is_main_process:
            log.warning("resuming a %d-rank checkpoint on %d ranks: ranks >= %d keep their fresh RNG state",
                        meta["world_size"], acc.num_processes, meta["world_size"])
        self._load_extras(path, meta, extra_state or {})
        self._last_save_time = time.monotonic()
        if acc.is_main_process:
            log.info("resumed from %s (step %s, saved by %d ranks)", path, meta["step"], meta["world_size"])
        return meta

    def check_compatible(self, meta: dict, path: Path) -> None:
        """Refuse a checkpoint whose model shape or vocabulary differs from this run's; warn about other
        config changes (they change the trajectory, not the ability to load)."""
        problems = []
        model = self.model
        saved_cfg_file = path / HF_CONFIG_DIR / "config.json"
        if model is not None and hasattr(model, "config") and saved_cfg_file.is_file():
            saved = json.loads(saved_cfg_file.read_text())
            now = model.config.to_dict()
            for key in SHAPE_KEYS:
                if saved.get(key) != now.get(key):
                    problems.append(f"model {key}: checkpoint {saved.get(key)!r}, this run {now.get(key)!r}")
        if self.processor is not None and meta.get("vocab") is not None:
            saved_vocab, vocab = meta["vocab"], self.processor.tokenizer.get_vocab()
            if saved_vocab != vocab:
                only_saved = sorted(set(saved_vocab) - set(vocab))
                only_now = sorted(set(vocab) - set(saved_vocab))
                moved = sorted(k for k in set(saved_vocab) & set(vocab) if saved_vocab[k] != vocab[k])
                problems.append(f"vocabulary: only in checkpoint {only_saved}, only in this run {only_now}, "
                                f"different ids {moved}")
        if problems:
            raise CheckpointError(f"cannot resume from {path}: the run changed in ways that break resume:\n  - "
                                  + "\n  - ".join(problems)
                                  + "\nstart a fresh run (train.resume=none or a new train.run_dir) or restore the config")
        if self.config and meta.get("config") and self.accelerator.is_main_process:
            changed = [k for k in _diff_keys(meta["config"], self.config) if not k.startswith(RESUME_FREE_KEYS)]
            if changed:
                log.warning("resuming %s with changed settings (the trajectory will differ): %s", path, ", ".join(changed))

    def _universal(self, path: Path) -> Path:
        """The checkpoint in DeepSpeed's universal format (built once, next to the shards)."""
        acc = self.accelerator
        target = path / UNIVERSAL_DIR
        error = None
        if acc.is_main_process and not is_complete(target):
            error = _capture(lambda: _convert_to_universal(path, target))
        error = self._agree(error, f"converting {path} to DeepSpeed's universal format")
        if error is not None:
            raise CheckpointError(f"cannot load {path} on {acc.num_processes} ranks: {error}") from error
        return target

    def _load_extras(self, path: Path, meta: dict, extra_state: dict[str, Stateful]) -> None:
        rank = self.accelerator.process_index
        same_world = meta["world_size"] == self.accelerator.num_processes
        # Same world: each rank its own state. Otherwise rank 0's: extras describe the global position
        # (epoch, batches consumed per rank, plan world size), and the loader re-plans for the new world.
        file = path / EXTRA_DIR / f"rank-{rank if same_world else 0}.pt"
        states = torch.load(file, map_location="cpu", weights_only=False) if file.is_file() else {}
        missing = sorted(set(extra_state) - set(states))
        if missing:
            raise CheckpointError(f"checkpoint {path} has no saved state for {missing} (has {sorted(states)})")
        for name, obj in extra_state.items():
            obj.load_state_dict(states[name])

    # ------------------------------------------------------------------ helpers

    def _agree(self, error: BaseException | None, doing: str) -> BaseException | None:
        """All-reduce 'did anything fail' so that every rank takes the same branch."""
        failed = self._share_flag(error is not None, op="max")
        if failed and error is None:
            error = RuntimeError(f"another rank failed while {doing}")
        return error

    def _share_flag(self, value: bool, op: str = "main") -> int:
        """Collective: rank 0's value (op="main", a broadcast) or the maximum over ranks (op="max", an all-reduce)."""
        acc = self.accelerator
        if acc.num_processes == 1 or not dist.is_initialized():
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=acc.device)
        if op == "main":
            dist.broadcast(t, src=0)
        else:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def _is_deepspeed(self) -> bool:
        return self._zero_stage() is not None

    def _zero_stage(self) -> int | None:
        from asr_dist.training.backend import zero_stage_of

        return zero_stage_of(self.accelerator)



# ----------------------------------------------------------------------------- file helpers


def _capture(fn) -> BaseException | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every failure must reach the agreement step
        log.error("%s: %s", type(e).__name__, e)
        return e
    return None


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _remove(path: Path, root: Path) -> None:
    """Rename first (atomic), delete after: a half-deleted folder is never taken for a checkpoint."""
    trash = root / f".trash-{path.name}"
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _write_durably(path: Path, text: str, atomic: bool = False) -> None:
    target = path.with_name(f".{path.name}.tmp-{os.getpid()}") if atomic else path
    with open(target, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if atomic:
        os.replace(target, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _describe(root: Path) -> str:
    latest = _latest_in(root) if root.is_dir() else None
    return f"latest is {latest}" if latest is not None else "there is no earlier checkpoint"


def _convert_to_universal(path: Path, target: Path) -> None:
    """DeepSpeed's ds_to_universal on the ZeRO shards, plus a copy of Accelerate's other files (RNG,
    schedulers) so that `accelerator.load_state(target)` finds everything where it looks."""
    tmp = target.with_name(f".tmp-{target.name}")
    _fresh_dir(tmp)
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(path / DS_TAG),
           "--output_folder", str(tmp / DS_TAG), "--inject_missing_state",
           "--num_extract_workers", "1", "--num_merge_workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckpointError(f"ds_to_universal failed on {path}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    for item in path.iterdir():
        if item.is_file() and item.name not in (COMPLETE, "latest"):
            shutil.copy2(item, tmp / item.name)
    _write_durably(tmp / COMPLETE, "")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _config_dict(config: Any, run_dir: Path) -> dict:
    if config is None:
        file = run_dir / "config.yaml"
        if not file.is_file():
            return {}
        import yaml

        return yaml.safe_load(file.read_text()) or {}
    if isinstance(config, dict):
        return config
    return config.to_dict()


def _diff_keys(a: Any, b: Any, at: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(key), b.get(key), f"{at}.{key}" if at else key)
        return out
    return [] if a == b else [at]
