"""Greedy and LM-decoded WER/CER of an exported model on a shard folder, side by side.

The model's forward pass runs once (`collect_logits`); beam search then runs over the stored logits on every core,
which is also what `asr-dist lm tune` needs to try many alpha/beta pairs without re-running the network.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr_dist.evaluate import EvalResult, score
from asr_dist.lm.decode import DecodeStats, LMDecoder


@dataclass
class Utterance:
    key: str
    ref: str
    logits: np.ndarray  # [T, V] float32, padding frames cut
    seconds: float
    subset: str | None = None


def collect_logits(model_dir: str | Path, shard_dir: str | Path, max_batch_seconds: float = 60.0,
                   num_workers: int = 0, subset_field: str = "speaker"):
    """(processor, utterances, frame_seconds, forward_seconds) for every utterance of `shard_dir`, one process."""
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    from asr_dist.config import DataConfig
    from asr_dist.data.loader import build_eval_loader

    processor = Wav2Vec2Processor.from_pretrained(str(model_dir))
    model = Wav2Vec2ForCTC.from_pretrained(str(model_dir)).eval()
    rate = processor.feature_extractor.sampling_rate
    data_cfg = DataConfig(eval_shards=str(shard_dir), sample_rate=rate, max_batch_seconds=max_batch_seconds,
                          max_duration=max_batch_seconds, num_workers=num_workers)
    data_cfg.check("data")
    loader = build_eval_loader(data_cfg, processor, rank=0, world_size=1)
    use_mask = bool(getattr(processor.feature_extractor, "return_attention_mask", True))
    utts: list[Utterance] = []
    started = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            mask = batch["attention_mask"]
            logits = model(input_values=batch["input_values"].float(),
                           attention_mask=mask if use_mask else None).logits.float().numpy()
            lengths = model._get_feat_extract_output_lengths(mask.sum(-1)).tolist()
            metas = batch.get("meta") or [{} for _ in batch["keys"]]
            for i, key in enumerate(batch["keys"]):
                ref = metas[i].get("text")
                if ref is None:
                    ref = processor.tokenizer.decode([t for t in batch["labels"][i].tolist() if t >= 0],
                                                     group_tokens=False)
                utts.append(Utterance(key, ref, np.ascontiguousarray(logits[i, : int(lengths[i])]),
                                      float(mask[i].sum()) / rate,
                                      str(metas[i].get(subset_field, "unknown")) if subset_field else None))
    forward = time.perf_counter() - started
    frames = sum(len(u.logits) for u in utts)
    frame_seconds = sum(u.seconds for u in utts) / max(frames, 1)
    return processor, sorted(utts, key=lambda u: u.key), frame_seconds, forward


def greedy_texts(utts: list[Utterance], processor) -> list[str]:
    return processor.tokenizer.batch_decode([u.logits.argmax(-1).tolist() for u in utts])


def score_texts(utts: list[Utterance], hyps: list[str], num_examples: int = 5) -> EvalResult:
    records = [{"key": u.key, "ref": u.ref, "hyp": h, "subset": u.subset, "loss": 0.0, "tokens": 0,
                "seconds": u.seconds} for u, h in zip(utts, hyps)]
    return score(records, num_examples)


def evaluate_with_lm(model_dir, shard_dir, lm_dir, alpha=None, beta=None, beam_width: int = 100,
                     backend: str | None = None, processes: int | None = None, subset_field: str = "speaker",
                     num_examples: int = 5) -> dict:
    """{"greedy": EvalResult, "lm": EvalResult, "decode": {...}} for an exported model on a shard folder.
    The LM is opened and checked against the model's vocabulary before the model runs."""
    from transformers import Wav2Vec2Processor

    vocab = Wav2Vec2Processor.from_pretrained(str(model_dir)).tokenizer.get_vocab()
    with LMDecoder(lm_dir, vocab, alpha, beta, beam_width, backend, processes) as decoder:
        processor, utts, frame_seconds, forward = collect_logits(model_dir, shard_dir, subset_field=subset_field)
        stats = DecodeStats()
        hyps = decoder.decode([u.logits for u in utts], frame_seconds, stats)
        greedy = score_texts(utts, greedy_texts(utts, processor), num_examples)
        with_lm = score_texts(utts, hyps, num_examples)
        audio = sum(u.seconds for u in utts)
        decode = {"backend": decoder.backend, "alpha": decoder.alpha, "beta": decoder.beta,
                  "beam_width": beam_width, "processes": decoder.processes, "lm_dir": str(lm_dir),
                  "audio_seconds": audio, "forward_seconds": forward, "lm_decode_seconds": stats.wall_seconds,
                  "lm_decode_real_time_factor": stats.wall_seconds / audio if audio else 0.0,
                  "lm_decode_x_real_time": audio / stats.wall_seconds if stats.wall_seconds else 0.0}
    return {"greedy": greedy, "lm": with_lm, "decode": decode}


def main_evaluate(args) -> int:
    """`asr-dist evaluate MODEL SHARDS --lm DIR`: prints greedy and LM scores, writes both into the JSON."""
    from asr_dist.lm.store import LMError

    try:
        out = evaluate_with_lm(args.model_dir, args.shard_dir, args.lm, args.alpha, args.beta, args.beam_width,
                               args.lm_backend, args.processes or None, args.subset_field, args.num_examples)
    except LMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    g, lm, d = out["greedy"], out["lm"], out["decode"]
    print(f"greedy: WER {100 * g.wer:.2f}%  CER {100 * g.cer:.2f}%  ({g.num_samples} utterances)")
    print(f"LM ({d['backend']}, alpha {d['alpha']:g}, beta {d['beta']:g}, beam {d['beam_width']}): "
          f"WER {100 * lm.wer:.2f}%  CER {100 * lm.cer:.2f}%")
    print(f"LM decoding: {d['lm_decode_seconds']:.2f} s for {d['audio_seconds']:.1f} s of audio on "
          f"{d['processes']} processes = {d['lm_decode_x_real_time']:.0f}x real time "
          f"(RTF {d['lm_decode_real_time_factor']:.4f})")
    for ex in lm.examples:
        print(f"  [{ex['key']}]\n    REF: {ex['ref']}\n    HYP: {ex['hyp']}")
    output = Path(args.output) if args.output else Path(args.model_dir) / f"eval-lm-{Path(args.shard_dir).resolve().name}.json"
    output.write_text(json.dumps({"model_dir": str(args.model_dir), "shard_dir": str(args.shard_dir),
                                  "greedy": g.to_dict(), "lm": lm.to_dict(utterances=True), "decode": d}, indent=1))
    print(f"wrote {output}")
    return 0


# ----------------------------------------------------------------------------- in training


def check_lm_for_training(lm_dir, processor) -> None:
    """At the start of a run with `eval.lm` set: the LM must open and fit the vocabulary now, not after training."""
    from asr_dist.lm.store import check_vocabulary, open_lm

    check_vocabulary(open_lm(lm_dir), processor.tokenizer.get_vocab())


def final_eval_with_lm(export_dir, eval_shards, lm_dir, run_dir, subset_field: str = "speaker") -> dict:
    """After training (main process): greedy and LM scores of the exported model, added to RUN/eval.json as "lm"
    (the greedy scores already there stay as they are), and returned."""
    out = evaluate_with_lm(export_dir, eval_shards, lm_dir, subset_field=subset_field)
    lm, d = out["lm"], out["decode"]
    summary = {"wer": lm.wer, "cer": lm.cer, "greedy_wer": out["greedy"].wer, "greedy_cer": out["greedy"].cer,
               "subsets": {k: {"wer": v.wer, "cer": v.cer} for k, v in lm.subsets.items()},
               "examples": lm.examples, **{k: d[k] for k in ("backend", "alpha", "beta", "beam_width", "lm_dir",
                                                             "lm_decode_x_real_time")}}
    eval_file = Path(run_dir) / "eval.json"
    saved = json.loads(eval_file.read_text()) if eval_file.is_file() else {}
    eval_file.write_text(json.dumps({**saved, "lm": summary}, indent=1))
    return summary
