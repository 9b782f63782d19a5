"""`asr-dist synth`: reproducible bytes, real audio from every engine, a leak-free split, safe text.

Everything here runs the real engines (espeak-ng, flite, festival, sox) on a few seconds of audio.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_dist.config import ConfigError
from asr_dist.corpus import synth
from asr_dist.corpus.synth import (ESPEAK_ACCENTS, FESTIVAL_VOICES, FLITE_VOICES, SynthConfig, UtteranceSpec,
                                   check_voice, render_chunk, split_of, synthesize)
from asr_dist.corpus.texts import Dictionary, bible_chapters, clean_sentence, load_sentences, split_sentences

pytestmark = pytest.mark.timeout(300)

FIELDS = {"key", "audio", "text", "duration", "speaker", "engine", "condition"}


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    args = dict(hours=0.008, engines="espeak,flite,festival", noisy_fraction=0.6, dev_fraction=0.3,
                sentences_per_utt=[1, 2])
    one = synthesize(tmp_path / "one", seed=3, workers=1, **args)
    two = synthesize(tmp_path / "two", seed=3, workers=2, **args)
    other = synthesize(tmp_path / "other", seed=4, workers=2, **args)

    digest = tree_digest(tmp_path / "one")
    assert digest == tree_digest(tmp_path / "two")
    assert one["utterances"] == two["utterances"] and one["audio_seconds"] == two["audio_seconds"]
    assert len(digest) == one["utterances"] + 2  # the wavs and two manifests, no leftovers
    assert not list((tmp_path / "one").glob(".synth-*"))  # scratch space is gone
    # A different seed picks other sentences and voices.
    other_digest = tree_digest(tmp_path / "other")
    assert other_digest["train.jsonl"] != digest["train.jsonl"]
    assert not set(other_digest.values()) & set(digest.values())
    assert other["utterances"] > 0


def test_manifest_contract_and_hours_target(tmp_path):
    stats = synthesize(tmp_path, hours=0.01, seed=0, engines=["espeak", "flite"], noisy_fraction=0.5,
                       dev_fraction=0.2, workers=2)
    rows = {split: read_manifest(tmp_path / f"{split}.jsonl") for split in ("train", "dev")}
    assert len(rows["train"]) == stats["train_utterances"] > 0 and len(rows["dev"]) == stats["dev_utterances"] > 0
    seconds = {split: sum(r["duration"] for r in rs) for split, rs in rows.items()}
    longest = max(r["duration"] for rs in rows.values() for r in rs)
    # Each split reaches its share of the target and overshoots by less than one utterance.
    assert 0.2 * 36 <= seconds["dev"] < 0.2 * 36 + longest
    assert 0.8 * 36 <= seconds["train"] < 0.8 * 36 + longest
    assert stats["audio_seconds"] == pytest.approx(sum(seconds.values()), abs=0.01)
    for row in rows["train"] + rows["dev"]:
        assert set(row) == FIELDS
        assert "." not in row["key"] and row["audio"] == f"wavs/{row['key']}.wav"
        assert row["engine"] in ("espeak", "flite") and row["speaker"].startswith(row["engine"] + "-")
        assert row["condition"] in ("clean", "noisy", "reverb")
        assert all(c.isupper() or c in " '" for c in row["text"])
        info = sf.info(tmp_path / row["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert row["duration"] == pytest.approx(info.frames / 16000, abs=1e-3)
    assert {r["condition"] for rs in rows.values() for r in rs} >= {"clean", "noisy", "reverb"}
    with pytest.raises(FileExistsError, match="already holds a corpus"):
        synthesize(tmp_path, hours=0.001, seed=0)


# ----------------------------------------------------------------------------- engines


def _spec(speaker: str, speed: float, pitch: int, **condition) -> UtteranceSpec:
    text = "THE OLD MAN WALKED SLOWLY DOWN THE LONG ROAD TO TOWN"
    return UtteranceSpec(key=speaker.replace("+", "-") + "-test", split="train", speaker=speaker,
                         spoken="The old man walked slowly down the long road to town.", text=text,
                         speed=speed, pitch=pitch, **condition)


@pytest.mark.parametrize("specs", [
    [_spec(f"espeak-{accent}+m3", 170, 50) for accent in ESPEAK_ACCENTS],
    [_spec(f"flite-{voice}", 1.0, 110) for voice in FLITE_VOICES],
    [_spec(f"festival-{voice}", 1.0, 110) for voice in FESTIVAL_VOICES],
], ids=["espeak", "flite", "festival"])
def test_every_voice_speaks_16k_mono_at_a_plausible_rate(tmp_path, specs):
    durations = render_chunk(specs, tmp_path, tmp_path)
    assert set(durations) == {s.key for s in specs}
    for spec in specs:
        audio, rate = sf.read(tmp_path / f"{spec.key}.wav")
        assert rate == 16000 and audio.ndim == 1
        words = len(spec.text.split())
        assert 0.18 * words < durations[spec.key] < 0.8 * words, (spec.speaker, durations[spec.key])
        assert np.max(np.abs(audio)) == pytest.approx(10 ** (-3 / 20), abs=0.01)  # normalized to -3 dBFS
        assert np.mean(np.abs(audio) > 0.05) > 0.2, spec.speaker  # mostly speech, not silence


def test_speed_pitch_and_conditions_change_the_audio(tmp_path):
    slow, fast = _spec("espeak-en-us+f2", 140, 50), _spec("espeak-en-us+f2", 195, 50)
    fast = UtteranceSpec(**{**fast.__dict__, "key": "fast"})
    noisy = UtteranceSpec(**{**slow.__dict__, "key": "noisy", "condition": "noisy", "snr_db": 5.0,
                             "noise_color": "pink", "noise_seed": 7})
    reverb = UtteranceSpec(**{**slow.__dict__, "key": "reverb", "condition": "reverb", "reverb": (80, 50, 100, 10)})
    d = render_chunk([slow, fast, noisy, reverb], tmp_path, tmp_path)
    assert d[fast.key] < 0.85 * d[slow.key]
    clean = sf.read(tmp_path / f"{slow.key}.wav")[0]
    for key in ("noisy", "reverb"):
        degraded = sf.read(tmp_path / f"{key}.wav")[0]
        assert len(degraded) == len(clean) and not np.array_equal(degraded, clean)
    # At 5 dB SNR the pauses are filled with noise: the quietest 10% of samples get much louder.
    quiet = lambda a: np.quantile(np.abs(a), 0.1)  # noqa: E731
    assert quiet(sf.read(tmp_path / "noisy.wav")[0]) > 10 * quiet(clean) + 1e-3


# ----------------------------------------------------------------------------- split


def test_split_is_a_hash_of_the_transcript_only():
    transcripts = [s.transcript for s in load_sentences()[:5000]]
    dev_10 = {t for t in transcripts if split_of(t, 0.1) == "dev"}
    dev_30 = {t for t in transcripts if split_of(t, 0.3) == "dev"}
    assert dev_10 < dev_30  # a larger dev share only moves sentences out of train
    assert 0.07 < len(dev_10) / len(transcripts) < 0.13
    assert not {t for t in transcripts if split_of(t, 0.0) == "dev"}


def test_two_corpora_with_other_seeds_and_engines_never_share_a_sentence_across_splits(tmp_path):
    source = synthesize(tmp_path / "source", hours=0.006, seed=0, engines="espeak", dev_fraction=0.3, workers=2)
    target = synthesize(tmp_path / "target", hours=0.006, seed=1, engines="flite,festival", noisy_fraction=1.0,
                        dev_fraction=0.3, workers=2)
    train, dev = set(), set()
    for stats in (source, target):
        for split, texts in (("train", train), ("dev", dev)):
            rows = read_manifest(Path(stats[f"{split}_manifest"]))
            assert all(split_of(r["text"], 0.3) == split for r in rows)
            texts |= {r["text"] for r in rows}
    assert train and dev and not train & dev


# ----------------------------------------------------------------------------- text cleaning


@pytest.fixture(scope="module")
def dictionary():
    return Dictionary.from_file()


@pytest.mark.parametrize("text", [
    "He was born in 1951 and died young.",  # digits
    "Mr. Smith went to see the doctor.",  # abbreviation with a period
    "Dr Jones never answers his phone.",  # abbreviation without one
    "We met the St Louis train at noon.",
    "The apples, pears, etc were all gone.",
    "The NASA budget was cut again this year.",  # acronym
    "She works for IBM in the city.",
    "Henry VIII had six wives in total.",  # roman numeral
    "They say that Queen Elizabeth I never married.",  # "the first"
    "Hmm, that is not what I meant.",  # no vowel: may be spelled out
    "Turn left at point B and walk on.",  # single letter
    "The price rose by half a % today.",  # symbol
    "Buy cheese & bread at the market.",
    "He uses an iPhone all day long.",  # mixed case
    "The quick brwn fox jumps over it.",  # not in the dictionary
    "He said it was e.g. a good idea.",  # dotted abbreviation
    "It costs ten dollars, i.e. too much.",
    "The café was closed for the winter.",  # letter outside A-Z
])
def test_cleaner_rejects_text_the_engine_would_not_read_as_written(dictionary, text):
    assert clean_sentence(text, dictionary) is None


def test_cleaner_keeps_plain_sentences_and_spells_the_transcript(dictionary):
    kept = clean_sentence("\"Don't look back -- something might be gaining on you,\" she said.", dictionary)
    assert kept.transcript == "DON'T LOOK BACK SOMETHING MIGHT BE GAINING ON YOU SHE SAID"
    assert kept.spoken == "Don't look back, something might be gaining on you, she said."
    well = clean_sentence("a well-known fact about the world", dictionary)
    assert well.transcript == "A WELL KNOWN FACT ABOUT THE WORLD" and well.spoken == "A well known fact about the world."
    assert clean_sentence("I think, O friends, that Paris is lovely!", dictionary).transcript == \
        "I THINK O FRIENDS THAT PARIS IS LOVELY"
    assert clean_sentence("The dogs' bowls were empty.", dictionary).transcript == "THE DOGS BOWLS WERE EMPTY"
    assert clean_sentence("Then I told Mary and I left.", dictionary).transcript == "THEN I TOLD MARY AND I LEFT"
    assert clean_sentence("Too short.", dictionary, min_words=4) is None
    assert clean_sentence("one two three four five", dictionary, max_words=4) is None


def test_sentence_splitting_and_ambiguous_abbreviations():
    assert split_sentences("It rained.  We stayed in!\nWho knew? Nobody.") == \
        ["It rained.", "We stayed in!", "Who knew?", "Nobody."]
    assert split_sentences("Gen. Lee surrendered at last.") == []
    assert split_sentences("I said no. Then I left.") == []  # "No. 5" cannot be told apart
    # Only the pieces around an abbreviation go; typographic quotes become ASCII ones.
    assert split_sentences("We met Mr. Smith today. \u201cIt\u2019s late,\u201d he said. So we left.") == \
        ['"It\'s late," he said.', "So we left."]


@pytest.mark.skipif(shutil.which("diatheke") is None, reason="optional: apt install diatheke sword-text-web")
def test_bible_chapters_give_whole_sentences(dictionary):
    chapters = bible_chapters("Gen 1:1-2:25")
    assert len(chapters) == 2 and chapters[0].startswith("In the beginning")
    sentences = [clean_sentence(s, dictionary, 4, 24) for c in chapters for s in split_sentences(c)]
    kept = [s for s in sentences if s is not None]
    assert len(kept) > 20
    assert "GOD SAID LET THERE BE LIGHT AND THERE WAS LIGHT" in {s.transcript for s in kept}


def test_pool_transcripts_agree_with_the_project_normalization():
    from asr_dist.text import normalize_text  # what `asr-dist prepare` will apply to the manifests

    pool = load_sentences()
    assert len(pool) > 30000 and {s.source for s in pool} == {"fortunes", "wordnet"}
    assert len({s.transcript for s in pool}) == len(pool)
    for sentence in pool[::20]:
        assert normalize_text(sentence.spoken) == sentence.transcript, sentence
        assert 4 <= len(sentence.transcript.split()) <= 24


# flite names the homographs it disambiguated by their pronunciation ("I red it", "the led pipe").
FLITE_HOMOGRAPHS = {"red": "read", "reed": "read", "led": "lead", "leed": "lead"}


def _words(tokens: list[str]) -> list[str]:
    """An engine's word tokens as transcript words: clitics rejoined ("city 's" -> city's), apostrophes
    dropped (flite drops some), lower case."""
    words: list[str] = []
    for token in tokens:
        token = token.lower().lstrip("_")
        if token.startswith("'") and words:
            words[-1] += token
        else:
            words.append(token)
    return [w.replace("'", "") for w in words]


def _same_words(engine_tokens: list[str], transcript: str) -> bool:
    said, written = _words(engine_tokens), _words(transcript.split())
    return len(said) == len(written) and all(s == w or FLITE_HOMOGRAPHS.get(s) == w for s, w in zip(said, written))


def test_engines_read_exactly_the_transcript_words(tmp_path):
    import random
    import re
    import subprocess

    sample = random.Random(0).sample(load_sentences(), 40)
    # espeak-ng -X traces its dictionary look-ups: spelled-out letters and numbers show up as entries
    # like 'q' or '_19'.
    (tmp_path / "sentences.txt").write_text("\n\n".join(s.spoken for s in sample))
    trace = subprocess.run(["espeak-ng", "-X", "-q", "-v", "en-us", "-f", str(tmp_path / "sentences.txt")],
                           capture_output=True, text=True, check=True).stdout
    assert trace.count("Translate '") > 100
    assert not re.findall(r"^Found: '(?:_\d\w*|[b-hj-np-z])'", trace, re.MULTILINE)
    for sentence in sample:  # flite's word relation after its text normalization
        words = subprocess.run(["flite", "-voice", "kal16", "-pw", "-t", sentence.spoken, "-o", "none"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert _same_words(words, sentence.transcript), (sentence.spoken, words)
    script = ("(define (words text) (format t \"%l\\n\" (mapcar item.name (utt.relation.items "
              "(utt.synth (eval (list 'Utterance 'Text text))) 'Word))))\n(voice_kal_diphone)\n")
    script += "".join(f'(words "{s.spoken}")\n' for s in sample)
    lines = subprocess.run(["festival", "--pipe"], input=script, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert len(lines) == len(sample)
    for sentence, line in zip(sample, lines):
        words = line.strip("()").replace('"', "").split()
        assert _same_words(words, sentence.transcript), (sentence.spoken, words)


# ----------------------------------------------------------------------------- reserved material


@pytest.mark.parametrize("voice", ["flite-slt", "festival-slt", "festival-cmu_us_slt_arctic_hts", "espeak-mb-us1",
                                   "espeak-en-us+us1", "pico-en-US", "piper-en_US-lessac-medium", "dectalk-paul"])
def test_reserved_voices_are_refused(tmp_path, voice):
    with pytest.raises(ConfigError, match="reserved"):
        check_voice(voice)
    with pytest.raises(ConfigError, match="reserved"):
        synthesize(tmp_path, hours=0.001, voices=[voice])
    assert not (tmp_path / "train.jsonl").exists()


def test_reserved_text_and_bad_options_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="reserved"):
        SynthConfig(texts=["dict-devil"]).check()
    with pytest.raises(ConfigError, match="synth.voices"):
        SynthConfig(voices=["espeak-en-us+whisper"]).check()
    with pytest.raises(ConfigError, match="synth.engines"):
        SynthConfig(engines=["pico"]).check()
    with pytest.raises(ConfigError, match="synth.noisy_fraction"):
        SynthConfig(noisy_fraction=1.5).check()
    assert synth.main([str(tmp_path), "--voices", "flite-slt"]) == 2
