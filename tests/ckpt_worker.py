"""A tiny training program for the checkpoint tests: a small Wav2Vec2ForCTC on synthetic, index-addressed data,
driven by CheckpointManager and GracefulStop exactly as the trainer drives them.

Started once per rank by tests/_ranks.py (like srun: RANK/WORLD_SIZE/MASTER_* in the environment),
so that the tests see every rank's pid and exit code. Writes RUN_DIR/final.pt (consolidated weights) and
RUN_DIR/seen-rank-R.jsonl (the sample indices every step consumed) on the way.

    python tests/ckpt_worker.py RUN_DIR --backend ddp|zero2|zero3|single --steps 8 --save-every 2
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs, set_seed

from asr_dist.checkpoint import CheckpointManager
from asr_dist.config import CheckpointConfig
from asr_dist.export import export_pretrained
from asr_dist.stop import REQUEUE_EXIT_CODE, GracefulStop

GLOBAL_BATCH = 4  # samples per optimizer step, split over the ranks
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C", "D", "E"]


def tiny_processor(folder: Path, vocab: list[str] = VOCAB) -> transformers.Wav2Vec2Processor:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".vocab-{os.getpid()}.json"  # every rank writes it: replace atomically
    tmp.write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    os.replace(tmp, folder / "vocab.json")
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                                  word_delimiter_token="|")
    features = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                                     do_normalize=True, return_attention_mask=True)
    return transformers.Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer)


def tiny_model(hidden: int = 32, random_ops: bool = True, layers: int = 2) -> transformers.Wav2Vec2ForCTC:
    """random_ops=False turns dropout and SpecAugment masking off: no RNG in the step at all."""
    p = 0.1 if random_ops else 0.0
    config = transformers.Wav2Vec2Config(
        vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden,
        conv_dim=[16, 16], conv_kernel=[10, 3], conv_stride=[5, 2], num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, mask_time_prob=2 * p, mask_time_length=2, hidden_dropout=p,
        attention_dropout=p, activation_dropout=p, feat_proj_dropout=p,
        pad_token_id=0, ctc_loss_reduction="mean", layerdrop=0.0)
    return transformers.Wav2Vec2ForCTC(config)


def sample(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `index` of an endless synthetic corpus: 0.1 s of audio and 3 labels, a pure function of index."""
    g = torch.Generator().manual_seed(1000 + index)
    return torch.randn(1600, generator=g), torch.randint(4, len(VOCAB), (3,), generator=g)


class SyntheticLoader:
    """Stands in for the data loader: yields this rank's share of each global batch; its state is the position."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world, self.batches_consumed = rank, world, 0

    def next_batch(self) -> tuple[dict, list[int]]:
        per_rank = GLOBAL_BATCH // self.world
        first = self.batches_consumed * GLOBAL_BATCH + self.rank * per_rank
        indices = list(range(first, first + per_rank))
        audio, labels = zip(*(sample(i) for i in indices))
        self.batches_consumed += 1
        return {"input_values": torch.stack(audio), "labels": torch.stack(labels)}, indices

    def state_dict(self) -> dict:
        return {"batches_consumed": self.batches_consumed, "plan_world_size": self.world}

    def load_state_dict(self, state: dict) -> None:
        self.batches_consumed = state["batches_consumed"]  # global batches: valid for any world size


class Counters:
    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def build_accelerator(backend: str) -> Accelerator:
    if backend in ("single", "ddp"):
        return Accelerator(cpu=True, step_scheduler_with_optimizer=False)
    stage = int(backend[-1])
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
          "zero_allow_untested_optimizer": True, "bf16": {"enabled": False},
          "zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True}}
    return Accelerator(deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=ds, zero3_init_flag=False),
                       kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")], step_scheduler_with_optimizer=False)


class TinyRun:
    """One rank of a tiny training run, wired to CheckpointManager and GracefulStop like the trainer."""

    def __init__(self, run_dir: Path, backend: str = "single", hidden: int = 32, random_ops: bool = True,
                 cfg: CheckpointConfig | None = None, vocab: list[str] = VOCAB, layers: int = 2):
        self.run_dir = Path(run_dir)
        set_seed(0)
        model = tiny_model(hidden, random_ops, layers)  # before the Accelerator: ZeRO-3's zero.Init must not see it
        self.accelerator = acc = build_accelerator(backend)
        self.processor = tiny_processor(self.run_dir / "processor-src", vocab)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
        if acc.state.deepspeed_plugin is not None:
            acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = GLOBAL_BATCH // acc.num_processes
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.loader, self.counters = SyntheticLoader(acc.process_index, acc.num_processes), Counters()
        self.extras = {"loader": self.loader, "trainer": self.counters}
        self.manager = CheckpointManager(acc, self.run_dir, cfg or CheckpointConfig(every_steps=2),
                                         config={"model": {"hidden": hidden}}, processor=self.processor)
        self.timings = self.run_dir / f"timings-rank-{acc.process_index}.jsonl"

    def resume(self, resume: str = "auto") -> int:
        """Load what `train.resume` names; returns the step training continues from."""
        path = self.manager.resolve(resume)
        if path is not None:
            started = time.perf_counter()
            self.manager.load(path, self.extras)
            self._time("load", started, path)
        return self.counters.step

    def train(self, steps: int, stop: GracefulStop | None = None, step_sleep: float = 0.0) -> int:
        """Train up to `steps` optimizer steps; returns 0, or REQUEUE_EXIT_CODE after a graceful stop."""
        acc, seen = self.accelerator, open(self.run_dir / f"seen-rank-{self.accelerator.process_index}.jsonl", "a")
        self.model.train()
        while self.counters.step < steps:
            batch, indices = self.loader.next_batch()
            loss = self.model(**batch).loss
            acc.backward(loss)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
            self.counters.step += 1
            seen.write(json.dumps({"step": self.counters.step, "indices": indices}) + "\n")
            seen.flush()
            time.sleep(step_sleep)
            if stop is not None and stop.should_stop(acc):
                self.save()
                print(f"stopping at step {self.counters.step}: {stop.reason}", flush=True)
                return REQUEUE_EXIT_CODE
            if self.manager.due(self.counters.step):
                self.save(metrics={"wer": float(abs(self.counters.step - 4))})  # made up; best at step 4
        return 0

    def save(self, metrics: dict | None = None) -> Path | None:
        started = time.perf_counter()
        path = self.manager.save(self.counters.step, self.extras, metrics)
        self._time("save", started, path)
        return path

    def weights(self) -> dict[str, torch.Tensor]:
        """Full fp32 weights (a collective under ZeRO-3: every rank calls)."""
        state = self.accelerator.get_state_dict(self.model)  # None on ranks > 0 under ZeRO-3
        return {k: v.float().clone() for k, v in (state or {}).items()}

    def moments(self) -> dict[str, dict[str, torch.Tensor]]:
        """Full Adam moments per trainable parameter under DeepSpeed (collective: every rank calls)."""
        from deepspeed.utils import safe_get_full_optimizer_state

        module = self.accelerator.unwrap_model(self.model)
        return {name: {key: safe_get_full_optimizer_state(p, key).float().clone() for key in ("exp_avg", "exp_avg_sq")}
                for name, p in module.named_parameters() if p.requires_grad}

    def dump(self, file: Path, with_moments: bool = False) -> None:
        state = {"weights": self.weights()}
        if with_moments:
            state["moments"] = self.moments()
        if self.accelerator.is_main_process:
            torch.save(state, file)
        self.accelerator.wait_for_everyone()

    def _time(self, event: str, started: float, path: Path | None) -> None:
        with open(self.timings, "a") as f:
            f.write(json.dumps({"event": event, "seconds": time.perf_counter() - started,
                                "path": str(path) if path else None}) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--backend", default="ddp", choices=["single", "ddp", "zero2", "zero3"])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--save-every", type=int, default=2)
    p.add_argument("--keep-last", type=int, default=2)
    p.add_argument("--keep-best", action="store_true")
    p.add_argument("--on-save-error", default="continue")
    p.add_argument("--resume", default="auto")
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--no-random-ops", action="store_true", help="no dropout/masking: compare across world sizes")
    p.add_argument("--dump-loaded", action="store_true", help="write RUN_DIR/loaded.pt right after resuming")
    p.add_argument("--export", action="store_true", help="export_pretrained to RUN_DIR/export at the end")
    p.add_argument("--fail-save", default="", metavar="RANK:STEP",
                   help="DeepSpeed: the save at STEP fails on RANK only (disk full while writing its ZeRO shard)")
    args = p.parse_args(argv)

    cfg = CheckpointConfig(every_steps=args.save_every, keep_last=args.keep_last, keep_best=args.keep_best,
                           on_save_error=args.on_save_error)
    run = TinyRun(args.run_dir, args.backend, args.hidden, not args.no_random_ops, cfg, layers=args.layers)
    if args.fail_save:
        rank, step = map(int, args.fail_save.split(":"))
        if run.accelerator.process_index == rank:
            fail_zero_shard_write(run.accelerator, step)
    stop = GracefulStop().install()
    start = run.resume(args.resume)
    if start and args.dump_loaded:
        run.dump(args.run_dir / "loaded.pt", with_moments=args.backend.startswith("zero"))
    print(f"rank {run.accelerator.process_index} pid {os.getpid()} starts at step {start}", flush=True)
    code = run.train(args.steps, stop, args.step_sleep)
    if code == 0:
        run.dump(args.run_dir / "final.pt")
    if code == 0 and args.export:
        export_pretrained(run.accelerator, run.model, run.processor, args.run_dir / "export")
    run.accelerator.end_training()  # tears the process group down before exit
    return code


def fail_zero_shard_write(accelerator: Accelerator, step: int) -> None:
    """Fault injection for one rank: writing its ZeRO optimizer shard of the save at `step` raises ENOSPC, inside
    DeepSpeed's save_checkpoint (before its closing barrier), as a full local disk would on that rank alone."""
    engine = accelerator.deepspeed_engine_wrapped.engine
    write = engine.checkpoint_engine.save

    def failing_write(state_dict, path):
        if f".tmp-step-{step}" in str(path) and "optim_states" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device (injected on this rank)", str(path))
        return write(state_dict, path)

    engine.checkpoint_engine.save = failing_write


if __name__ == "__main__":
    sys.exit(main())
