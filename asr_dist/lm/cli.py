"""`asr-dist lm build ...` and `asr-dist lm tune ...`."""

from __future__ import annotations

import argparse
import sys

from asr_dist.lm.build import UNITS, LMBuildConfig, LMBuildError, build_lm


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asr-dist lm", description="n-gram language models for CTC beam search")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="estimate an n-gram LM (KenLM) from text files and/or shard transcripts")
    b.add_argument("out", help="LM folder to write (lm.arpa, lm.bin, unigrams.txt, lm.json)")
    b.add_argument("--text", action="append", default=[], help="text file, one sentence a line (repeatable)")
    b.add_argument("--shards", action="append", default=[], help="training shard folder: its transcripts (repeatable)")
    b.add_argument("--protect", action="append", default=[],
                   help="dev/test shard folder whose sentences must not be in the LM (repeatable)")
    b.add_argument("--drop-overlap", action="store_true", help="leave protected sentences out instead of refusing")
    b.add_argument("--order", type=int, default=LMBuildConfig.order)
    b.add_argument("--units", choices=UNITS, default="word", help="word n-grams, or characters (Chinese)")
    b.add_argument("--prune", default="", help="lmplz --prune thresholds, e.g. 0,0,1")
    b.add_argument("--no-binary", action="store_true", help="ARPA only (no KenLM binary)")
    t = sub.add_parser("tune", help="grid-search alpha/beta on a dev set and store them in the LM folder")
    t.add_argument("model_dir", help="exported model folder")
    t.add_argument("dev_shards", help="dev shard folder (not used to build the LM)")
    t.add_argument("--lm", required=True, help="LM folder")
    t.add_argument("--alphas", type=_floats, default=None, help="comma-separated, e.g. 0,0.5,1")
    t.add_argument("--betas", type=_floats, default=None)
    t.add_argument("--beam-width", type=int, default=100)
    t.add_argument("--processes", type=int, default=0, help="decoding processes (0 = every core)")
    args = p.parse_args(argv)

    from asr_dist.lm.store import LMError

    try:
        if args.cmd == "build":
            cfg = LMBuildConfig(order=args.order, units=args.units, binary=not args.no_binary,
                                prune=tuple(int(x) for x in args.prune.split(",") if x.strip()))
            meta = build_lm(args.out, args.text, args.shards, args.protect, cfg, drop_overlap=args.drop_overlap)
            print(f"wrote {args.out}: {meta['order']}-gram over {meta['units']}s, {meta['sentences']} sentences, "
                  f"{meta['tokens']} tokens, vocabulary {meta['vocabulary']} ({meta['model_file']}); skipped "
                  f"{meta['skipped_unnormalizable']} unnormalizable, dropped {meta['dropped_overlap']} protected")
        else:
            from asr_dist.lm.tune import DEFAULT_ALPHAS, DEFAULT_BETAS, tune

            r = tune(args.model_dir, args.dev_shards, args.lm, args.alphas or DEFAULT_ALPHAS,
                     args.betas or DEFAULT_BETAS, args.beam_width, processes=args.processes or None)
            print(f"best alpha {r['alpha']:g} beta {r['beta']:g}: WER {100 * r['wer']:.2f}% CER {100 * r['cer']:.2f}% "
                  f"(greedy WER {100 * r['greedy_wer']:.2f}% CER {100 * r['greedy_cer']:.2f}%); stored in {args.lm}")
    except (LMBuildError, LMError) as e:
        print(f"asr-dist lm: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
