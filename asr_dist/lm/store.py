"""An LM folder (what `asr-dist lm build` writes) loaded and checked before any audio is decoded.

A missing folder or file, an unreadable model and an LM whose alphabet the acoustic model cannot spell are
errors here, with the file and the reason, never a silent fall-back to greedy decoding mid-run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from asr_dist.lm.build import ARPA_FILE, CHAR_SPACE, META_FILE, UNIGRAMS_FILE


class LMError(ValueError):
    """The LM folder is missing, corrupt, or does not fit the model's vocabulary."""


@dataclass
class LMFolder:
    path: Path
    meta: dict

    @property
    def units(self) -> str:
        return self.meta["units"]

    @property
    def model_file(self) -> Path:
        return self.path / self.meta["model_file"]

    @property
    def arpa_file(self) -> Path:
        return self.path / ARPA_FILE

    @property
    def unigrams(self) -> list[str]:
        return (self.path / UNIGRAMS_FILE).read_text(encoding="utf-8").split()

    def params(self, alpha: float | None = None, beta: float | None = None) -> tuple[float, float]:
        """alpha (LM weight) and beta (word insertion bonus): given > tuned > built-in defaults."""
        tuned = self.meta.get("tuned") or {}
        return (float(alpha if alpha is not None else tuned.get("alpha", self.meta["alpha"])),
                float(beta if beta is not None else tuned.get("beta", self.meta["beta"])))


def open_lm(path: str | Path) -> LMFolder:
    """Read lm.json and check that the model and unigram files are there and that KenLM can load the model."""
    path = Path(path)
    meta_file = path / META_FILE
    if not path.is_dir():
        raise LMError(f"LM folder {path} does not exist (build one with `asr-dist lm build`)")
    if not meta_file.is_file():
        raise LMError(f"{path} is not an LM folder: no {META_FILE} (build one with `asr-dist lm build`)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        lm = LMFolder(path, meta)
        _ = lm.units, lm.model_file, meta["alpha"], meta["beta"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise LMError(f"{meta_file} is not a valid LM description ({type(e).__name__}: {e})") from None
    for f in (lm.model_file, path / UNIGRAMS_FILE):
        if not f.is_file():
            raise LMError(f"LM folder {path} lacks {f.name}")
    load_kenlm(lm.model_file)
    return lm


def load_kenlm(model_file: Path):
    """kenlm.Model, or LMError naming the file when KenLM cannot read it."""
    import kenlm

    try:
        return kenlm.Model(str(model_file))
    except (OSError, RuntimeError, ValueError) as e:
        raise LMError(f"{model_file}: KenLM cannot load it, corrupt or not an LM ({str(e).strip()[:300]})") from None


def check_vocabulary(lm: LMFolder, tokenizer_vocab: dict[str, int]) -> None:
    """Every character of the LM's words must be one the acoustic model can emit (else its words are unreachable
    and the LM was built for another alphabet, e.g. lower case or another script)."""
    emittable = {t for t in tokenizer_vocab if len(t) == 1}
    if lm.units == "char":
        tokens = set(lm.unigrams) - {"<s>", "</s>", "<unk>"}
        missing = sorted(t for t in tokens if t not in emittable and t != CHAR_SPACE)
    else:
        missing = sorted({c for c in lm.meta.get("alphabet") or "".join(lm.unigrams)} - emittable)
    if missing:
        raise LMError(f"LM {lm.path} uses characters the model's vocabulary lacks: {''.join(missing[:40])!r} "
                      f"({len(missing)} in all); it was built for another alphabet")
