"""The LM the demo decodes with: built from the demo's own text sources, never from its dev sentences.

`build_demo_lm` is what asr_dist/demo.py calls: every clean sentence of the synthetic corpus' text sources (the
pool the training and dev utterances were drawn from), with the dev shards' sentences left out by normalized-text
hash, as a KenLM 4-gram. The held-out sentences therefore test what a real LM does: predict unseen sentences from
the same kind of text.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from asr_dist.lm.build import LMBuildConfig, build_lm


def build_demo_lm(out_dir: str | Path, dev_shards: Iterable[str | Path], sources: tuple[str, ...] | None = None,
                  order: int = 4) -> dict:
    """Write the demo's LM folder; returns its lm.json content (sentences used, dev sentences dropped, ...)."""
    from asr_dist.corpus.texts import DEFAULT_TEXT_SOURCES, load_sentences

    sentences = [s.transcript for s in load_sentences(tuple(sources or DEFAULT_TEXT_SOURCES))]
    return build_lm(out_dir, sentences=sentences, protect_shards=list(dev_shards), drop_overlap=True,
                    cfg=LMBuildConfig(order=order))
