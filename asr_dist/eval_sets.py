"""Named eval sets (`data.eval: {name: shards}`): one loader per set, WER/CER per set.

The plain `data.eval_shards` is the set named `eval`; with it alone everything is exactly as before
(`evaluate.evaluate` on one loader, keys eval/...). With several sets each set's scores go to
metrics.jsonl and TensorBoard as eval_<name>/wer, eval_<name>/cer, ...; the *primary* set
(checkpoint.best_eval_set, else the first set) is also logged as eval/... and is the WER that
checkpoint.keep_best follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from asr_dist.evaluate import EvalResult, evaluate


class EvalSetError(ValueError):
    """An eval set that cannot be opened (the message names the set)."""


def build_eval_sets(data_cfg, processor, *, rank: int, world_size: int, **options):
    """One EvalLoader per set, or a single EvalLoader for the plain data.eval_shards; None without eval data.
    `options` go to data.loader.build_eval_loader."""
    from asr_dist.data.loader import build_eval_loader

    sets = data_cfg.eval_sets()
    if not sets:
        return None
    if list(sets) == ["eval"]:
        return build_eval_loader(data_cfg, processor, rank=rank, world_size=world_size, **options)
    loaders = {}
    for name, (shards, index) in sets.items():
        one = _with_eval_shards(data_cfg, shards, index)
        try:
            loaders[name] = build_eval_loader(one, processor, rank=rank, world_size=world_size, **options)
        except (OSError, ValueError) as exc:
            raise EvalSetError(f"eval set {name!r} (data.eval.{name} = {shards}): {exc}") from exc
    return loaders


def _with_eval_shards(data_cfg, shards: str, index: str):
    import dataclasses
    return dataclasses.replace(data_cfg, eval_shards=shards, eval_index=index)


@dataclass
class NamedEvalResult:
    """Scores of several eval sets; `wer`/`cer`/`loss` are the primary set's."""

    sets: dict[str, EvalResult]
    primary: str

    @property
    def wer(self) -> float:
        return self.sets[self.primary].wer

    @property
    def cer(self) -> float:
        return self.sets[self.primary].cer

    @property
    def loss(self) -> float:
        return self.sets[self.primary].loss

    @property
    def examples(self) -> list[dict]:
        return [{**e, "key": f"{name}:{e['key']}"} for name, r in self.sets.items() for e in r.examples]

    def checkpoint_metrics(self) -> dict[str, float | str]:
        """The primary set's, which `checkpoint.keep_best` ranks by (checkpoint.best_eval_set)."""
        return {**self.sets[self.primary].checkpoint_metrics(), "eval_set": self.primary}

    def scalars(self) -> dict[str, float]:
        out = self.sets[self.primary].scalars("eval/")
        for name, result in self.sets.items():
            out.update(result.scalars(f"eval_{name}/"))
        return out

    def format(self) -> str:
        return "\n".join(f"[{name}{' (primary)' if name == self.primary else ''}] " + r.format()
                         for name, r in self.sets.items())

    def to_dict(self, utterances: bool = False) -> dict:
        """The primary set's fields at the top (the single-set shape), every set under "sets"."""
        return {**self.sets[self.primary].to_dict(utterances), "primary_set": self.primary,
                "sets": {name: r.to_dict(utterances) for name, r in self.sets.items()}}


def evaluate_sets(model, loaders, processor, accelerator, cfg_eval, *, mixed_precision: str = "no",
                  primary: str = "") -> EvalResult | NamedEvalResult:
    """evaluate() on each set (collective: every rank calls it with the same sets)."""
    if not isinstance(loaders, dict):
        return evaluate(model, loaders, processor, accelerator, cfg_eval, mixed_precision=mixed_precision)
    results = {name: evaluate(model, loader, processor, accelerator, cfg_eval, mixed_precision=mixed_precision)
               for name, loader in loaders.items()}
    return NamedEvalResult(results, primary or next(iter(results)))
