"""A tiny training program for the checkpoint tests: a small Wav2Vec2ForCTC on synthetic, index-addressed data,
driven by CheckpointManager and GracefulStop exactly as the trainer drives them.

Started once per rank by tests/launch_ranks.py (like srun: RANK/WORLD_SIZE/MASTER_* in the environment),
so that the tests see every rank's pid and exit code. Writes RUN_DIR/final.pt (consolidated weights) and
RUN_DIR/seen-rank-R.jsonl (the sample indices every step consumed) on the way.

    python tests/ckpt_worker.py RUN_DIR --backend ddp|zero2|zero3|single --steps 8 --save-every 2
"""

from __future__ import annotations

import argparse
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
from asr_dist.stop import REQUEUE_EXIT_CODE, GracefulStop

GLOBAL_BATCH = 4  # samples per optimizer step, split over the ranks
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C", "D", "E"]


def tiny_processor(folder: Path) -> transformers.Wav2Vec2Processor:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                                  word_delimiter_token="|")
    features = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                                     do_normalize=True, return_attention_mask=True)
    return transformers.Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer)


def tiny_model(hidden: int = 32) -> transformers.Wav2Vec2ForCTC:
    config = transformers.Wav2Vec2Config(
        vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=[16, 16], conv_kernel=[10, 3], conv_stride=[5, 2], num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, mask_time_prob=0.2, mask_time_length=2, hidden_dropout=0.1,
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
    args = p.parse_args(argv)

    set_seed(0)
    model = tiny_model(args.hidden)  # before the Accelerator: ZeRO-3's zero.Init must not see it (facts)
    accelerator = build_accelerator(args.backend)
    processor = tiny_processor(args.run_dir / "processor-src")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    micro = GLOBAL_BATCH // accelerator.num_processes
    if accelerator.state.deepspeed_plugin is not None:
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    loader, counters = SyntheticLoader(accelerator.process_index, accelerator.num_processes), Counters()
    extras = {"loader": loader, "trainer": counters}
    cfg = CheckpointConfig(every_steps=args.save_every, keep_last=args.keep_last, keep_best=args.keep_best,
                           on_save_error=args.on_save_error)
    manager = CheckpointManager(accelerator, args.run_dir, cfg, config={"model": {"hidden": args.hidden}},
                                processor=processor)
    stop = GracefulStop().install()
    resume_from = manager.resolve(args.resume)
    if resume_from is not None:
        manager.load(resume_from, extras)
    seen = open(args.run_dir / f"seen-rank-{accelerator.process_index}.jsonl", "a")
    print(f"rank {accelerator.process_index} pid {os.getpid()} starts at step {counters.step}", flush=True)

    model.train()
    while counters.step < args.steps:
        batch, indices = loader.next_batch()
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        counters.step += 1
        seen.write(json.dumps({"step": counters.step, "indices": indices}) + "\n")
        seen.flush()
        time.sleep(args.step_sleep)
        if stop.should_stop(accelerator):
            manager.save(counters.step, extras)
            print(f"stopping at step {counters.step}: {stop.reason}", flush=True)
            return REQUEUE_EXIT_CODE
        if manager.due(counters.step):
            wer = float(abs(counters.step - 4))  # a made-up metric with a known best (step 4) for keep_best
            manager.save(counters.step, extras, metrics={"wer": wer})

    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        torch.save({k: v.float().clone() for k, v in state.items()}, args.run_dir / "final.pt")
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
