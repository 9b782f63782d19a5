"""The Hugging Face baseline for benchmarks/train_throughput.py: CTC fine-tuning the way transformers'
examples/pytorch/speech-recognition/run_speech_recognition_ctc.py does it, on asr_dist's shards.

What the recipe does, and so this does: decode and featurize the whole training set up front (its
`datasets.map`), a `DataCollatorCTCWithPadding` that pads inputs with the processor and labels with -100,
`Trainer` with length grouping (`train_sampling_strategy="group_by_length"`, megabatches of 50 x batch sorted
by length), a fixed number of samples per device batch, `ctc_loss_reduction="mean"`, the CNN frozen when the
config freezes it. The model is asr_dist's `build_model` from the same train config and seed, so both sides
train the identical network. Started by `accelerate launch` (DDP) like asr_dist, or plainly for one process:

    python benchmarks/hf_recipe_ctc.py OUT_DIR TRAIN_CONFIG BATCH_SIZE EPOCHS key=value ...

Each rank writes OUT_DIR/hf-rank-R.json: {"audio_seconds", "padded_seconds", "train_runtime", "steps"}.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from transformers import Trainer, TrainingArguments

from asr_dist.config import load_config
from asr_dist.data.index import load_index, local_path
from asr_dist.audio import read_audio
from asr_dist.data.loader import read_members
from asr_dist.model import build_model
from asr_dist.text import load_processor
from asr_dist.training.components import processor_path


class SpeechDataset(torch.utils.data.Dataset):
    """The recipe's preprocessed dataset: normalized input_values, input_length, label ids."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def load_and_featurize(shards: str, processor, sample_rate: int) -> SpeechDataset:
    items = []
    for shard in load_index(shards).shards:
        members = read_members(shard.url, {s.key for s in shard.samples})
        for sample in shard.samples:
            audio = read_audio(members[sample.key]["flac"], sample_rate)
            items.append({"input_values": processor(audio, sampling_rate=sample_rate).input_values[0],
                          "input_length": len(audio),
                          "labels": processor.tokenizer(sample.text).input_ids})
    return SpeechDataset(items)


@dataclass
class DataCollatorCTCWithPadding:
    """As in run_speech_recognition_ctc.py (plus counting real and padded audio for the benchmark)."""

    processor: object
    sample_rate: int
    audio_seconds: float = 0.0
    padded_seconds: float = 0.0

    def __call__(self, features: list[dict]) -> dict:
        input_features = [{"input_values": f["input_values"]} for f in features]
        label_features = [{"input_ids": f["labels"]} for f in features]
        batch = self.processor.pad(input_features, padding=True, return_tensors="pt")
        labels_batch = self.processor.pad(labels=label_features, padding=True, return_tensors="pt")
        batch["labels"] = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        self.audio_seconds += sum(len(f["input_values"]) for f in features) / self.sample_rate
        self.padded_seconds += batch["input_values"].numel() / self.sample_rate
        return batch


def main(out_dir: str, train_config: str, batch_size: str, epochs: str, *overrides: str) -> None:
    cfg = load_config(train_config, list(overrides))
    processor = load_processor(processor_path(cfg))
    dataset = load_and_featurize(cfg.data.train_shards, processor, cfg.data.sample_rate)
    set_seed(cfg.train.seed)
    model = build_model(cfg.model, processor)
    model.config.ctc_loss_reduction = "mean"  # the recipe's default
    if cfg.freezing.feature_encoder:
        model.freeze_feature_encoder()
    collator = DataCollatorCTCWithPadding(processor, cfg.data.sample_rate)
    args = TrainingArguments(
        output_dir=str(Path(out_dir) / "hf_trainer"), per_device_train_batch_size=int(batch_size),
        gradient_accumulation_steps=cfg.train.grad_accum, num_train_epochs=float(epochs),
        learning_rate=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay, warmup_steps=0,
        max_grad_norm=cfg.optimizer.max_grad_norm or 1e9, bf16=cfg.train.mixed_precision == "bf16",
        use_cpu=not torch.cuda.is_available(), train_sampling_strategy="group_by_length",
        logging_steps=10_000, save_strategy="no", report_to=[], dataloader_num_workers=0,
        seed=cfg.train.seed, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=dataset,
                      processing_class=processor)
    output = trainer.train()
    rank = trainer.accelerator.process_index
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"hf-rank-{rank}.json").write_text(json.dumps({
        "audio_seconds": collator.audio_seconds, "padded_seconds": collator.padded_seconds,
        "train_runtime": output.metrics["train_runtime"], "steps": output.global_step,
        "train_loss": output.training_loss, "num_samples": len(dataset)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
