"""`asr-dist synth`: an offline English speech corpus with known transcripts, from Debian's TTS engines.

No speech corpus can be downloaded here, so the demo trains on speech that espeak-ng, flite and festival
make from clean sentences (see texts.py). Many voices, jittered speed and pitch, and optional noisy or
reverberant renderings give the model real variety; the transcript is exact by construction.

Reproducibility is the point of the design. Every random choice (sentence, voice, speed, pitch, noise)
is drawn up front, in one process, into an `UtteranceSpec`; rendering a spec is then a pure function of
the spec (sox runs with `-R`, noise comes from the spec's own seed), so the bytes do not depend on how
many workers render or in which order. The train/dev split is a hash of the transcript, so it does not
depend on the seed or the engines either: two corpora made with different voices never put one sentence
in train of one and dev of the other.

The work is in the engines and sox, which are child processes: a thread pool of `workers` threads keeps
that many of them busy (one core each) without pickling anything. Festival runs in batch mode, one
process per chunk of sentences, because its start-up costs more than a sentence.

Output (the contract `asr-dist prepare` reads):
    OUT_DIR/wavs/KEY.wav                  16 kHz mono 16-bit
    OUT_DIR/train.jsonl, OUT_DIR/dev.jsonl {"key", "audio", "text", "duration", "speaker", "engine", "condition"}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import regex
import soundfile as sf

from asr_dist.config import ConfigError
from asr_dist.corpus.texts import DEFAULT_TEXT_SOURCES, Sentence, check_sources, load_sentences

SAMPLE_RATE = 16000
ENGINES = ("espeak", "flite", "festival")
SPLITS = ("train", "dev")
CONDITIONS = ("clean", "noisy", "reverb")

# ----------------------------------------------------------------------------- voices

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
                  "en-029", "en-us-nyc")
# espeak-ng's human-like variants (the whispering, croaking and robotic ones are left out).
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Annie", "Alex", "Gene", "Lee", "anika", "belinda", "david",
    "edward", "grandma", "grandpa", "linda", "max", "michel", "paul", "quincy", "rob", "robert", "shelby",
    "steph", "travis", "victor", "adam", "aunty", "benjamin", "boris", "caleb", "john", "norbert",
)
# flite voice -> range of int_f0_target_mean (Hz) to draw from.
FLITE_VOICES = {"kal16": (85, 130), "awb": (85, 130), "rms": (80, 125)}
# festival voice -> (scheme command that selects it, range of target_f0_mean in Hz).
FESTIVAL_VOICES = {"kal": ("voice_kal_diphone", (90, 135)), "ked": ("voice_ked_diphone", (85, 130))}

ENGINE_PROGRAMS = {"espeak": ("espeak-ng", "espeak-ng"), "flite": ("flite", "flite"),
                   "festival": ("festival", "festival festvox-kallpc16k festvox-kdlpc16k")}

# Characters of scripts written without spaces: each is read about as long as a short word.
_UNSPACED_CHARACTER = regex.compile(r"[\p{Script_Extensions=Han}\p{Script_Extensions=Hiragana}\p{Script_Extensions=Katakana}]")

# Held out for independent evaluation: refused by name, whatever the engine.
RESERVED_VOICE_MARKERS = ("slt", "pico", "piper", "us1", "dectalk")


def espeak_accents(language: str = "en") -> tuple[str, ...]:
    """espeak-ng voices of a language (English: its accents; others: asr_dist.corpus.languages' table)."""
    if language == "en":
        return ESPEAK_ACCENTS
    from asr_dist.corpus.languages import synth_language

    return synth_language(language).espeak_voices


def all_voices(engines: tuple[str, ...] = ENGINES, language: str = "en") -> list[str]:
    """Speaker ids of every voice of `engines`: espeak-ACCENT+VARIANT, flite-NAME, festival-NAME
    (other languages than English: espeak-VOICE+VARIANT only, e.g. espeak-cmn+f2)."""
    voices = []
    if "espeak" in engines:
        voices += [f"espeak-{a}+{v}" for a in espeak_accents(language) for v in ESPEAK_VARIANTS]
    if language != "en":
        return voices
    if "flite" in engines:
        voices += [f"flite-{v}" for v in FLITE_VOICES]
    if "festival" in engines:
        voices += [f"festival-{v}" for v in FESTIVAL_VOICES]
    return voices


def engine_of(voice: str) -> str:
    """"espeak-en-us+f2" -> "espeak"."""
    return voice.split("-", 1)[0]


def voice_name(voice: str) -> str:
    """The engine's own name for a voice: "espeak-en-us+f2" -> "en-us+f2", "flite-awb" -> "awb"."""
    return voice.split("-", 1)[1]


def check_voice(voice: str, at: str = "synth.voices", language: str = "en") -> None:
    """Refuse reserved voices (ConfigError saying so) and voices we do not know."""
    lowered = voice.lower()
    marker = next((m for m in RESERVED_VOICE_MARKERS if m in lowered), None)
    if marker is not None or lowered.startswith(("espeak-mb-", "mb-")):
        raise ConfigError(f"{at}: voice {voice!r} is reserved for independent evaluation and is never used "
                          f"(reserved: flite/festival slt, Pico, piper voices, mbrola us1, DECtalk)")
    if language != "en" and voice not in all_voices(language=language):
        raise ConfigError(f"{at}: unknown voice {voice!r} for language {language}; expected espeak-VOICE+VARIANT "
                          f"(voices {', '.join(espeak_accents(language))})")
    if voice not in all_voices(language=language):
        raise ConfigError(f"{at}: unknown voice {voice!r}; expected espeak-ACCENT+VARIANT "
                          f"(accents {', '.join(ESPEAK_ACCENTS)}), "
                          f"{', '.join('flite-' + v for v in FLITE_VOICES)} or "
                          f"{', '.join('festival-' + v for v in FESTIVAL_VOICES)}")


# ----------------------------------------------------------------------------- configuration


@dataclass
class SynthConfig:
    """What to synthesize; the same config and seed always give the same bytes."""

    hours: float = 1.0  # target audio for train + dev together
    seed: int = 0
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    voices: list[str] = field(default_factory=list)  # speaker ids; empty = every voice of `engines`
    texts: list[str] = field(default_factory=lambda: list(DEFAULT_TEXT_SOURCES))
    noisy_fraction: float = 0.0  # share of utterances rendered noisy or reverberant instead of clean
    dev_fraction: float = 0.1  # share of sentences (by transcript hash) and of audio that is dev
    workers: int = 0  # 0 = every core this process may use
    min_words: int = 4  # per sentence
    max_words: int = 24
    sentences_per_utt: list[int] = field(default_factory=lambda: [1, 1])  # [low, high], drawn uniformly
    language: str = "en"  # other languages: espeak-ng voices and Debian's fortunes-CODE (asr_dist/corpus/languages.py)

    def check(self, at: str = "synth") -> None:
        _require(self.hours > 0, f"{at}.hours", "a positive number of hours", self.hours)
        _require(self.seed >= 0, f"{at}.seed", "an integer >= 0", self.seed)
        _require(bool(self.engines) and set(self.engines) <= set(ENGINES), f"{at}.engines",
                 f"a non-empty subset of {list(ENGINES)}", self.engines)
        if self.language != "en":
            try:
                espeak_accents(self.language)
            except ValueError as e:
                raise ConfigError(f"{at}.language: {e}") from None
            _require(self.engines == ["espeak"], f"{at}.engines", f"['espeak'] for language {self.language}", self.engines)
        for voice in self.voices:
            check_voice(voice, f"{at}.voices", self.language)
            _require(engine_of(voice) in self.engines, f"{at}.voices",
                     f"voices of the chosen engines {self.engines}", voice)
        try:
            check_sources(tuple(self.texts))
        except ValueError as e:
            raise ConfigError(f"{at}.texts: {e}") from None
        _require(bool(self.texts), f"{at}.texts", "at least one text source", self.texts)
        _require(0.0 <= self.noisy_fraction <= 1.0, f"{at}.noisy_fraction", "a fraction in [0, 1]", self.noisy_fraction)
        _require(0.0 <= self.dev_fraction < 1.0, f"{at}.dev_fraction", "a fraction in [0, 1)", self.dev_fraction)
        _require(self.workers >= 0, f"{at}.workers", "an integer >= 0 (0 = all cores)", self.workers)
        _require(1 <= self.min_words <= self.max_words, f"{at}.min_words", "1 <= min_words <= max_words",
                 (self.min_words, self.max_words))
        lo_hi = self.sentences_per_utt
        _require(len(lo_hi) == 2 and 1 <= lo_hi[0] <= lo_hi[1], f"{at}.sentences_per_utt",
                 "[low, high] with 1 <= low <= high", lo_hi)

    def voice_pool(self) -> dict[str, list[str]]:
        """Voices to draw from, grouped by engine (engines are drawn first, so espeak's hundreds of
        voices do not drown flite's three)."""
        voices = self.voices or all_voices(tuple(self.engines), self.language)
        return {e: [v for v in voices if engine_of(v) == e] for e in ENGINES if any(engine_of(v) == e for v in voices)}


def _require(ok: bool, key: str, allowed: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed; expected {allowed}")


# ----------------------------------------------------------------------------- planning


def split_of(transcript: str, dev_fraction: float) -> str:
    """'dev' or 'train', from a hash of the transcript alone (not the seed, not the voices), so that
    any two corpora agree on it; a larger dev_fraction only moves sentences from train to dev."""
    h = int.from_bytes(hashlib.sha256(transcript.encode()).digest()[:8], "big") / 2**64
    return "dev" if h < dev_fraction else "train"


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to render one utterance; rendering draws nothing at random."""

    key: str
    split: str
    speaker: str  # voice id, e.g. espeak-en-gb-scotland+f2
    spoken: str
    text: str  # normalized transcript
    speed: float  # espeak: words per minute; flite/festival: duration stretch
    pitch: int  # espeak: 0-99; flite/festival: mean F0 in Hz
    condition: str = "clean"
    snr_db: float = 0.0  # noisy
    noise_color: str = ""  # noisy: white, pink or brown
    noise_seed: int = 0  # noisy
    reverb: tuple[int, int, int, int] = (0, 0, 0, 0)  # reverberance %, HF damping %, room scale %, pre-delay ms

    @property
    def engine(self) -> str:
        return engine_of(self.speaker)

    def estimated_seconds(self) -> float:
        """A rough duration (0.33 s a word at normal speed; espeak's cmn reads a Chinese character in about
        0.42 s), only to decide how many to plan."""
        words = len(self.text.split()) + 1.25 * len(_UNSPACED_CHARACTER.findall(self.text))
        slowness = 170.0 / self.speed if self.engine == "espeak" else self.speed
        return 0.4 + 0.33 * words * slowness


class Planner:
    """Draws utterance specs for one split from its own random stream, walking a seeded shuffle of
    the split's sentences (reshuffled when used up, so big corpora repeat sentences with new voices)."""

    def __init__(self, config: SynthConfig, split: str, sentences: list[Sentence]):
        if not sentences:
            raise ConfigError(f"synth: no {split} sentences (dev_fraction={config.dev_fraction}, "
                              f"texts={config.texts}, words {config.min_words}-{config.max_words})")
        self.config = config
        self.split = split
        self.sentences = sentences
        self.rng = np.random.default_rng([config.seed, SPLITS.index(split)])
        self.voices = config.voice_pool()
        self.order: list[int] = []
        self.count = 0

    def _next_sentence(self) -> Sentence:
        if not self.order:
            self.order = list(self.rng.permutation(len(self.sentences)))
        return self.sentences[self.order.pop()]

    def next(self) -> UtteranceSpec:
        rng, config = self.rng, self.config
        lo, hi = config.sentences_per_utt
        sentences = [self._next_sentence() for _ in range(int(rng.integers(lo, hi + 1)))]
        engines = sorted(self.voices)
        engine = engines[int(rng.integers(len(engines)))]
        speaker = self.voices[engine][int(rng.integers(len(self.voices[engine])))]
        if engine == "espeak":
            speed, pitch = float(rng.integers(140, 196)), int(rng.integers(35, 66))
        else:
            name = voice_name(speaker)
            f0_lo, f0_hi = FLITE_VOICES[name] if engine == "flite" else FESTIVAL_VOICES[name][1]
            speed, pitch = round(float(rng.uniform(0.9, 1.2)), 3), int(rng.integers(f0_lo, f0_hi + 1))
        extra: dict = {}
        if rng.random() < config.noisy_fraction:
            if rng.random() < 0.5:
                extra = dict(condition="noisy", snr_db=round(float(rng.uniform(5.0, 20.0)), 1),
                             noise_color=("white", "pink", "brown")[int(rng.integers(3))],
                             noise_seed=int(rng.integers(2**31)))
            else:
                extra = dict(condition="reverb", reverb=(int(rng.integers(20, 81)), int(rng.integers(20, 81)),
                                                          int(rng.integers(30, 101)), int(rng.integers(0, 21))))
        fields = dict(split=self.split, speaker=speaker, spoken=" ".join(s.spoken for s in sentences),
                      text=" ".join(s.transcript for s in sentences), speed=speed, pitch=pitch, **extra)
        # Readable voice prefix + a hash of everything that shapes the audio: unique across corpora.
        identity = json.dumps([config.seed, self.count, fields], sort_keys=True)
        key = f"{re.sub(r'[^A-Za-z0-9]+', '-', speaker)}-{hashlib.sha1(identity.encode()).hexdigest()[:10]}"
        self.count += 1
        return UtteranceSpec(key=key, **fields)


# ----------------------------------------------------------------------------- rendering


def _run(cmd: list[str], **kwargs) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}): {' '.join(cmd)[:300]}\n{result.stderr[-2000:]}")


def _engine_commands(specs: list[UtteranceSpec], raw_dir: Path) -> Iterator[list[str]]:
    """espeak-ng / flite command lines, one per utterance, writing raw_dir/KEY.wav."""
    for s in specs:
        out = str(raw_dir / f"{s.key}.wav")
        if s.engine == "espeak":
            yield ["espeak-ng", "-v", voice_name(s.speaker), "-s", str(int(s.speed)), "-p", str(s.pitch), "-w", out, "--", s.spoken]
        else:
            yield ["flite", "-voice", voice_name(s.speaker), "--setf", f"duration_stretch={s.speed}",
                   "--setf", f"int_f0_target_mean={s.pitch}", "-t", s.spoken, "-o", out]


def _festival_script(specs: list[UtteranceSpec], raw_dir: Path) -> str:
    """One festival batch script for many sentences; every sentence sets its own voice, stretch and
    pitch, so its audio does not depend on the sentences before it."""
    lines = []
    for s in specs:
        select, _ = FESTIVAL_VOICES[voice_name(s.speaker)]
        lines += [f"({select})",
                  f"(Parameter.set 'Duration_Stretch {s.speed})",
                  f"(set! int_lr_params '((target_f0_mean {s.pitch}) (target_f0_std {max(8, s.pitch // 7)}) "
                  f"(model_f0_mean 170) (model_f0_std 34)))",
                  f'(utt.save.wave (utt.synth (Utterance Text "{s.spoken}")) "{raw_dir / (s.key + ".wav")}" \'riff)']
    return "\n".join(lines) + "\n"


def _finish(spec: UtteranceSpec, raw: Path, out: Path) -> float:
    """Engine output -> 16 kHz mono 16-bit at -3 dBFS peak, in the spec's condition; returns seconds."""
    effects = []
    if spec.condition == "reverb":
        reverberance, damping, room, predelay = spec.reverb
        effects = ["reverb", str(reverberance), str(damping), str(room), "100", str(predelay)]
    # -R: repeatable dither. Headroom first (resampling and reverb overshoot), normalize last (engine
    # levels differ by about 10 dB).
    _run(["sox", "-R", str(raw), "-b", "16", str(out), "gain", "-h", "channels", "1", "rate", str(SAMPLE_RATE),
          *effects, "gain", "-n", "-3"])
    if spec.condition == "noisy":
        audio, rate = sf.read(out, dtype="float64")
        noisy = add_noise(audio, spec.snr_db, spec.noise_color, spec.noise_seed)
        sf.write(out, noisy, rate, subtype="PCM_16")
    return sf.info(out).frames / SAMPLE_RATE


def add_noise(audio: np.ndarray, snr_db: float, color: str, seed: int) -> np.ndarray:
    """`audio` plus white/pink/brown noise at `snr_db` (against the speech's mean power), rescaled to
    a -3 dBFS peak. Pure numpy from `seed`: the same inputs give the same samples."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(audio))
    if color in ("pink", "brown"):
        spectrum = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(len(noise))
        freqs[0] = freqs[1] if len(freqs) > 1 else 1.0
        spectrum /= np.sqrt(freqs) if color == "pink" else freqs  # 1/f and 1/f^2 power
        noise = np.fft.irfft(spectrum, n=len(noise))
    speech_power = np.mean(audio**2) or 1e-10
    noise *= math.sqrt(speech_power / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    mixed = audio + noise
    return mixed * (10 ** (-3 / 20) / max(np.max(np.abs(mixed)), 1e-9))


def render_chunk(specs: list[UtteranceSpec], wav_dir: Path, scratch: Path) -> dict[str, float]:
    """Render specs of one engine into wav_dir/KEY.wav; returns {key: seconds}."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        raw_dir = Path(tmp)
        if specs[0].engine == "festival":
            script = raw_dir / "batch.scm"
            script.write_text(_festival_script(specs, raw_dir))
            _run(["festival", "-b", str(script)])
        else:
            for cmd in _engine_commands(specs, raw_dir):
                _run(cmd)
        durations = {}
        for spec in specs:
            raw = raw_dir / f"{spec.key}.wav"
            if not raw.is_file() or raw.stat().st_size <= 44:
                raise RuntimeError(f"{spec.engine} wrote no audio for {spec.speaker}: {spec.spoken!r}")
            durations[spec.key] = _finish(spec, raw, wav_dir / f"{spec.key}.wav")
        return durations


def chunked(specs: list[UtteranceSpec], size: int) -> list[list[UtteranceSpec]]:
    """Chunks of one engine each, in plan order; the chunking does not depend on the worker count.
    Festival's batches (the longest chunks) come first, so that the pool finishes evenly."""
    chunks = []
    for engine in ("festival", "flite", "espeak"):
        same = [s for s in specs if s.engine == engine]
        chunks += [same[i:i + size] for i in range(0, len(same), size)]
    return chunks


# ----------------------------------------------------------------------------- the corpus


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def build_corpus(config: SynthConfig, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Synthesize the corpus described by `config` into `out_dir`; returns manifest paths and stats.

    Plans in rounds: each round plans about the audio still missing per split (from estimated
    durations, calibrated by what the previous round measured), renders it, and keeps utterances in plan
    order until the split's target is reached. Everything is decided from measured durations, which are
    reproducible, so the kept set is too.
    """
    config.check()
    for program, package in [("sox", "sox libsox-fmt-all")] + [ENGINE_PROGRAMS[e] for e in config.voice_pool()]:
        if shutil.which(program) is None:
            raise FileNotFoundError(f"{program} not found: apt install {package}")
    out_dir = Path(out_dir)
    wav_dir = out_dir / "wavs"
    manifests = {split: out_dir / f"{split}.jsonl" for split in SPLITS}
    if any(p.exists() for p in manifests.values()) or (wav_dir.exists() and any(wav_dir.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out_dir} already holds a corpus (train.jsonl/dev.jsonl/wavs); "
                                  f"choose an empty folder or pass --overwrite")
        shutil.rmtree(wav_dir, ignore_errors=True)
        for p in manifests.values():
            p.unlink(missing_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    workers = config.workers or default_workers()
    start = time.perf_counter()

    if config.language == "en":
        pool = load_sentences(tuple(config.texts), config.min_words, config.max_words)
    else:
        from asr_dist.corpus.languages import load_language_sentences

        pool = load_language_sentences(config.language, config.min_words, config.max_words)
    by_split = {split: [s for s in pool if split_of(s.transcript, config.dev_fraction) == split] for split in SPLITS}
    targets = {"dev": config.hours * 3600 * config.dev_fraction}
    targets["train"] = config.hours * 3600 - targets["dev"]
    planners = {split: Planner(config, split, by_split[split]) for split in SPLITS if targets[split] > 0}
    kept: dict[str, list[tuple[UtteranceSpec, float]]] = {split: [] for split in SPLITS}
    done = {split: 0.0 for split in SPLITS}
    calibration = 1.0  # measured / estimated seconds, from the previous round

    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".synth-") as scratch, \
            ThreadPoolExecutor(max_workers=workers) as executor:
        while any(done[s] < targets[s] for s in planners):
            planned: list[UtteranceSpec] = []
            for split, planner in planners.items():
                missing, estimate = targets[split] - done[split], 0.0
                while missing > 0 and estimate < missing * 1.03:  # a little over: a second round is rare
                    spec = planner.next()
                    planned.append(spec)
                    estimate += spec.estimated_seconds() * calibration
            # Festival batches are cut the same way whatever the worker count (its output must not
            # depend on it); small enough that a small round still spreads over the cores.
            chunk_size = max(4, min(32, math.ceil(len(planned) / 16)))
            durations: dict[str, float] = {}
            for result in executor.map(lambda c: render_chunk(c, wav_dir, Path(scratch)), chunked(planned, chunk_size)):
                durations.update(result)
            calibration = sum(durations.values()) / sum(s.estimated_seconds() for s in planned)
            for spec in planned:  # plan order, so the kept set does not depend on who finished first
                if done[spec.split] < targets[spec.split]:
                    kept[spec.split].append((spec, durations[spec.key]))
                    done[spec.split] += durations[spec.key]
                else:
                    (wav_dir / f"{spec.key}.wav").unlink()

    for split, path in manifests.items():
        with open(path, "w", encoding="utf-8") as f:
            for spec, seconds in kept[split]:
                row = {"key": spec.key, "audio": f"wavs/{spec.key}.wav", "text": spec.text,
                       "duration": round(seconds, 4), "speaker": spec.speaker, "engine": spec.engine,
                       "condition": spec.condition}
                if config.language != "en":
                    row["language"] = config.language
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    wall = time.perf_counter() - start
    audio_seconds = sum(done.values())
    return {"out_dir": str(out_dir), "train_manifest": str(manifests["train"]), "dev_manifest": str(manifests["dev"]),
            "utterances": sum(len(v) for v in kept.values()), "train_utterances": len(kept["train"]),
            "dev_utterances": len(kept["dev"]), "audio_seconds": round(audio_seconds, 3),
            "wall_seconds": round(wall, 3), "x_real_time": round(audio_seconds / wall, 1), "workers": workers}


def synthesize(out_dir: str | Path, hours: float = 1.0, seed: int = 0, engines=ENGINES, noisy_fraction: float = 0.0,
               dev_fraction: float = 0.1, workers: int = 0, overwrite: bool = False, **options) -> dict:
    """Python entry point (benchmarks, the demo): `options` are the other SynthConfig fields
    (voices, texts, min_words, max_words, sentences_per_utt)."""
    if isinstance(engines, str):
        engines = engines.split(",")
    config = SynthConfig(hours=hours, seed=seed, engines=list(engines), noisy_fraction=noisy_fraction,
                         dev_fraction=dev_fraction, workers=workers, **options)
    return build_corpus(config, out_dir, overwrite=overwrite)


# ----------------------------------------------------------------------------- command line


def _range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    try:
        return [int(low), int(high or low)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or LOW-HIGH, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-dist synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--hours", type=float, default=1.0, help="audio to make, train + dev (default 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engines", type=_names, default=list(ENGINES), help="comma-separated: espeak,flite,festival")
    parser.add_argument("--voices", type=_names, default=[],
                        help="comma-separated speaker ids (e.g. flite-awb,espeak-en-us+f2); default: all of --engines")
    parser.add_argument("--texts", type=_names, default=list(DEFAULT_TEXT_SOURCES),
                        help="comma-separated text sources: fortunes,wordnet[,bible]")
    parser.add_argument("--noisy-fraction", type=float, default=0.0,
                        help="share of utterances rendered with noise or reverb instead of clean")
    parser.add_argument("--dev-fraction", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=0, help="parallel engine processes (default: all cores)")
    parser.add_argument("--min-words", type=int, default=4, help="per sentence")
    parser.add_argument("--max-words", type=int, default=24, help="per sentence")
    parser.add_argument("--sentences-per-utt", type=_range, default=[1, 1], help="N or LOW-HIGH (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus already in OUT_DIR")
    parser.add_argument("--language", default="en",
                        help="en (default), or zh, es, de, it, ru: espeak-ng's voices and Debian's fortunes-CODE "
                             "(then prepare with --language CODE)")
    args = parser.parse_args(argv)
    if args.language != "en" and args.engines == list(ENGINES):
        args.engines = ["espeak"]  # flite and festival speak English only
    config = SynthConfig(hours=args.hours, seed=args.seed, engines=args.engines, voices=args.voices, texts=args.texts,
                         noisy_fraction=args.noisy_fraction, dev_fraction=args.dev_fraction, workers=args.workers,
                         min_words=args.min_words, max_words=args.max_words, sentences_per_utt=args.sentences_per_utt,
                         language=args.language)
    try:
        stats = build_corpus(config, args.out_dir, overwrite=args.overwrite)
    except (ConfigError, FileExistsError, FileNotFoundError) as e:
        print(f"asr-dist synth: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
