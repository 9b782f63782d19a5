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
    train = load_index(data_cfg.train_shards, data_cfg.train_index)
    sources[f"data.train_shards ({train.path})"] = train.language
    if data_cfg.eval_shards:
        evaluation = load_index(data_cfg.eval_shards, data_cfg.eval_index)
        sources[f"data.eval_shards ({evaluation.path})"] = evaluation.language
    recorded = processor_language(processor)
    if recorded is not None:
        sources["the processor's vocabulary"] = recorded
    if len(set(sources.values())) > 1:
        listed = "; ".join(f"{where}: {code!r}" for where, code in sources.items())
        raise LanguageMismatch(f"the run mixes the text rules of different languages: {listed}. Prepare every "
                               "split with the same `asr-dist prepare --language CODE` (the processor with the train split)")
    return train.language
