"""What a run reports: TensorBoard (through Accelerate's trackers), `metrics.jsonl`, tqdm progress.

The trainer creates the Accelerator with `log_with="tensorboard", project_dir=run_dir`; then
`MetricsLogger(accelerator, run_dir, ...)` starts the tracker (events under run_dir/tensorboard/).
Without `log_with` only metrics.jsonl and the progress bar are written.

Every rank may call every method; only the main process writes. `log` is not a collective, so it
may be called on the main process alone. `ThroughputMeter.summary` IS a collective (one
all-reduce): every rank must call it at the same step.

metrics.jsonl holds one JSON object per `log` call: {"kind": "train"|"eval", "step", "epoch",
"time" (unix seconds), "elapsed" (seconds since this process started logging), ...scalars}, with
non-finite numbers written as null so that any JSON reader takes the file. A resumed run continues
the same file: lines with a step above the resume step (logged after the checkpoint it resumes
from) are dropped first, and TensorBoard is told to hide the same steps (SummaryWriter's
purge_step), so neither curve shows a stretch twice.

In the trainer:

    accelerator = Accelerator(..., log_with="tensorboard", project_dir=run_dir)
    metrics = MetricsLogger(accelerator, run_dir, total_steps=total, start_step=step, hparams=cfg.to_dict())
    meter = ThroughputMeter()
    ...  per micro-batch:   meter.add_batch(batch["audio_seconds"], batch["padded_seconds"], waited)
    ...  per update:        metrics.progress(1, loss=loss)
    ...  every log_every:   metrics.log({**stats, **meter.summary(accelerator)}, step, epoch)  # all ranks
    ...  after evaluate():  metrics.log_eval(result, step, epoch)
    metrics.close(); accelerator.end_training()
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_PROJECT = "tensorboard"  # event files go to run_dir/tensorboard/


class MetricsLogger:
    """Scalars to TensorBoard + metrics.jsonl and a progress bar, all on the main process only."""

    def __init__(self, accelerator, run_dir: str | Path, *, total_steps: int | None = None, start_step: int = 0,
                 hparams: dict | None = None, show_progress: bool = True):
        """`start_step`: the optimizer step the run (re)starts from; 0 for a fresh run, which empties
        an old metrics.jsonl in the same run folder. `hparams`: a (nested) config dict stored once
        with TensorBoard's hparams plugin."""
        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process
        self.path = Path(run_dir) / JSONL_NAME
        self._started = time.time()
        self._file = None
        if self.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            truncate_jsonl(self.path, keep_through_step=start_step)
            self._file = open(self.path, "a", encoding="utf-8")
        self.tensorboard = bool(getattr(accelerator, "log_with", None))
        if self.tensorboard:
            init_kwargs = {"tensorboard": {"purge_step": start_step + 1}} if start_step > 0 else {}
            accelerator.init_trackers(TENSORBOARD_PROJECT, config=_flatten(hparams) if hparams else None,
                                      init_kwargs=init_kwargs)
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                        disable=not (self.is_main and show_progress), file=sys.stderr)

    def log(self, values: dict[str, Any], step: int, epoch: float | None = None, kind: str = "train") -> None:
        """One line in metrics.jsonl and one point per scalar in TensorBoard. Tensors become floats."""
        if not self.is_main:
            return
        scalars = {k: _to_number(v) for k, v in values.items()}
        now = time.time()
        line = {"kind": kind, "step": int(step), "epoch": epoch, "time": round(now, 3),
                "elapsed": round(now - self._started, 3), **{k: _json_safe(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        if self.tensorboard:
            self.accelerator.log({k: v for k, v in scalars.items() if isinstance(v, (int, float))}, step=step)

    def log_eval(self, result, step: int, epoch: float | None = None) -> None:
        """An `evaluate.EvalResult`: its scalars (eval/...), the examples as TensorBoard text and
        in the jsonl line, and the printed report."""
        if not self.is_main:
            return
        self.log({**result.scalars(), "examples": result.examples}, step, epoch, kind="eval")
        if self.tensorboard and result.examples:
            text = "\n\n".join(f"**{e['key']}**  \nREF: `{e['ref']}`  \nHYP: `{e['hyp']}`" for e in result.examples)
            self.accelerator.log({"eval/examples": text}, step=step)
        self.write(f"[step {step}] " + result.format())

    def progress(self, steps: int = 1, **postfix: Any) -> None:
        """Advance the bar by `steps` optimizer updates; postfix values are shown beside it."""
        if self.bar.disable:
            return
        self.bar.update(steps)
        if postfix:
            self.bar.set_postfix({k: (f"{_to_number(v):.4g}" if isinstance(_to_number(v), float) else v)
                                  for k, v in postfix.items()}, refresh=False)

    def write(self, message: str) -> None:
        """Print on the main process without breaking the progress bar."""
        if self.is_main:
            tqdm.write(message, file=sys.stdout)

    def close(self) -> None:
        """Flush and close the file, the bar and the trackers. Does not call accelerator.end_training()
        (which also destroys the process group): the trainer does that last."""
        self.bar.close()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.tensorboard and self.is_main:
            for tracker in self.accelerator.trackers:
                tracker.finish()


def truncate_jsonl(path: Path, keep_through_step: int) -> int:
    """Keep the lines of `path` with step <= keep_through_step (and drop a torn last line); returns
    how many lines were dropped. Rewrites atomically (temp file + rename)."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(raw)["step"]
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if step <= keep_through_step:
            kept.append(raw)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict]:
    """The lines of a metrics.jsonl (optionally of one kind), for reports and tests."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]


class ThroughputMeter:
    """Audio seconds per second, padding fraction and data-wait share over one logging window,
    summed over all ranks (each rank only sees its own batches)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._window_start = time.perf_counter()
        self._audio = self._padded = self._wait = 0.0

    def add_batch(self, audio_seconds: float, padded_seconds: float, data_wait_seconds: float = 0.0) -> None:
        """One micro-batch: its real and padded audio (batch["audio_seconds"], batch["padded_seconds"])
        and how long the loop waited for it."""
        self._audio += audio_seconds
        self._padded += padded_seconds
        self._wait += data_wait_seconds

    def summary(self, accelerator) -> dict[str, float]:
        """Collective (one all-reduce); then starts a new window. Keys: audio_sec_per_sec (all ranks
        together), padding_fraction (padded share of the batches' audio), data_wait_fraction (mean
        over ranks of the time spent waiting for data)."""
        wall = max(time.perf_counter() - self._window_start, 1e-9)
        local = torch.tensor([self._audio, self._padded, self._wait], dtype=torch.float64, device=accelerator.device)
        total = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
        audio, padded, wait = (float(x) for x in total.cpu())
        self.reset()
        return {"audio_sec_per_sec": audio / wall,
                "padding_fraction": (1.0 - audio / padded) if padded > 0 else 0.0,
                "data_wait_fraction": wait / (wall * accelerator.num_processes)}


def _to_number(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().float().item() if value.numel() == 1 else value.detach().cpu().tolist()
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"section.key": scalar}; lists and None as strings (what add_hparams takes)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out
