"""CTC beam search with an n-gram LM over logits, on every core.

Two backends, chosen per LM folder:
* `pyctcdecode` (word LMs): the decoder transformers' `Wav2Vec2ProcessorWithLM` and `pipeline()` use, so an export
  decodes exactly as `asr-dist evaluate --lm` does. Out-of-vocabulary words stay possible (scored as <unk>).
* `torchaudio` (flashlight-text's CTC decoder): lexicon-free, the LM scores every token. Used for character LMs
  (Chinese: no word delimiter, pyctcdecode only scores whole words); for word LMs it is lexicon-constrained and is
  kept for the speed/WER comparison in docs/lm.md.

Utterances are independent, so a fork-started process pool splits them over the cores; each worker inherits the
decoder built (and checked) in the parent before the pool starts.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass

import numpy as np

from asr_dist.lm.build import CHAR_SPACE
from asr_dist.lm.store import LMError, LMFolder, check_vocabulary, load_kenlm, open_lm

BACKENDS = ("pyctcdecode", "torchaudio")
_ACTIVE = None  # the decoder the pool's workers use (inherited through fork)


@dataclass
class DecodeStats:
    utterances: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def real_time_factor(self) -> float:
        """Decoding time over audio time (0.02 = 50x faster than real time)."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def labels_of(tokenizer_vocab: dict[str, int]) -> list[str]:
    """The CTC output labels in id order (what pyctcdecode's alphabet and torchaudio's tokens want)."""
    by_id = sorted(tokenizer_vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise LMError("the tokenizer's ids are not 0..V-1; cannot map logits to labels")
    return [t for t, _ in by_id]


def build_pyctcdecode(lm: LMFolder, labels: list[str], alpha: float, beta: float):
    from pyctcdecode import Alphabet, BeamSearchDecoderCTC, LanguageModel

    if lm.units != "word":
        raise LMError(f"LM {lm.path} has {lm.units} units; pyctcdecode scores words: use backend 'torchaudio'")
    model = LanguageModel(load_kenlm(lm.model_file), unigrams=lm.unigrams, alpha=alpha, beta=beta)
    return BeamSearchDecoderCTC(Alphabet.build_alphabet(labels), model)


LN10 = 2.302585092994046  # KenLM scores are log10; CTC scores are natural logs (pyctcdecode converts the same way)


def _kenlm_token_lm(model, tokens: list[str]):
    """A character n-gram for flashlight's lexicon-free search through torchaudio's CTCDecoderLM interface.

    flashlight-text's built-in KenLM binding maps tokens to LM words by byte string and misses non-ASCII ones (a
    Chinese character LM scored every token as <unk>; tests/test_lm.py), so the LM is queried through the kenlm
    module instead. The word delimiter is not an LM token: it leaves the state as it is."""
    import kenlm
    from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

    class KenLMTokens(CTCDecoderLM):
        def __init__(self):
            super().__init__()
            self.states: dict = {}

        def start(self, start_with_nothing: bool):
            self.states.clear()
            state, ken = CTCDecoderLMState(), kenlm.State()
            (model.NullContextWrite if start_with_nothing else model.BeginSentenceWrite)(ken)
            self.states[state] = ken
            return state

        def score(self, state, usr_token_idx: int):
            child = state.child(usr_token_idx)
            token = tokens[usr_token_idx]
            if child not in self.states:
                if token == CHAR_SPACE:
                    self.states[child], lp = self.states[state], 0.0
                else:
                    out = kenlm.State()
                    lp = model.BaseScore(self.states[state], token, out) * LN10
                    self.states[child] = out
                self.states[(child, "score")] = lp
            return child, self.states[(child, "score")]

        def finish(self, state):
            out = kenlm.State()
            return state.child(-1), model.BaseScore(self.states[state], "</s>", out) * LN10

    return KenLMTokens()


class _TorchaudioDecoder:
    """flashlight-text's decoder behind the same `decode(logits) -> str` as pyctcdecode's."""

    def __init__(self, lm: LMFolder, labels: list[str], alpha: float, beta: float, beam_width: int):
        import tempfile

        from torchaudio.models.decoder import ctc_decoder

        blank = labels[0]
        lexicon = None
        if lm.units == "word":  # lexicon: each LM word spelled in the model's characters
            words = [w for w in lm.unigrams if w not in ("<s>", "</s>", "<unk>")]
            lexicon = tempfile.NamedTemporaryFile("w", suffix=".lexicon", delete=False, encoding="utf-8")
            lexicon.write("".join(f"{w}\t{' '.join(w)} {CHAR_SPACE}\n" for w in words))
            lexicon.close()
        self.labels, self.blank, self.words = labels, blank, lexicon is not None
        lm_arg = str(lm.arpa_file) if lexicon else _kenlm_token_lm(load_kenlm(lm.model_file), labels)
        self._decoder = ctc_decoder(
            lexicon=lexicon.name if lexicon else None, tokens=labels, lm=lm_arg, nbest=1,
            beam_size=beam_width, lm_weight=alpha, word_score=beta, sil_token=CHAR_SPACE, blank_token=blank,
            unk_word="<unk>", log_add=False)  # KenLM's unknown word
        if lexicon:
            os.unlink(lexicon.name)

    def decode(self, logits: np.ndarray, beam_width: int | None = None) -> str:
        import torch

        emissions = torch.from_numpy(np.ascontiguousarray(log_softmax(logits.astype(np.float32))))[None]
        hyp = self._decoder(emissions)[0][0]
        if self.words:
            return " ".join(hyp.words)
        tokens = self._decoder.idxs_to_tokens(hyp.tokens)
        text = "".join(" " if t == CHAR_SPACE else t for t in tokens if t != self.blank)
        return " ".join(text.split())


class LMDecoder:
    """Checks the LM against the model's vocabulary, then decodes batches of [T, V] logits with `processes` cores."""

    def __init__(self, lm_dir, tokenizer_vocab: dict[str, int], alpha: float | None = None,
                 beta: float | None = None, beam_width: int = 100, backend: str | None = None,
                 processes: int | None = None):
        self.lm = open_lm(lm_dir)
        check_vocabulary(self.lm, tokenizer_vocab)
        self.backend = backend or ("pyctcdecode" if self.lm.units == "word" else "torchaudio")
        if self.backend not in BACKENDS:
            raise LMError(f"backend {self.backend!r}: choose one of {BACKENDS}")
        self.labels = labels_of(tokenizer_vocab)
        self.alpha, self.beta = self.lm.params(alpha, beta)
        self.beam_width = beam_width
        self.processes = processes or os.cpu_count() or 1
        self._decoder = self._build()
        self._pool = None

    def _build(self):
        if self.backend == "pyctcdecode":
            return build_pyctcdecode(self.lm, self.labels, self.alpha, self.beta)
        return _TorchaudioDecoder(self.lm, self.labels, self.alpha, self.beta, self.beam_width)

    def set_params(self, alpha: float, beta: float) -> None:
        """New alpha/beta (tuning): pyctcdecode resets in place; torchaudio's decoder is rebuilt."""
        self.alpha, self.beta = alpha, beta
        self.close()
        if self.backend == "pyctcdecode":
            self._decoder.reset_params(alpha=alpha, beta=beta)
        else:
            self._decoder = self._build()

    @property
    def pyctcdecode_decoder(self):
        return self._decoder if self.backend == "pyctcdecode" else None

    def decode(self, logits_list: list[np.ndarray], frame_seconds: float = 0.0,
               stats: DecodeStats | None = None) -> list[str]:
        """Texts for each [T, V] logits array (unnormalized or log-probabilities), in order."""
        global _ACTIVE
        started = time.perf_counter()
        if self.processes > 1 and len(logits_list) > 1:
            if self._pool is None:
                _ACTIVE = (self._decoder, self.beam_width)
                self._pool = mp.get_context("fork").Pool(self.processes)
            texts = self._pool.map(_decode_one, logits_list, chunksize=max(1, len(logits_list) // (4 * self.processes)))
        else:
            texts = [_decode_with(self._decoder, self.beam_width, x) for x in logits_list]
        if stats is not None:
            stats.utterances += len(logits_list)
            stats.audio_seconds += frame_seconds * sum(len(x) for x in logits_list)
            stats.wall_seconds += time.perf_counter() - started
        return texts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _decode_with(decoder, beam_width: int, logits: np.ndarray) -> str:
    if isinstance(decoder, _TorchaudioDecoder):
        return decoder.decode(logits)
    return decoder.decode(logits.astype(np.float32), beam_width=beam_width).strip()


def _decode_one(logits: np.ndarray) -> str:
    decoder, beam_width = _ACTIVE
    return _decode_with(decoder, beam_width, logits)
