"""alpha (LM weight) / beta (word bonus) grid search on a dev set; the best pair is stored in the LM's lm.json.

The network runs once; each grid point is one beam-search pass over the stored logits. The dev set used must be
one the LM was not built from (`asr-dist lm build --protect DEV` guarantees that).
"""

from __future__ import annotations

import json
from pathlib import Path

from asr_dist.lm.build import META_FILE
from asr_dist.lm.decode import LMDecoder
from asr_dist.lm.score import collect_logits, greedy_texts, score_texts

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
DEFAULT_BETAS = (0.0, 0.5, 1.0, 2.0, 3.0)


def tune(model_dir, dev_shards, lm_dir, alphas=DEFAULT_ALPHAS, betas=DEFAULT_BETAS, beam_width: int = 100,
         backend: str | None = None, processes: int | None = None, write: bool = True) -> dict:
    """Try every (alpha, beta); returns {"alpha", "beta", "wer", "cer", "greedy_wer", "grid": [...]}, and writes it
    into LM_DIR/lm.json as "tuned" (which `--lm` uses when no --alpha/--beta is given)."""
    from transformers import Wav2Vec2Processor

    vocab = Wav2Vec2Processor.from_pretrained(str(model_dir)).tokenizer.get_vocab()
    grid = []
    with LMDecoder(lm_dir, vocab, alphas[0], betas[0], beam_width, backend, processes) as decoder:
        processor, utts, _, _ = collect_logits(model_dir, dev_shards, subset_field="")
        greedy = score_texts(utts, greedy_texts(utts, processor))
        for a in alphas:
            for b in betas:
                decoder.set_params(a, b)
                r = score_texts(utts, decoder.decode([u.logits for u in utts]))
                grid.append({"alpha": a, "beta": b, "wer": r.wer, "cer": r.cer})
    best = min(grid, key=lambda g: (g["wer"], g["cer"], g["alpha"], g["beta"]))
    tuned = {**best, "greedy_wer": greedy.wer, "greedy_cer": greedy.cer, "dev": str(dev_shards),
             "model_dir": str(model_dir), "beam_width": beam_width, "backend": decoder.backend,
             "utterances": len(utts), "grid": grid}
    if write:
        meta_file = Path(lm_dir) / META_FILE
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        meta["tuned"] = tuned
        meta_file.write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    return tuned
