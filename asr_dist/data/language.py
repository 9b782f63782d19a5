"""One run, one language: the training shards, the eval shards and the processor must share text rules.

A model trained on Spanish spelling and scored on German references (or a vocabulary built for
Chinese) gives numbers that mean nothing, so training refuses to start, naming what disagrees.
`load_index` already refuses one index whose shards mix languages.
"""

from __future__ import annotations

from asr_dist.data.index import load_index


class LanguageMismatch(ValueError):
    """The shard folders or the processor of a run were prepared for different languages."""


def run_language(data_cfg, processor) -> str:
    """The language of the run's training shards, after checking that the eval shards and the
    processor (when it records one) agree. Raises `LanguageMismatch` naming the sources."""
    from asr_dist.text import processor_language

    sources: dict[str, str] = {}
    for source in data_cfg.train_sources():  # data.train (weighted sources) or data.train_shards
        index = load_index(source.shards, source.index)
        sources[f"training source {source.name!r} ({index.path})"] = index.language
    for name, (shards, index_path) in data_cfg.eval_sets().items():
        index = load_index(shards, index_path)
        sources[f"eval set {name!r} ({index.path})"] = index.language
    recorded = processor_language(processor)
    if recorded is not None:
        sources["the processor's vocabulary"] = recorded
    if len(set(sources.values())) > 1:
        listed = "; ".join(f"{where}: {code!r}" for where, code in sources.items())
        raise LanguageMismatch(f"the run mixes the text rules of different languages: {listed}. Prepare every "
                               "split with the same `asr-dist prepare --language CODE` (the processor with the train split)")
    return next(iter(sources.values()))
