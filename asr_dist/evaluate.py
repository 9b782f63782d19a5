"""Evaluation: validation CTC loss, greedy CTC decoding, corpus-level WER/CER with jiwer.

Every rank decodes only its own eval batches (the eval loader gives each sample to exactly one
rank, and ranks may hold different numbers), then one `gather_object` at the end brings every
(key, reference, hypothesis, subset, loss) record to every rank. The scores are computed from the
whole set on each rank, so WER on N ranks equals WER on one, and every rank can act on it (e.g.
keep the best checkpoint) without another collective.

Under DeepSpeed ZeRO-3 each forward gathers the partitioned parameters collectively, so all ranks
must run the same number of forwards: before each batch the ranks agree (one all-reduce) whether
anyone still has work, and a rank that has run out does a throw-away forward on one second of
silence until all are done.

Also the `asr-dist evaluate MODEL_DIR SHARD_DIR` command (an exported save_pretrained folder on a
shard folder).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import gather_object

from asr_dist.config import ConfigError, DataConfig, EvalConfig
from asr_dist.data.frontend import featurize, seconds_per_step
from asr_dist.families import output_lengths as output_lengths_of
from asr_dist.model import padding_changes_outputs, takes_attention_mask
from asr_dist.text import processor_language
from asr_dist.text.scoring import error_rates, primary_metric


@dataclass
class SubsetScore:
    wer: float | None  # None where the language is written without spaces
    cer: float
    num_samples: int
    mer: float | None = None  # mixed error rate, where it is written without spaces (asr_dist.text.scoring)


@dataclass
class EvalResult:
    """Scores over the whole eval set (identical on every rank)."""

    loss: float  # summed CTC loss / number of target tokens
    wer: float | None  # corpus-level: word errors over all utterances / reference words (None: no spaces)
    cer: float
    num_samples: int
    num_tokens: int
    audio_seconds: float
    wall_seconds: float
    subsets: dict[str, SubsetScore] = field(default_factory=dict)  # by EvalConfig.subset_field
    examples: list[dict] = field(default_factory=list)  # {"key", "ref", "hyp"}, the first keys in order
    duplicates_dropped: int = 0  # samples seen on more than one rank (a loader bug; counted once)
    utterances: list[dict] = field(default_factory=list, repr=False)  # every record, sorted by key
    language: str = "en"  # of the processor's text rules
    mer: float | None = None  # mixed error rate (CJK character + Latin word tokens), where words are unspaced
    primary_metric: str = "wer"  # "wer" | "cer" | "mer": what the run is ranked by (checkpoint.keep_best)

    @property
    def primary(self) -> float:
        """The value of the primary metric."""
        return getattr(self, self.primary_metric)

    def scalars(self, prefix: str = "eval/") -> dict[str, float]:
        """Flat numbers for TensorBoard / metrics.jsonl (per-subset WER as eval/wer/<subset>); eval/primary is
        the primary metric's value, eval/primary_metric its name (a string: metrics.jsonl only)."""
        out = {f"{prefix}loss": self.loss, f"{prefix}wer": self.wer, f"{prefix}cer": self.cer, f"{prefix}mer": self.mer,
               f"{prefix}num_samples": float(self.num_samples), f"{prefix}wall_seconds": self.wall_seconds}
        for name, score in self.subsets.items():
            out[f"{prefix}wer/{name}"] = score.wer
            out[f"{prefix}cer/{name}"] = score.cer
            out[f"{prefix}mer/{name}"] = score.mer
        out = {k: v for k, v in out.items() if v is not None}
        if self.primary_metric != "wer" or self.language != "en":  # English runs log exactly what they did
            out[f"{prefix}primary"] = self.primary
            out[f"{prefix}primary_metric"] = self.primary_metric
        return out

    def checkpoint_metrics(self) -> dict[str, float | str]:
        """What a checkpoint's meta records for `checkpoint.keep_best`."""
        out = {k: v for k, v in (("wer", self.wer), ("cer", self.cer), ("mer", self.mer)) if v is not None}
        return {**out, "primary_metric": self.primary_metric}

    def format(self) -> str:
        """A human-readable report: totals, per subset, and the reference/hypothesis examples."""
        rates = "  ".join(f"{name.upper()}{'*' if name == self.primary_metric and self.primary_metric != 'wer' else ''} "
                          f"{100 * value:.2f}%" for name, value in (("wer", self.wer), ("cer", self.cer), ("mer", self.mer))
                          if value is not None)
        lines = [f"eval: {self.num_samples} utterances, {self.audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s: "
                 f"loss {self.loss:.4f}  {rates}"]
        if self.primary_metric != "wer":
            lines[0] += f"  (* primary metric, {self.language})"
        if self.duplicates_dropped:
            lines.append(f"  warning: {self.duplicates_dropped} samples were decoded on more than one rank (counted once)")
        for name, s in sorted(self.subsets.items()):
            rates = "  ".join(f"{label} {100 * v:6.2f}%" for label, v in (("WER", s.wer), ("CER", s.cer), ("MER", s.mer))
                              if v is not None)
            lines.append(f"  {name:<24} {rates}  ({s.num_samples} utterances)")
        for ex in self.examples:
            lines.append(f"  [{ex['key']}]\n    REF: {ex['ref']}\n    HYP: {ex['hyp']}")
        return "\n".join(lines)

    def to_dict(self, utterances: bool = False) -> dict:
        d = asdict(self)
        if not utterances:
            d.pop("utterances")
        return d


# ----------------------------------------------------------------------------- decoding


def greedy_decode(logits: torch.Tensor, processor, output_lengths: torch.Tensor | None = None) -> list[str]:
    """Best path per frame, then the tokenizer's CTC decoding (collapse repeats, drop the blank =
    pad id, "|" -> space), exactly as `processor.batch_decode` and the ASR pipeline do.

    `output_lengths` ([B] frames) cuts off padded frames, which would otherwise decode to noise.
    """
    ids = logits.argmax(dim=-1).cpu().tolist()
    if output_lengths is not None:
        ids = [row[: int(n)] for row, n in zip(ids, output_lengths.tolist())]
    return processor.tokenizer.batch_decode(ids)


def ctc_loss_per_sample(logits: torch.Tensor, labels: torch.Tensor, output_lengths: torch.Tensor,
                        blank_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed (not averaged) CTC loss and target token count per sample, in fp32, zero_infinity.

    Same formula as Wav2Vec2ForCTC's loss with reduction "sum", but per sample so that records
    can be gathered, deduplicated and summed per subset.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [T, B, V]
    target_mask = labels >= 0
    target_lengths = target_mask.sum(-1)
    with torch.backends.cudnn.flags(enabled=False):  # cudnn's CTC has stricter input rules
        loss = F.ctc_loss(log_probs, labels.masked_select(target_mask), output_lengths, target_lengths,
                          blank=blank_id, reduction="none", zero_infinity=True)
    return loss, target_lengths


# ----------------------------------------------------------------------------- evaluation


def evaluate(model, eval_loader, processor, accelerator, cfg_eval: EvalConfig,
             mixed_precision: str = "no") -> EvalResult:
    """Loss and WER/CER of `model` (prepared or not) over `eval_loader` (this rank's batches).

    Collective: every rank must call it. Leaves the model in the train/eval mode it found it in.
    Batches follow docs/architecture.md; the reference is meta["text"] when present, else the
    labels decoded. attention_mask goes to the model only when the feature extractor asks for one
    (wav2vec2-base style models, feat_extract_norm="group", must not get it).
    """
    started = time.perf_counter()
    net = accelerator.unwrap_model(model)
    zero3 = _is_zero3(accelerator)
    use_mask = takes_attention_mask(processor)
    blank_id = processor.tokenizer.pad_token_id
    dtype = next(net.parameters()).dtype  # DeepSpeed bf16 keeps bf16 weights: inputs must match
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    autocast = (torch.autocast(accelerator.device.type, dtype=half) if half is not None and dtype == torch.float32
                else contextlib.nullcontext())
    records: list[dict] = []
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            batches = iter(eval_loader)
            while True:
                batch = next(batches, None)
                if zero3:
                    anyone = accelerator.reduce(torch.tensor([batch is not None], dtype=torch.long,
                                                             device=accelerator.device), reduction="sum")
                    if int(anyone.item()) == 0:
                        break
                    if batch is None:  # keep in step with ranks that still have batches
                        silence = _silence_input(processor, dtype, accelerator.device)
                        with autocast:
                            net(**{net.main_input_name: silence})
                        continue
                elif batch is None:
                    break
                records.extend(_decode_batch(net, batch, processor, accelerator.device, dtype, autocast,
                                             use_mask, blank_id, cfg_eval.subset_field))
    finally:
        net.train(was_training)
    all_records = gather_object(records)
    language = processor_language(processor, default="en")
    return score(all_records, cfg_eval.num_examples, wall_seconds=time.perf_counter() - started, language=language,
                 primary=getattr(cfg_eval, "primary_metric", "auto"))


def _decode_batch(net, batch, processor, device, dtype, autocast, use_mask, blank_id, subset_field) -> list[dict]:
    input_values = batch["input_values"].to(device=device, dtype=dtype)  # waveform or filterbank steps
    attention_mask = batch["attention_mask"].to(device)
    with autocast:
        logits = net(**{net.main_input_name: input_values},
                     attention_mask=attention_mask if use_mask else None).logits
    output_lengths = output_lengths_of(net, attention_mask.sum(-1))
    labels = batch["labels"].to(device)
    losses, tokens = ctc_loss_per_sample(logits, labels, output_lengths, blank_id)
    hyps = greedy_decode(logits, processor, output_lengths)
    metas = batch.get("meta") or [{} for _ in hyps]
    out = []
    for i, (key, meta, hyp) in enumerate(zip(batch["keys"], metas, hyps)):
        ref = meta.get("text")
        if ref is None:
            ref = processor.tokenizer.decode([t for t in labels[i].tolist() if t >= 0], group_tokens=False)
        out.append({"key": key, "ref": ref, "hyp": hyp,
                    "subset": str(meta.get(subset_field, "unknown")) if subset_field else None,
                    "loss": float(losses[i]), "tokens": int(tokens[i]),
                    "seconds": float(attention_mask[i].sum()) * seconds_per_step(processor.feature_extractor)})
    return out


def _silence_input(processor, dtype, device) -> torch.Tensor:
    """One second of silence as the model's input (a ZeRO-3 rank without batches still joins the gathers)."""
    rate = processor.feature_extractor.sampling_rate
    inputs, _ = featurize(processor.feature_extractor, [np.zeros(rate, np.float32)], rate)
    return torch.from_numpy(inputs).to(device=device, dtype=dtype)


def _is_zero3(accelerator) -> bool:
    from asr_dist.training.backend import zero_stage_of

    return zero_stage_of(accelerator) == 3


def score(records: list[dict], num_examples: int = 5, wall_seconds: float = 0.0, language: str = "en",
          primary: str = "auto") -> EvalResult:
    """Scores from gathered records (any order, any split over ranks): corpus-level error rates with
    jiwer over all pairs, never a mean of per-utterance rates; which ones, and the primary metric,
    follow the language (asr_dist.text.scoring)."""
    by_key: dict[str, dict] = {}
    for r in records:
        by_key.setdefault(r["key"], r)
    duplicates = len(records) - len(by_key)
    utts = [by_key[k] for k in sorted(by_key)]
    if not utts:
        raise ValueError("the eval set is empty: no utterance was decoded on any rank")
    refs, hyps = [u["ref"] for u in utts], [u["hyp"] for u in utts]
    tokens = sum(u["tokens"] for u in utts)
    subsets: dict[str, SubsetScore] = {}
    for name in sorted({u["subset"] for u in utts if u["subset"] is not None}):
        part = [u for u in utts if u["subset"] == name]
        subsets[name] = SubsetScore(**error_rates([u["ref"] for u in part], [u["hyp"] for u in part], language),
                                    num_samples=len(part))
    rates = error_rates(refs, hyps, language)
    return EvalResult(
        loss=sum(u["loss"] for u in utts) / max(tokens, 1),
        wer=rates["wer"], cer=rates["cer"], mer=rates["mer"], language=language,
        primary_metric=primary_metric(language, primary),
        num_samples=len(utts), num_tokens=tokens, audio_seconds=sum(u.get("seconds", 0.0) for u in utts),
        wall_seconds=wall_seconds, subsets=subsets,
        examples=[{"key": u["key"], "ref": u["ref"], "hyp": u["hyp"]} for u in utts[:num_examples]],
        duplicates_dropped=duplicates, utterances=utts,
    )


# ----------------------------------------------------------------------------- `asr-dist evaluate`


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-dist evaluate",
                                     description="WER/CER of an exported model folder on a shard folder.")
    parser.add_argument("model_dir", help="save_pretrained folder with the model and its processor")
    parser.add_argument("shard_dir", help="shard folder with index.json (written by `asr-dist prepare`)")
    parser.add_argument("--output", help="JSON file to write (default: MODEL_DIR/eval-<shard folder name>.json)")
    parser.add_argument("--subset-field", default=EvalConfig.subset_field,
                        help="metadata field for the per-subset breakdown ('' = none)")
    parser.add_argument("--num-examples", type=int, default=EvalConfig.num_examples)
    parser.add_argument("--max-batch-seconds", type=float, default=DataConfig.max_batch_seconds,
                        help="padded audio seconds per batch")
    parser.add_argument("--max-batch-samples", type=int, default=DataConfig.max_batch_samples)
    parser.add_argument("--num-workers", type=int, default=DataConfig.num_workers, help="shard reading processes")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--lm", help="LM folder (asr-dist lm build): also beam-search with it, scores side by side")
    parser.add_argument("--alpha", type=float, help="LM weight (default: the LM's tuned value)")
    parser.add_argument("--beta", type=float, help="word insertion bonus (default: the LM's tuned value)")
    parser.add_argument("--beam-width", type=int, default=100)
    parser.add_argument("--lm-backend", choices=["pyctcdecode", "torchaudio"], help="default: by the LM's units")
    parser.add_argument("--processes", type=int, default=0, help="LM decoding processes (0 = every core)")
    args = parser.parse_args(argv)

    model_dir, shard_dir = Path(args.model_dir), Path(args.shard_dir)
    if not (model_dir / "config.json").is_file():
        print(f"error: {model_dir} is not an exported model folder (no config.json)", file=sys.stderr)
        return 2
    if not (shard_dir / "index.json").is_file():
        print(f"error: {shard_dir} is not a shard folder (no index.json)", file=sys.stderr)
        return 2
    if args.lm:  # greedy and LM side by side, one process for the network, every core for the beam search
        from asr_dist.lm.score import main_evaluate

        return main_evaluate(args)

    from accelerate import Accelerator
    from transformers import AutoModelForCTC, AutoProcessor

    from asr_dist.data.index import ShardIndexError
    from asr_dist.data.loader import ShardReadError, build_eval_loader

    accelerator = Accelerator()
    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = AutoModelForCTC.from_pretrained(str(model_dir)).to(accelerator.device)
    data_cfg = DataConfig(eval_shards=str(shard_dir), sample_rate=processor.feature_extractor.sampling_rate,
                          max_batch_seconds=args.max_batch_seconds, max_batch_samples=args.max_batch_samples,
                          max_duration=args.max_batch_seconds, num_workers=args.num_workers)
    eval_cfg = EvalConfig(subset_field=args.subset_field, num_examples=args.num_examples)
    try:
        data_cfg.check("data")
        eval_cfg.check("eval")
        _check_same_language(processor, str(shard_dir), model_dir)
        loader = build_eval_loader(data_cfg, processor, rank=accelerator.process_index,
                                   world_size=accelerator.num_processes,
                                   unpadded=padding_changes_outputs(model, processor))
        result = evaluate(model, loader, processor, accelerator, eval_cfg, args.mixed_precision)
    except (ConfigError, ShardIndexError, ShardReadError, ValueError) as e:  # bad options or data: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    if accelerator.is_main_process:
        print(result.format())
        output = Path(args.output) if args.output else model_dir / f"eval-{shard_dir.resolve().name}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"model_dir": str(model_dir), "shard_dir": str(shard_dir),
                                      **result.to_dict(utterances=True)}, indent=1))
        print(f"wrote {output}")
    return 0


def _check_same_language(processor, shard_dir: str, model_dir: Path) -> None:
    """A model is scored on shards written with its own language's text rules."""
    from asr_dist.data.index import load_index

    shard_language = load_index(shard_dir).language
    model_language = processor_language(processor)
    if model_language is not None and model_language != shard_language:
        raise ValueError(f"{model_dir} was trained on {model_language!r} text but {shard_dir} was prepared with "
                         f"--language {shard_language}: references and hypotheses would be spelled differently")


if __name__ == "__main__":
    sys.exit(main())
