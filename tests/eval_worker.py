"""One rank of a multi-process evaluation (started by tests/test_evaluate.py with `accelerate launch`).

Ranks hold deliberately unequal shares of the eval set (rank 0 three batches, rank 1 one), as an eval
loader may give them; every rank writes the EvalResult it got to OUT/rank<R>.json. Then every rank
logs through a MetricsLogger into OUT/run (only the main process may write) and a ThroughputMeter
(rank r saw 1 + r audio seconds in 2 padded seconds: the summary must add both ranks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from asr_dist.config import EvalConfig
from asr_dist.evaluate import evaluate
from asr_dist.metrics import MetricsLogger, ThroughputMeter

from _tiny_model import audio, make_batch, tiny_model_and_processor

TEXTS = ["HELLO WORLD", "THE QUICK BROWN FOX", "JUMPS OVER THE LAZY DOG", "DON'T PANIC", "HELLO", "THE LAZY FOX",
         "BROWN DOG", "WORLD"]


def all_batches(processor) -> list[dict]:
    items = [(f"utt{i:02d}", t, f"spk{i % 3}", audio(0.4 + 0.1 * i, seed=i)) for i, t in enumerate(TEXTS)]
    return [make_batch(processor, items[i:i + 2]) for i in range(0, len(items), 2)]  # 4 batches


def rank_batches(batches: list[dict], rank: int) -> list[dict]:
    return batches[:3] if rank == 0 else batches[3:]


def main(out_dir: str) -> None:
    model, processor = tiny_model_and_processor()  # built before the Accelerator (ZeRO-3, shared facts)
    import os

    tracking = dict(log_with="tensorboard", project_dir=str(Path(out_dir, "run")))
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if deepspeed:
        accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")], **tracking)
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
        model, _ = accelerator.prepare(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    else:
        accelerator = Accelerator(cpu=True, **tracking)
        model = accelerator.prepare(model)
    assert accelerator.num_processes == 2, accelerator.num_processes
    batches = rank_batches(all_batches(processor), accelerator.process_index)
    result = evaluate(model, batches, processor, accelerator, EvalConfig(num_examples=2, subset_field="speaker"))
    Path(out_dir, f"rank{accelerator.process_index}.json").write_text(
        json.dumps({"zero_stage": accelerator.state.deepspeed_plugin.zero_stage if deepspeed else None,
                    **result.to_dict(utterances=True)}))
    logger = MetricsLogger(accelerator, Path(out_dir, "run"), total_steps=1, show_progress=False)
    meter = ThroughputMeter()
    meter.add_batch(audio_seconds=1.0 + accelerator.process_index, padded_seconds=2.0)
    logger.log({"logged_by_rank": accelerator.process_index, **meter.summary(accelerator)}, step=1)
    logger.log_eval(result, step=1)
    logger.close()
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
