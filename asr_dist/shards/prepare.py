"""`asr-dist prepare SOURCE OUT_DIR`: write a corpus into WebDataset shards + index.json.

Steps: read the utterance list (asr_dist.corpus.readers), normalize transcripts (asr_dist.text), drop
duplicate keys, sort by key, then check/resample/FLAC-encode in a process pool
(asr_dist.shards.encode) while this process writes the results, in key order, into shards of about
`target_shard_mb` (asr_dist.shards.writer). Sorting first and writing in order makes the shards and
index byte-identical for the same input whatever the worker count.

Bad inputs never stop the run: each goes to rejects.jsonl with its file and reason, and the run ends
with a summary table. It fails (raises `NothingUsable`, exit status 1) only when nothing is left.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from asr_dist.corpus.readers import CorpusError, Utterance, open_corpus
from asr_dist.shards.encode import AudioLimits, EncodedSample, Rejected, encode_utterance, init_worker
from asr_dist.shards.writer import INDEX_NAME, ShardSink, remove_stale_shards, write_index
from asr_dist.text import LANGUAGES, TextRules, UnnormalizableText, build_processor, normalize_text, vocab_report

REJECTS_NAME = "rejects.jsonl"
WARNINGS_NAME = "warnings.jsonl"  # kept samples with a problem worth knowing (a manifest's wrong duration)
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # what make_key produces; WebDataset splits keys at dots
PROCESSOR_DIR = "processor"


class NothingUsable(RuntimeError):
    """Every input was rejected: there is nothing to train on."""


@dataclass
class PrepareSummary:
    out_dir: str
    prefix: str
    num_inputs: int
    num_kept: int
    kept_seconds: float
    num_shards: int
    shard_bytes: int
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    warned: dict[str, int] = field(default_factory=dict)  # kept, but see warnings.jsonl: reason -> count
    elapsed_s: float = 0.0
    processor_dir: str | None = None
    language: str = "en"
    vocab_size: int = 0  # with the processor: labels, special tokens included
    rare_chars: str = ""  # characters seen fewer than min_char_count times: spelled [UNK]
    rare_share: float = 0.0  # their share of the transcripts' characters

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def hours_per_minute(self) -> float:
        return self.kept_seconds / 3600 / max(self.elapsed_s / 60, 1e-9)

    def table(self) -> str:
        rows = [("inputs", f"{self.num_inputs}", ""),
                ("kept", f"{self.num_kept}", f"{self.kept_seconds / 3600:.3f} h of audio"),
                ("rejected", f"{self.num_rejected}", f"see {Path(self.out_dir) / REJECTS_NAME}" if self.num_rejected else "")]
        rows += [(f"  {reason}", f"{count}", "") for reason, count in sorted(self.rejected.items())]
        if self.warned:
            rows.append(("kept with warnings", f"{sum(self.warned.values())}",
                         f"see {Path(self.out_dir) / WARNINGS_NAME}"))
            rows += [(f"  {reason}", f"{count}", "") for reason, count in sorted(self.warned.items())]
        rows += [("shards", f"{self.num_shards}", f"{self.shard_bytes / 1e6:.1f} MB in {self.out_dir}"),
                 ("time", f"{self.elapsed_s:.1f} s", f"{self.hours_per_minute:.2f} audio h/min")]
        if self.processor_dir:
            rows.append(("processor", f"{self.vocab_size}", f"labels, {self.processor_dir}"))
            if self.rare_chars:
                shown = self.rare_chars[:20] + ("..." if len(self.rare_chars) > 20 else "")
                rows.append(("  -> [UNK]", f"{len(self.rare_chars)}",
                             f"rare characters, {100 * self.rare_share:.2f} % of the text: {shown}"))
        rows.append(("language", self.language, LANGUAGES[self.language].name))
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value:>9}  {note}".rstrip() for name, value, note in rows)


def write_shards(
    utterances: Iterable[Utterance],
    out_dir: str | Path,
    *,
    prefix: str = "train",
    target_shard_mb: float = 100.0,
    num_workers: int = 2,
    sample_rate: int = 16000,
    min_duration: float = 0.2,
    max_duration: float = 30.0,
    write_processor: bool = False,
    text_rules: TextRules | None = None,
    min_char_count: int = 1,
    progress: bool = False,
    ctc_layers: tuple | None = None,
) -> PrepareSummary:
    """Write `utterances` into OUT_DIR/PREFIX-NNNNNN.tar + index.json + rejects.jsonl
    (+ OUT_DIR/processor, vocabulary from the kept transcripts, when `write_processor`; characters seen
    fewer than `min_char_count` times get no label). index.json records the language and its text rules. `ctc_layers`: the
    model's samples -> frames chain for the too_short_for_ctc check (default wav2vec2's, 320 samples/frame)."""
    started = time.monotonic()
    if target_shard_mb <= 0:
        raise ValueError(f"target_shard_mb = {target_shard_mb}: expected a positive size in MB")
    if not 0 <= min_duration < max_duration:
        raise ValueError(f"min_duration {min_duration} / max_duration {max_duration}: expected 0 <= min < max")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX_NAME).unlink(missing_ok=True)  # no index until the new shards are all complete

    utterances = list(utterances)
    rules = (text_rules or TextRules()).resolved()
    jobs, rejects = _normalized_unique(utterances, rules)
    limits = AudioLimits(sample_rate=sample_rate, min_duration=min_duration, max_duration=max_duration,
                         **({"ctc_layers": tuple(ctc_layers)} if ctc_layers else {}))
    sink = ShardSink(out, prefix, int(target_shard_mb * 1e6), sample_rate)
    kept_texts: list[str] = []
    warnings: list[Rejected] = []  # same record shape as a reject, for kept samples
    for done, result in enumerate(_encode_in_order(jobs, limits, num_workers), 1):
        if isinstance(result, Rejected):
            rejects.append(result)
        else:
            sink.add(result)
            kept_texts.append(result.text)
            warnings += [Rejected(result.key, result.source, reason, detail)
                         for reason, detail in result.warnings.items()]
        if progress and (done % 200 == 0 or done == len(jobs)):
            print(f"  {done}/{len(jobs)} encoded, {len(sink.shards)} shard(s)", file=sys.stderr, flush=True)
    index = sink.finish()
    index["language"] = rules.language  # what training, evaluation and export apply (absent = English)
    index["text_rules"] = rules.to_dict()
    for shard in index["shards"]:
        shard["language"] = rules.language  # so that shards merged from two corpora show their mix
    remove_stale_shards(out, prefix, {s["name"] for s in index["shards"]})

    rejects.sort(key=lambda r: (r.key, r.source, r.reason))
    _write_rejects(out / REJECTS_NAME, rejects)
    _write_rejects(out / WARNINGS_NAME, warnings)
    summary = PrepareSummary(
        out_dir=str(out), prefix=prefix, num_inputs=len(utterances), num_kept=index["num_samples"],
        kept_seconds=index["total_seconds"], num_shards=len(index["shards"]),
        shard_bytes=sum(s["num_bytes"] for s in index["shards"]),
        rejected=dict(Counter(r.reason for r in rejects)), warned=dict(Counter(w.reason for w in warnings)),
        language=rules.language)
    if not kept_texts:
        summary.elapsed_s = time.monotonic() - started
        what = f"all {len(utterances)} inputs were rejected" if utterances else "the corpus lists no utterances"
        raise NothingUsable(f"{what}; see {out / REJECTS_NAME}\n{summary.table()}")
    if write_processor:
        build_processor(kept_texts, out / PROCESSOR_DIR, sample_rate=sample_rate, min_count=min_char_count,
                        language=rules.language)
        report = vocab_report(kept_texts, min_char_count)
        summary.processor_dir = str(out / PROCESSOR_DIR)
        summary.vocab_size, summary.rare_chars, summary.rare_share = report.vocab_size, report.rare_chars, report.rare_share
    write_index(out, index)
    summary.elapsed_s = time.monotonic() - started
    return summary


def _normalized_unique(utterances: list[Utterance], rules: TextRules) -> tuple[list[Utterance], list[Rejected]]:
    """Utterances with normalized text, one per key, sorted by key; the rest as rejects.
    Of several utterances with one key, the one with the smallest audio path is kept."""
    jobs: list[Utterance] = []
    rejects: list[Rejected] = []
    first_with_key: dict[str, Utterance] = {}
    for utt in sorted(utterances, key=lambda u: (u.key, u.audio)):
        if not _SAFE_KEY.fullmatch(utt.key):
            rejects.append(Rejected(utt.key, utt.audio, "bad_key", f"key {utt.key!r}: use A-Za-z0-9_- only"))
            continue
        if utt.key in first_with_key:
            rejects.append(Rejected(utt.key, utt.audio, "duplicate_key", f"key also used by {first_with_key[utt.key].audio}"))
            continue
        first_with_key[utt.key] = utt
        try:
            text = normalize_text(utt.text, rules)
        except UnnormalizableText as e:
            reason = "foreign_script" if e.foreign else "unnormalizable_text"
            rejects.append(Rejected(utt.key, utt.audio, reason, f"{e}: {utt.text!r}"))
            continue
        if not text:
            detail = utt.meta.get("problem") or f"transcript {utt.text!r} is empty after normalization"
            rejects.append(Rejected(utt.key, utt.audio, "empty_text", detail))
            continue
        meta = {k: v for k, v in utt.meta.items() if k != "problem"}
        jobs.append(replace(utt, text=text, meta=meta))
    return jobs, rejects


def _encode_in_order(jobs: list[Utterance], limits: AudioLimits, num_workers: int) -> Iterator[EncodedSample | Rejected]:
    """Encode in a process pool, yielding results in job order (the shard writer stays in order)."""
    encode = partial(encode_utterance, limits=limits)
    if num_workers <= 1 or len(jobs) < 2:
        yield from map(encode, jobs)
        return
    # spawn, not fork: the parent may hold torch/OpenMP threads, which forked children can deadlock on
    context = multiprocessing.get_context("spawn")
    chunksize = max(1, min(16, len(jobs) // (num_workers * 8)))
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=context, initializer=init_worker) as pool:
        yield from pool.map(encode, jobs, chunksize=chunksize)


def _write_rejects(path: Path, rejects: list[Rejected]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rejects:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asr-dist prepare",
        description="Write a corpus (LibriSpeech-layout folder, .jsonl or .tsv manifest) into WebDataset "
                    "shards with index.json and rejects.jsonl.")
    parser.add_argument("source", help="LibriSpeech-layout folder, Hugging Face dataset folder (save_to_disk), "
                                       "or a .jsonl/.json (NeMo)/.tsv manifest (docs/data_sources.md)")
    parser.add_argument("out_dir", help="shard folder to write (e.g. data/shards/train)")
    parser.add_argument("--prefix", default="train", help="shard name prefix (default: train)")
    parser.add_argument("--processor", action="store_true",
                        help="also write OUT_DIR/processor (vocabulary from these transcripts: use on the train split only)")
    parser.add_argument("--workers", type=int, default=min(len(os.sched_getaffinity(0)), 8),
                        help="encoding processes (default: the cores this process may use, at most 8)")
    parser.add_argument("--shard-mb", type=float, default=100.0, help="target shard size in MB (default 100)")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--min-duration", type=float, default=0.2, help="seconds; shorter audio is rejected")
    parser.add_argument("--max-duration", type=float, default=30.0, help="seconds; longer audio is rejected")
    parser.add_argument("--unspeakable", choices=("reject", "drop"), default="reject",
                        help="transcripts with digits/symbols: reject the utterance (default) or drop the characters")
    parser.add_argument("--keep-dashes", action="store_true", help="glue hyphenated words instead of splitting them")
    parser.add_argument("--language", default="en", choices=sorted(LANGUAGES), metavar="CODE",
                        help="ISO 639-1 code of the transcripts' language: its letters, case and spacing rules "
                             f"(default en; known: {', '.join(sorted(LANGUAGES))}); recorded in index.json")
    parser.add_argument("--strip-accents", action=argparse.BooleanOptionalAction, default=None,
                        help="strip accents (niño -> nino); default: the language's rule (English only strips)")
    parser.add_argument("--min-char-count", type=int, default=1,
                        help="with --processor: characters seen fewer times get no label and are spelled [UNK] (default 1)")
    parser.add_argument("--model-config", default="",
                        help="check CTC lengths against this model's frame rate: a train YAML (its model section), "
                             "a model folder or hub id (default: wav2vec2's 320 samples per frame)")
    args = parser.parse_args(argv)

    rules = TextRules(language=args.language, unspeakable=args.unspeakable, dashes_to_spaces=not args.keep_dashes,
                      strip_accents=args.strip_accents)
    print(f"asr-dist prepare: {args.source} -> {args.out_dir} (prefix {args.prefix}, {args.workers} workers)",
          file=sys.stderr)
    try:
        ctc_layers = None
        if args.model_config:
            from asr_dist.families import frame_layers_for

            ctc_layers = frame_layers_for(args.model_config)
            print(f"CTC length check: samples -> frames through {ctc_layers}", file=sys.stderr)
        summary = write_shards(
            open_corpus(args.source), args.out_dir, prefix=args.prefix, target_shard_mb=args.shard_mb,
            num_workers=args.workers, sample_rate=args.sample_rate, min_duration=args.min_duration,
            max_duration=args.max_duration, write_processor=args.processor, text_rules=rules,
            min_char_count=args.min_char_count, progress=True,
            ctc_layers=ctc_layers)
    except (CorpusError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NothingUsable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
