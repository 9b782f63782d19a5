"""Every language as a table entry (asr_dist/text): normalization, vocabulary, error rates, and the
language travelling from `asr-dist prepare` through index.json to training and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from asr_dist.text import (
    LANGUAGES,
    TextRules,
    UnknownLanguage,
    UnnormalizableText,
    build_processor,
    build_vocab,
    load_processor,
    normalize_text,
    processor_language,
    vocab_report,
)
from asr_dist.text.scoring import error_rates, mixed_tokens, primary_metric


@pytest.mark.parametrize("language, raw, expected", [
    ("es", "El niño comió pingüino.", "el niño comió pingüino"),
    ("es", "¿Qué tal? ¡Muy bien!", "qué tal muy bien"),
    ("de", "Straße, Größe – Äpfel!", "straße größe äpfel"),
    ("fr", "L’homme est là, n'est-ce pas ?", "l'homme est là n'est ce pas"),
    ("ru", "Привет, мир! Ёлка.", "привет мир ёлка"),
    ("el", "Καλημέρα κόσμε", "καλημέρα κόσμε"),
    ("zh", "你好，世界！", "你好世界"),
    ("zh", "我爱 Python 编程。", "我爱python编程"),  # a Latin word inside Chinese stays a word
    ("zh", "我说：“Hello, World!”了", "我说hello world了"),
    ("zh", "「引号」《书名》、顿号；", "引号书名顿号"),  # full-width CJK punctuation goes
    ("zh", "ＡＢＣ全角", "abc全角"),  # full-width Latin folded
    ("ja", "カタカナー、ひらがな。漢字々", "カタカナーひらがな漢字々"),
    ("hi", "नमस्ते दुनिया।", "नमस्ते दुनिया"),  # vowel signs and virama (marks) stay
    ("ko", "안녕하세요, 세계!", "안녕하세요 세계"),
])
def test_each_language_keeps_its_letters_and_accents(language, raw, expected):
    assert normalize_text(raw, language=language) == expected


def test_decomposed_accents_come_out_composed_nfc():
    decomposed = "nin\u0303o"  # n + combining tilde
    assert normalize_text(decomposed, language="es") == "ni\u00f1o"
    assert normalize_text("ni\u00f1o", language="es", strip_accents=True) == "nino"


def test_english_is_librispeech_exactly():
    assert TextRules().resolved() == TextRules(language="en", keep_apostrophes=True, strip_accents=True, case="upper")
    assert normalize_text("Café, naïve O’Brien's well-known") == "CAFE NAIVE O'BRIEN'S WELL KNOWN"
    with pytest.raises(UnnormalizableText, match="outside en"):
        normalize_text("smørrebrød")  # ø is Latin, but not in A-Z


def test_foreign_script_is_rejected_naming_the_letters_and_script():
    with pytest.raises(UnnormalizableText) as info:
        normalize_text("hola Привет", language="es")
    assert info.value.foreign == "ПРИВЕТ".lower() and info.value.unspeakable == ""
    message = str(info.value)
    assert "'п'" in message and "Cyrillic" in message and "es (Spanish)" in message
    assert normalize_text("hola Привет", language="es", unspeakable="drop") == "hola"


def test_digit_message_lists_each_digit_and_names_the_option():
    with pytest.raises(UnnormalizableText) as info:
        normalize_text("I have 3 cats and 5 dogs")
    message = str(info.value)
    assert "'3', '5'" in message and "35" not in message  # never a number that is not in the text
    assert "--unspeakable" in message and info.value.unspeakable == "35" and info.value.foreign == ""
    with pytest.raises(UnnormalizableText, match="'1', '0'"):
        normalize_text("我有100个", language="zh")


def test_unknown_language_and_table_invariants():
    with pytest.raises(UnknownLanguage, match="xx"):
        TextRules(language="xx")
    assert {"en", "es", "de", "it", "ru", "zh", "ja"} <= set(LANGUAGES)
    for code, lang in LANGUAGES.items():
        assert lang.code == code and lang.case in ("upper", "lower", "keep")
        assert lang.primary_metric == ("wer" if lang.spaced and code != "ko" else "cer")
        assert set(lang.unspaced) <= set(lang.scripts)


def test_rules_round_trip_through_index_json_form():
    rules = TextRules(language="zh", unspeakable="drop").resolved()
    assert TextRules.from_dict(json.loads(json.dumps(rules.to_dict()))) == rules
    assert TextRules.from_dict(None) == TextRules()  # an index.json from before languages: English


# ----------------------------------------------------------------------------- vocabulary


def test_processor_round_trips_accented_and_chinese_text(tmp_path):
    texts = ["el niño comió pingüino", "我爱python编程", "我说hello world了"]
    build_processor(texts, tmp_path / "p", language="zh")
    processor = load_processor(tmp_path / "p")
    tok = processor.tokenizer
    assert type(processor).__name__ == "Wav2Vec2Processor" and type(tok).__name__ == "Wav2Vec2CTCTokenizer"
    assert processor_language(processor) == "zh"
    for text in texts:
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, group_tokens=False) == text
    assert "ñ" in tok.get_vocab() and "编" in tok.get_vocab()


def test_rare_characters_map_to_unk_and_are_reported():
    texts = ["aab", "ab", "abc"]  # a:4 b:3 c:1
    vocab = build_vocab(texts, min_count=2)
    assert list(vocab)[3:] == ["a", "b"]
    report = vocab_report(texts, min_count=2)
    assert report.rare_chars == "c" and report.rare_occurrences == 1 and report.total_chars == 8
    assert report.rare_share == pytest.approx(1 / 8) and report.vocab_size == 5
    processor = build_processor(texts, min_count=2)
    assert processor.tokenizer("abc").input_ids[-1] == processor.tokenizer.unk_token_id
    assert processor_language(processor) is None and processor_language(processor, "en") == "en"


# ----------------------------------------------------------------------------- scores


def test_mixed_error_rate_tokens_and_primary_metric():
    assert mixed_tokens("我说hello world了", "zh") == "我 说 hello world 了"
    assert mixed_tokens("hello  world", "en") == "hello world"
    rates = error_rates(["我说hello world了"], ["我说hallo world"], "zh")
    assert rates["wer"] is None and rates["mer"] == pytest.approx(2 / 5)  # hallo substituted, 了 deleted
    assert rates["cer"] == pytest.approx(2 / 14)
    en = error_rates(["THE CAT"], ["THE CAP"], "en")
    assert en == {"wer": 0.5, "cer": pytest.approx(1 / 7), "mer": None}
    assert primary_metric("zh") == "cer" and primary_metric("en") == "wer" and primary_metric("zh", "mer") == "mer"
    with pytest.raises(ValueError, match="without spaces"):
        primary_metric("zh", "wer")


def test_score_names_the_primary_metric_and_checkpoint_metrics():
    from asr_dist.evaluate import score

    records = [{"key": "a", "ref": "你好世界", "hyp": "你好", "subset": "v1", "loss": 1.0, "tokens": 4},
               {"key": "b", "ref": "我说hello", "hyp": "我说hello", "subset": "v2", "loss": 1.0, "tokens": 7}]
    result = score(records, language="zh")
    assert result.primary_metric == "cer" and result.wer is None
    assert result.primary == result.cer == pytest.approx(2 / 11)
    assert result.mer == pytest.approx(2 / 7)
    assert result.checkpoint_metrics() == {"cer": result.cer, "mer": result.mer, "primary_metric": "cer"}
    scalars = result.scalars()
    assert "eval/wer" not in scalars and scalars["eval/primary"] == result.cer and scalars["eval/primary_metric"] == "cer"
    assert result.subsets["v2"].cer == 0.0 and result.subsets["v1"].wer is None
    assert "CER*" in result.format()
    english = score([{**r, "ref": "THE CAT", "hyp": "THE CAP"} for r in records])
    assert english.primary_metric == "wer" and "eval/primary" not in english.scalars()  # English logs as before
    assert english.checkpoint_metrics()["primary_metric"] == "wer"


# ----------------------------------------------------------------------------- prepare -> index -> training


def _manifest(tmp_path, texts: dict[str, str]):
    rng = np.random.default_rng(0)
    lines = []
    for key, text in texts.items():
        wave = (0.2 * np.sin(2 * np.pi * rng.uniform(150, 600) * np.arange(24000) / 16000)).astype(np.float32)
        sf.write(tmp_path / f"{key}.wav", wave, 16000)
        lines.append(json.dumps({"key": key, "audio": f"{key}.wav", "text": text}, ensure_ascii=False))
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_prepare_spanish_keeps_accents_rejects_cyrillic_and_records_the_language(tmp_path, capsys):
    from asr_dist.data.index import load_index
    from asr_dist.shards.prepare import main

    manifest = _manifest(tmp_path, {"a": "El niño comió pingüino.", "b": "Hola, ¿qué tal?", "c": "Привет, amigo"})
    out = tmp_path / "es"
    assert main([str(manifest), str(out), "--language", "es", "--processor", "--workers", "0"]) == 0
    table = capsys.readouterr().out
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert index["language"] == "es" and index["text_rules"]["strip_accents"] is False
    assert all(s["language"] == "es" for s in index["shards"])
    texts = {s["key"]: s["text"] for sh in index["shards"] for s in sh["samples"]}
    assert texts == {"a": "el niño comió pingüino", "b": "hola qué tal"}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["key"], r["reason"]) for r in rejects] == [("c", "foreign_script")]
    assert rejects[0]["source"].endswith("c.wav") and "'п'" in rejects[0]["detail"] and "Cyrillic" in rejects[0]["detail"]
    assert "foreign_script" in table and "es" in table
    assert load_index(str(out)).language == "es"
    processor = load_processor(out / "processor")
    assert processor_language(processor) == "es"
    ids = processor.tokenizer("el niño comió pingüino").input_ids
    assert processor.tokenizer.decode(ids, group_tokens=False) == "el niño comió pingüino"


def test_prepare_reports_characters_mapped_to_unk(tmp_path, capsys):
    from asr_dist.shards.prepare import write_shards
    from asr_dist.corpus.readers import read_manifest

    manifest = _manifest(tmp_path, {"a": "你好你好", "b": "你好世界"})
    summary = write_shards(read_manifest(manifest), tmp_path / "zh", num_workers=0, write_processor=True,
                           text_rules=TextRules(language="zh"), min_char_count=2)
    assert summary.language == "zh" and sorted(summary.rare_chars) == ["世", "界"]
    assert summary.rare_share == pytest.approx(2 / 8) and summary.vocab_size == 5
    assert "[UNK]" in summary.table() and "25.00 %" in summary.table()


def test_old_index_reads_as_english_and_mixed_shards_are_refused(tmp_path):
    from asr_dist.data.index import ShardIndexError, load_index
    from tests._shard_factory import write_tiny_shards

    folder = write_tiny_shards(tmp_path / "old", [2, 2])
    assert load_index(str(folder)).language == "en"  # written before languages: no field
    index = json.loads((folder / "index.json").read_text())
    index["language"] = "es"
    index["shards"][0]["language"], index["shards"][1]["language"] = "es", "zh"
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardIndexError, match="mix the text rules of 2 languages .*es: train-000000.*zh: train-000001"):
        load_index(str(folder))


def test_training_refuses_train_and_eval_shards_of_two_languages(tmp_path):
    from asr_dist.config import DataConfig
    from asr_dist.data.language import LanguageMismatch, run_language
    from tests._shard_factory import tiny_processor, write_tiny_shards

    train = write_tiny_shards(tmp_path / "train", [2])
    dev = write_tiny_shards(tmp_path / "dev", [2], prefix="dev")
    processor = tiny_processor()
    cfg = DataConfig(train_shards=str(train), eval_shards=str(dev))
    assert run_language(cfg, processor) == "en"
    index = json.loads((dev / "index.json").read_text())
    index["language"] = "de"
    (dev / "index.json").write_text(json.dumps(index))
    with pytest.raises(LanguageMismatch, match=r"training source 'train' .*'en'.*eval set 'eval' .*'de'"):
        run_language(cfg, processor)
    spanish = build_processor(["hola"], language="es")
    with pytest.raises(LanguageMismatch, match="processor's vocabulary: 'es'"):
        run_language(DataConfig(train_shards=str(train)), spanish)


def test_report_names_the_primary_metric(tmp_path):
    from asr_dist.evaluate import score
    from asr_dist.report import RunMetrics, _summary_rows

    records = [{"key": "a", "ref": "你好世界", "hyp": "你好", "subset": None, "loss": 1.0, "tokens": 4}]
    eval_result = score(records, language="zh").to_dict()
    rows = dict(_summary_rows(RunMetrics(), eval_result, {}))
    assert rows["primary metric"] == "CER (language zh)"
    assert "50" in rows["final eval CER"]
    english = dict(_summary_rows(RunMetrics(), score(
        [{**records[0], "ref": "A B", "hyp": "A"}]).to_dict(), {}))
    assert "primary metric" not in english


# ----------------------------------------------------------------------------- end to end


def _train(tmp_path, train, dev, run_dir):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "asr_dist.train", "--config", str(repo / "configs" / "train" / "tiny.yaml"),
           f"data.train_shards={train}", f"data.eval_shards={dev}", f"train.run_dir={run_dir}", "train.max_steps=3",
           "data.max_batch_seconds=4.0", "data.max_duration=4.0"]
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_spanish_survives_prepare_train_export_pipeline_and_mixed_languages_are_refused(tmp_path):
    import transformers

    from asr_dist.shards.prepare import main as prepare

    texts = {f"u{i}": t for i, t in enumerate(["El niño comió pingüino.", "¿Qué pasó, señor Muñoz?",
                                               "La cigüeña voló sobre el árbol.", "Él está aquí."])}
    manifest = _manifest(tmp_path, texts)
    assert prepare([str(manifest), str(tmp_path / "train"), "--language", "es", "--processor", "--workers", "0"]) == 0
    assert prepare([str(manifest), str(tmp_path / "dev"), "--language", "es", "--prefix", "dev", "--workers", "0"]) == 0
    run_dir = tmp_path / "run"
    proc = _train(tmp_path, tmp_path / "train", tmp_path / "dev", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["language"] == "es" and result["primary_metric"] == "wer" and result["mer"] is None
    asr = transformers.pipeline("automatic-speech-recognition", model=str(run_dir / "export"), device="cpu")
    tokenizer = asr.tokenizer
    assert processor_language(tokenizer) == "es"
    for text in ("el niño comió pingüino", "qué pasó señor muñoz"):
        ids = tokenizer(text).input_ids
        assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids, group_tokens=False) == text
    assert isinstance(asr(str(tmp_path / "u0.wav"))["text"], str)

    assert prepare([str(manifest), str(tmp_path / "dev_en"), "--prefix", "dev", "--workers", "0",
                    "--unspeakable", "drop"]) == 0  # the same audio under English rules
    proc = _train(tmp_path, tmp_path / "train", tmp_path / "dev_en", tmp_path / "mixed")
    assert proc.returncode != 0
    assert "mixes the text rules of different languages" in proc.stderr and "'es'" in proc.stderr and "'en'" in proc.stderr
