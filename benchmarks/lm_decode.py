"""pyctcdecode vs torchaudio (flashlight-text) CTC beam search with the same KenLM: WER, CER and speed.

    python benchmarks/lm_decode.py MODEL_DIR DEV_SHARDS LM_DIR [--beams 16,32,100] [--processes N]

The network runs once; each backend/beam then decodes the stored logits with every core (or --processes).
Prints one line per setting: WER, CER, decoding seconds and x real time (audio seconds / decoding seconds).
"""

from __future__ import annotations

import argparse
import json

from asr_dist.lm.decode import DecodeStats, LMDecoder
from asr_dist.lm.score import collect_logits, greedy_texts, score_texts


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("dev_shards")
    p.add_argument("lm_dir")
    p.add_argument("--beams", default="16,32,100")
    p.add_argument("--processes", type=int, default=0)
    p.add_argument("--backends", default="pyctcdecode,torchaudio")
    args = p.parse_args()
    processor, utts, frame_s, forward = collect_logits(args.model_dir, args.dev_shards, subset_field="")
    audio = sum(u.seconds for u in utts)
    g = score_texts(utts, greedy_texts(utts, processor))
    rows = [{"backend": "greedy", "wer": g.wer, "cer": g.cer, "audio_s": audio, "forward_s": forward}]
    print(json.dumps(rows[0]))
    vocab = processor.tokenizer.get_vocab()
    for backend in args.backends.split(","):
        for beam in map(int, args.beams.split(",")):
            with LMDecoder(args.lm_dir, vocab, beam_width=beam, backend=backend,
                           processes=args.processes or None) as dec:
                stats = DecodeStats()
                r = score_texts(utts, dec.decode([u.logits for u in utts], frame_s, stats))
                row = {"backend": backend, "beam": beam, "alpha": dec.alpha, "beta": dec.beta,
                       "processes": dec.processes, "wer": r.wer, "cer": r.cer,
                       "decode_s": round(stats.wall_seconds, 2), "x_real_time": round(audio / stats.wall_seconds, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
