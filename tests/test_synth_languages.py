"""`asr-dist synth --language CODE`: espeak-ng voices and Debian's fortunes in other languages, with the
English corpus' seeded, hash-split design; every transcript survives `asr-dist prepare --language CODE`."""

from __future__ import annotations

import hashlib
import json

import pytest

from asr_dist.config import ConfigError
from asr_dist.corpus.languages import SYNTH_LANGUAGES, clean_sentence, fortune_files, load_language_sentences
from asr_dist.corpus.synth import SynthConfig, all_voices, check_voice, split_of, synthesize
from asr_dist.corpus.texts import FORTUNE_DIR, fortune_paragraphs
from asr_dist.text import normalize_text

pytestmark = pytest.mark.timeout(300)


def _installed(code: str) -> bool:
    try:
        fortune_files(SYNTH_LANGUAGES[code])
        return True
    except FileNotFoundError:
        return False


needs = {code: pytest.mark.skipif(not _installed(code), reason=f"apt install {SYNTH_LANGUAGES[code].package}")
         for code in SYNTH_LANGUAGES}


@pytest.mark.parametrize("code, text, transcript", [
    ("es", "El niño comió pingüino.", "el niño comió pingüino"),
    ("es", "¿Qué hora es, señor?", "qué hora es señor"),
    ("de", "Der Bär schläft im Wald.", "der bär schläft im wald"),
    ("ru", "Кто ищет, тот всегда найдёт.", "кто ищет тот всегда найдёт"),
    ("zh", "刻薄不赚钱，忠厚不折本。", "刻薄不赚钱忠厚不折本"),
])
def test_clean_sentences_keep_their_letters(code, text, transcript):
    sentence = clean_sentence(text, code, 3, 24)
    assert sentence is not None and sentence.spoken == text and sentence.transcript == transcript


@pytest.mark.parametrize("code, text", [
    ("es", "Tengo 3 perros y dos gatos."),  # digits: spoken form unknown
    ("es", "El Sr. García vino a casa hoy."),  # abbreviation
    ("es", "La ONU se reunió en Ginebra ayer."),  # acronym
    ("es", "Carlos V fue un rey de España."),  # roman numeral / stray capital
    ("ru", "Это был Windows для всех людей."),  # Latin letters in Russian
    ("de", "Das kostet 5 % mehr als gestern."),
    ("zh", "我爱Python编程语言和音乐。"),  # cmn would read the Latin word as English letters
    ("zh", "好。"),  # too short
])
def test_cleaner_drops_what_the_engine_would_not_read_as_written(code, text):
    assert clean_sentence(text, code, 3, 24) is None


@needs["zh"]
def test_chinese_uses_only_the_chinese_file_never_the_reserved_poems():
    files = fortune_files(SYNTH_LANGUAGES["zh"])
    assert [p.name for p in files] == ["chinese"]
    sources = {s.source for s in load_language_sentences("zh")}
    assert sources == {"fortunes-zh:chinese"}
    english = {p.name for p in FORTUNE_DIR.glob("*")}
    assert {"tang300", "song100"} <= english  # installed next to the English fortunes ...
    poems = (FORTUNE_DIR / "tang300").read_text(encoding="utf-8").split("\n%\n")[0].strip()[:8]
    assert not any(poems in p for p in fortune_paragraphs())  # ... and the English reader never opens them


@pytest.mark.parametrize("code", sorted(SYNTH_LANGUAGES))
def test_pools_are_large_and_survive_prepare_normalization(code):
    if not _installed(code):
        pytest.skip(f"apt install {SYNTH_LANGUAGES[code].package}")
    pool = load_language_sentences(code)
    assert len(pool) > 5000
    assert list(pool) == sorted(pool, key=lambda s: s.transcript)
    for sentence in pool[::97]:
        assert normalize_text(sentence.spoken, language=code) == sentence.transcript


def test_voices_per_language_and_reserved_ones_refused():
    voices = all_voices(("espeak",), "zh")
    assert voices and all(v.startswith("espeak-cmn+") for v in voices)
    assert {v.split("+")[0] for v in all_voices(("espeak",), "es")} == {"espeak-es", "espeak-es-419"}
    check_voice("espeak-cmn+f2", language="zh")
    with pytest.raises(ConfigError, match="reserved"):
        check_voice("espeak-mb-cn1", language="zh")
    with pytest.raises(ConfigError, match="for language zh"):
        check_voice("espeak-en-us+f2", language="zh")
    with pytest.raises(ConfigError, match="synth.engines"):
        SynthConfig(language="es", engines=["espeak", "flite"]).check()
    with pytest.raises(ConfigError, match="synth.language"):
        SynthConfig(language="xx", engines=["espeak"]).check()


@needs["zh"]
def test_mandarin_corpus_is_seeded_hash_split_and_prepares_without_rejects(tmp_path):
    from asr_dist.shards.prepare import main as prepare

    args = dict(hours=0.006, engines=["espeak"], language="zh", dev_fraction=0.3, workers=2)
    one = synthesize(tmp_path / "one", seed=5, **args)
    two = synthesize(tmp_path / "two", seed=5, **args)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / "one").rglob("*.*"))}
    assert digest == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / "two").rglob("*.*"))}
    assert one["train_utterances"] > 0 and one["dev_utterances"] > 0 and one == {**two, "out_dir": one["out_dir"],
                                                                                 "train_manifest": one["train_manifest"],
                                                                                 "dev_manifest": one["dev_manifest"],
                                                                                 "wall_seconds": one["wall_seconds"],
                                                                                 "x_real_time": one["x_real_time"]}
    for split in ("train", "dev"):
        rows = [json.loads(line) for line in (tmp_path / "one" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert all(r["speaker"].startswith("espeak-cmn+") and r["language"] == "zh" for r in rows)
        assert all(split_of(r["text"], 0.3) == split for r in rows)
        assert all(normalize_text(r["text"], language="zh") == r["text"] for r in rows)
    out = tmp_path / "shards"
    assert prepare([str(tmp_path / "one" / "train.jsonl"), str(out), "--language", "zh", "--workers", "0"]) == 0
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert index["language"] == "zh" and index["num_samples"] == one["train_utterances"]
    assert (out / "rejects.jsonl").read_text() == ""
