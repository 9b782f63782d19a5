"""Turn training state into a `save_pretrained` folder that `transformers.pipeline("automatic-speech-recognition")`
loads: weights (fp32 safetensors), config.json and the processor (tokenizer + feature extractor).

Two ways in:
* `export_pretrained(accelerator, model, processor, out_dir)` at the end of training, from the live model.
  Every rank calls it: under ZeRO-3 the weights are gathered with a collective
  (`stage3_gather_16bit_weights_on_model_save: true` is required, Accelerate says so otherwise).
* `asr-dist export CHECKPOINT OUT`, offline on one process, from any checkpoint the CheckpointManager wrote:
  DDP / single process (model.safetensors) or ZeRO-1/2/3 shards of any number of ranks, consolidated to the
  fp32 master weights by DeepSpeed's zero_to_fp32. The checkpoint carries the model config and the processor.

Both paths build a fresh fp32 model of the same class and load the consolidated state strictly, so a missing
or unexpected tensor is an error instead of a silently random layer.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path

import torch

from asr_dist.checkpoint import (DS_TAG, HF_CONFIG_DIR, PROCESSOR_DIR, CheckpointError, find_checkpoint,
                                 read_meta)


class ExportError(RuntimeError):
    """The checkpoint cannot be exported (missing model config or processor, mismatched weights)."""


def export_pretrained(accelerator, model, processor, out_dir: str | Path) -> Path:
    """Write the live model + processor as a save_pretrained folder (main process writes; all ranks call).

    Under DeepSpeed with bf16 the live weights are bf16 copies; they are written as fp32. For the fp32 master
    weights export a checkpoint instead (`asr-dist export`)."""
    state = accelerator.get_state_dict(model)  # collective under ZeRO-3: every rank must be here
    out = Path(out_dir)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        # The class constructor, not from_config: under ZeRO-3, transformers would build it inside zero.Init.
        fresh = type(unwrapped)(copy.deepcopy(unwrapped.config))
        _write_folder(fresh, state, processor, out)
    accelerator.wait_for_everyone()
    return out


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, processor_dir: str | Path | None = None,
                      overwrite: bool = False) -> Path:
    """Offline export of a CheckpointManager checkpoint (or a run folder: its latest checkpoint)."""
    from transformers import AutoConfig, AutoModelForCTC, AutoProcessor

    path = find_checkpoint(checkpoint)
    meta = read_meta(path)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    if not (path / HF_CONFIG_DIR / "config.json").is_file():
        raise ExportError(f"checkpoint {path} has no {HF_CONFIG_DIR}/config.json (model config); it was not written "
                          "by asr_dist's CheckpointManager")
    proc_dir = Path(processor_dir) if processor_dir else path / PROCESSOR_DIR
    if not proc_dir.is_dir():
        raise ExportError(f"checkpoint {path} holds no processor/ folder; pass --processor DIR "
                          "(e.g. the shards' train/processor)")
    processor = AutoProcessor.from_pretrained(str(proc_dir))
    model = AutoModelForCTC.from_config(AutoConfig.from_pretrained(str(path / HF_CONFIG_DIR)))
    _write_folder(model, consolidated_state_dict(path, meta), processor, out)
    return out


def consolidated_state_dict(path: Path, meta: dict) -> dict[str, torch.Tensor]:
    """The full fp32 model state of a checkpoint, whatever wrote it."""
    if meta.get("distributed_type") == "DEEPSPEED":
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        if not (path / DS_TAG).is_dir():
            raise ExportError(f"checkpoint {path} was written by DeepSpeed but has no {DS_TAG}/ folder of shards")
        return dict(get_fp32_state_dict_from_zero_checkpoint(str(path), tag=DS_TAG))
    safe, legacy = path / "model.safetensors", path / "pytorch_model.bin"
    if safe.is_file():
        from safetensors.torch import load_file

        state = load_file(str(safe))
    elif legacy.is_file():
        state = torch.load(legacy, map_location="cpu", weights_only=True)
    else:
        raise ExportError(f"checkpoint {path} has neither model.safetensors nor pytorch_model.bin")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DDP-wrapped names, if any


def _write_folder(model, state: dict[str, torch.Tensor], processor, out: Path) -> None:
    """Strict fp32 load into `model`, then save_pretrained + processor into a temp folder renamed to `out`."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(f"weights do not fit {type(model).__name__}: missing {sorted(missing)[:8]}, "
                          f"unexpected {sorted(unexpected)[:8]}")
    model = model.float().eval()
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    processor.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asr-dist export",
                                description="Turn a checkpoint (DDP or ZeRO shards, any number of ranks) into a "
                                            "save_pretrained folder for transformers.pipeline.")
    p.add_argument("checkpoint", help="a checkpoint folder (run/checkpoints/step-N), or a run folder: its latest")
    p.add_argument("out", help="output folder")
    p.add_argument("--processor", help="processor folder, when the checkpoint holds none")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--lm", help="LM folder (asr-dist lm build): export a Wav2Vec2ProcessorWithLM that decodes with it")
    p.add_argument("--alpha", type=float, help="LM weight (default: the LM's tuned value)")
    p.add_argument("--beta", type=float, help="word insertion bonus (default: the LM's tuned value)")
    args = p.parse_args(argv)
    if args.lm:  # check the LM before the (slow) export, so a bad LM leaves no half-written folder
        from asr_dist.lm.store import LMError, open_lm

        try:
            open_lm(args.lm)
        except LMError as e:
            print(f"asr-dist export: {e}", file=sys.stderr)
            return 1
    try:
        out = export_checkpoint(args.checkpoint, args.out, args.processor, args.overwrite)
    except (CheckpointError, ExportError, OSError) as e:
        print(f"asr-dist export: {e}", file=sys.stderr)
        return 1
    if args.lm:
        from asr_dist.lm.export import add_lm
        from asr_dist.lm.store import LMError

        try:
            add_lm(out, args.lm, args.alpha, args.beta)
        except LMError as e:
            print(f"asr-dist export: {e}", file=sys.stderr)
            return 1
        print(f"added LM {args.lm} (language_model/, Wav2Vec2ProcessorWithLM)")
    print(f"exported {find_checkpoint(args.checkpoint)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
