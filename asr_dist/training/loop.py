"""The training loop: updates until the budget is spent or a stop is agreed, with logging, evaluation,
checkpoints and the end-of-run work (final evaluation, last checkpoint, export, summary).

Every call marked "collective" must be made by every rank at the same point: the update itself, the
throughput all-reduce at log steps, evaluation, checkpoint saves and the stop agreement.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from asr_dist.evaluate import evaluate
from asr_dist.export import export_pretrained
from asr_dist.metrics import MetricsLogger, ThroughputMeter
from asr_dist.runfolder import EVAL, EXPORT, SUMMARY, RunFolder
from asr_dist.stop import REQUEUE_EXIT_CODE, GracefulStop
from asr_dist.training.components import Components

log = logging.getLogger("asr_dist.train")


class TrainingLoop:
    def __init__(self, parts: Components):
        self.parts = parts
        self.cfg = parts.cfg
        self.acc = parts.accelerator
        self.folder = RunFolder(self.cfg.train.run_dir)
        self.budget = parts.progress.budget
        self.metrics = MetricsLogger(self.acc, self.folder.path, total_steps=self.budget.total_steps,
                                     start_step=parts.progress.step, hparams=self.cfg.to_dict())
        self.throughput = ThroughputMeter()
        self.stop = GracefulStop()
        self.losses: list[float] = []
        self.last_saved = parts.progress.step if parts.resumed_from is not None else -1

    # -- helpers
    def epoch(self) -> float:
        """The loader's epoch and the share of it consumed (what a user means by epoch 1.5)."""
        return self.parts.train_loader.progress

    def evaluate(self):
        """Collective. Scores on the eval set, logged; None without one."""
        p = self.parts
        if p.eval_loader is None:
            return None
        result = evaluate(p.model, p.eval_loader, p.processor, self.acc, self.cfg.eval,
                          mixed_precision=p.backend.mode)
        self.metrics.log_eval(result, p.progress.step, self.epoch())
        return result

    def skipped_samples(self) -> list[list[str]]:
        """Collective. The samples every rank skipped since the last call, as [shard, key, reason]."""
        from accelerate.utils import gather_object

        mine = self.parts.train_loader.stats.take_skipped()
        count = torch.tensor([len(mine)], dtype=torch.int64, device=self.acc.device)
        if self.acc.num_processes > 1:
            count = self.acc.reduce(count, reduction="sum")
        if int(count.item()) == 0:
            return []
        everyone = gather_object([list(s) for s in mine]) if self.acc.num_processes > 1 else [list(s) for s in mine]
        return everyone

    def save(self, step: int, scores=None) -> None:
        """Collective."""
        self.parts.checkpoints.save(step, self.parts.stateful, {"wer": scores.wer} if scores else None)
        self.last_saved = step

    # -- the loop
    def run(self) -> dict:
        """Train; returns the run's summary on every rank (see train.run)."""
        p = self.parts
        self.stop.install()
        try:
            self._train()
        finally:
            self.stop.uninstall()
            p.train_loader.close()  # DataLoader workers ignore stop signals: the trainer shuts them down
        return self._finish()

    def _train(self) -> None:
        p, cfg, progress = self.parts, self.cfg, self.parts.progress
        micro_batches = iter(p.train_loader.forever())
        window_loss, window_steps = 0.0, 0
        while progress.step < self.budget.total_steps:
            waited = time.perf_counter()
            batches = [next(micro_batches) for _ in range(cfg.train.grad_accum)]
            data_wait = time.perf_counter() - waited
            for batch in batches:
                self.throughput.add_batch(batch["audio_seconds"], batch["padded_seconds"], data_wait / len(batches))
            stats = p.trainer.train_step(batches)
            self.losses.append(stats["loss"])
            if not stats["skipped"]:
                window_loss, window_steps = window_loss + stats["loss"], window_steps + 1
            step = progress.step
            self.metrics.progress(loss=stats["loss"], lr=stats.get("lr/head"))
            if step % cfg.train.log_every == 0 or step == self.budget.total_steps:
                skipped = self.skipped_samples()
                self.metrics.log({**stats, "loss_avg": window_loss / max(window_steps, 1),
                                  **self.throughput.summary(self.acc), "data_wait_seconds": data_wait,
                                  "epoch_index": p.train_loader.epoch, "memory_mb": memory_mb()["now"],
                                  "data/skipped_samples": len(skipped),
                                  **({"data/skipped": skipped} if skipped else {})},  # [shard, key, reason] each
                                 step, self.epoch())
                window_loss, window_steps = 0.0, 0
            scores = None
            if cfg.eval.every_steps and step % cfg.eval.every_steps == 0 and step < self.budget.total_steps:
                scores = self.evaluate()
            if p.checkpoints.due(step):
                self.save(step, scores)
            if self.stop.should_stop(self.acc):
                self.metrics.write(f"stopping at step {step}: {self.stop.reason}; saving a checkpoint to resume from")
                if self.last_saved != step:
                    self.save(step)
                break

    def _finish(self) -> dict:
        from accelerate.utils import gather_object

        p, cfg, progress = self.parts, self.cfg, self.parts.progress
        trained_memory = memory_mb(trim=True)
        stopped = self.stop.stopping
        result: dict = {"steps": progress.step, "skipped_updates": progress.skipped_updates, "losses": self.losses,
                        "audio_seconds_seen": progress.audio_seconds_seen, "samples_seen": progress.samples_seen,
                        "final_loss": self.losses[-1] if self.losses else math.nan, "eval": None,
                        "stopped": stopped, "exit_code": REQUEUE_EXIT_CODE if stopped else 0,
                        "run_dir": str(self.folder.path), "export_dir": None,
                        "precision": p.backend.precision.to_dict(), "budget": self.budget.to_dict()}
        if not stopped:
            final = self.evaluate()
            if final is not None:
                result["eval"] = final.to_dict()
                if self.acc.is_main_process:  # with every utterance, as `asr-dist evaluate` writes it
                    self.folder.write_json(EVAL, final.to_dict(utterances=True))
            if cfg.checkpoint.every_steps and self.last_saved != progress.step:
                self.save(progress.step, final)
            result["export_dir"] = str(export_pretrained(self.acc, p.model, p.processor, self.folder.path / EXPORT))
        memory = gather_object([{"end_of_training": trained_memory["now"], **memory_mb()}])  # per rank
        result["peak_memory_mb"] = [m["peak"] for m in memory]  # the whole run: start-up, training, eval, export
        result["training_memory_mb"] = [m["end_of_training"] for m in memory]  # held after the last update
        if self.acc.is_main_process:
            self.folder.write_json(SUMMARY, {k: v for k, v in result.items() if k not in ("losses", "eval")})
        self.metrics.close()
        self.acc.wait_for_everyone()
        self.acc.end_training()
        return result


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
