"""Language models: KenLM build (words, characters, dev/test leak check), checks before decoding, beam search that
fixes what greedy misspells, alpha/beta tuning, and exports that transformers.pipeline decodes with the LM."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from asr_dist.lm.build import (ARPA_FILE, BINARY_FILE, LMBuildConfig, LMBuildError, LMLeakError, build_lm,
                               find_tool, sentence_hash)
from asr_dist.lm.decode import LMDecoder
from asr_dist.lm.store import LMError, open_lm
from _shard_factory import write_tiny_shards
from _tiny_model import audio, save_tiny_export, tiny_model_and_processor
from _ranks import REPO

try:
    find_tool("lmplz"), find_tool("build_binary")
    HAVE_KENLM = True
except LMBuildError:
    HAVE_KENLM = False
pytestmark = pytest.mark.skipif(not HAVE_KENLM, reason="KenLM's lmplz/build_binary not built (make kenlm)")

SENTENCES = ["HELLO WORLD", "THE QUICK BROWN FOX", "THE LAZY DOG", "HELLO THE WORLD", "THE BROWN DOG",
             "JUMPS OVER THE LAZY DOG", "DON'T PANIC", "HELLO FOX"] * 5


@pytest.fixture(scope="module")
def vocab():
    return tiny_model_and_processor()[1].tokenizer.get_vocab()


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "words"
    text = out.parent / "text.txt"
    text.write_text("\n".join(s.lower() + "." for s in SENTENCES) + "\n3 apples\n")  # normalized as the corpus is
    build_lm(out, text_files=[text], cfg=LMBuildConfig(order=3))
    return out


def peaky_export(out):
    """The tiny untrained export with a sharper output layer: confident frames, as a trained model has (flat
    random logits make beam search explore every path and take minutes)."""
    import torch

    model, processor = tiny_model_and_processor()
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


def one_hot(vocab, path: list[str], hot: float = 8.0) -> np.ndarray:
    """[T, V] logits: each frame's label hot; a frame 'A/B' is an almost-tie that greedy resolves to A."""
    x = np.zeros((len(path), len(vocab)), dtype=np.float32)
    for t, item in enumerate(path):
        first, *second = item.split("/")
        x[t, vocab[first]] = hot
        if second:
            x[t, vocab[second[0]]] = hot - 0.2
    return x


def frames(text: str) -> list[str]:
    """CTC path for `text`: every label followed by a blank, spaces as the word delimiter."""
    return [p for c in text for p in ("|" if c == " " else c, "[PAD]")]


# ----------------------------------------------------------------------------- build


def test_word_lm_is_normalized_like_the_corpus_and_scores_seen_text_higher(word_lm):
    import kenlm

    meta = json.loads((word_lm / "lm.json").read_text())
    assert meta["units"] == "word" and meta["order"] == 3 and meta["model_file"] == BINARY_FILE
    assert meta["sentences"] == len(SENTENCES) and meta["skipped_unnormalizable"] == 1  # "3 apples": digits
    assert set((word_lm / "unigrams.txt").read_text().split()) == {w for s in SENTENCES for w in s.split()}
    arpa = (word_lm / ARPA_FILE).read_text()
    assert "ngram 3=" in arpa and "\tDON'T" in arpa and "hello" not in arpa  # upper case, inner apostrophe kept
    model = kenlm.Model(str(word_lm / BINARY_FILE))
    assert model.order == 3
    assert model.score("THE LAZY DOG") > model.score("DOG LAZY THE") + 2


def test_dev_sentences_are_refused_by_normalized_hash_and_named(tmp_path):
    dev = write_tiny_shards(tmp_path / "dev", [4], seed=3, prefix="dev")
    dev_texts = [s["text"] for s in json.loads((dev / "index.json").read_text())["shards"][0]["samples"]]
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox\n" + dev_texts[0].lower().replace(" ", ",  ") + "!\n")  # same once normalized
    with pytest.raises(LMLeakError, match=rf"1 sentence\(s\) of {dev}.*'{dev_texts[0]}'"):
        build_lm(tmp_path / "lm", text_files=[text], protect_shards=[dev], cfg=LMBuildConfig(order=2))
    assert not (tmp_path / "lm" / ARPA_FILE).exists()
    meta = build_lm(tmp_path / "lm", text_files=[text], protect_shards=[dev], cfg=LMBuildConfig(order=2),
                    drop_overlap=True)
    assert meta["sentences"] == 1 and meta["dropped_overlap"] == 1 and meta["protected"] == [str(dev)]
    assert sentence_hash("A  B") == sentence_hash("A B")


def test_lm_from_training_shards_and_cli(tmp_path):
    train = write_tiny_shards(tmp_path / "train", [5, 5], seed=1)
    proc = subprocess.run([sys.executable, "-m", "asr_dist.cli", "lm", "build", str(tmp_path / "lm"), "--shards",
                           str(train), "--order", "2", "--no-binary"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "lm" / "lm.json").read_text())
    assert meta["sentences"] == 10 and meta["model_file"] == ARPA_FILE and meta["sources"] == [str(train)]
    assert not (tmp_path / "lm" / BINARY_FILE).exists()


def test_character_lm_for_chinese_decodes_without_word_delimiter(tmp_path):
    chars = sorted(set("我们喜欢学习中文他们今天去学校"))
    cn_vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    lines = ["我们喜欢学习中文", "他们今天去学校", "我们今天学习", "他们喜欢中文"] * 5
    meta = build_lm(tmp_path / "zh", sentences=lines, cfg=LMBuildConfig(order=3, units="char"),
                    normalize=str.strip)  # per-language rules are another module's; identity here
    assert meta["units"] == "char" and meta["tokens"] == sum(map(len, lines))
    assert set((tmp_path / "zh" / "unigrams.txt").read_text().split()) == set("".join(lines))
    # "学习" with 习 nearly tied with 校 in the acoustic scores: greedy says 学校, the LM says 学习
    path = [p for c in "我们喜欢学习" for p in ((c if c != "习" else "校/习"), "[PAD]")]
    logits = one_hot(cn_vocab, path)
    greedy = "".join(chars[i - 3] for i in logits.argmax(-1) if i >= 3)
    assert greedy == "我们喜欢学校"
    with LMDecoder(tmp_path / "zh", cn_vocab, alpha=1.0, beta=0.0, beam_width=16, processes=1) as dec:
        assert dec.backend == "torchaudio"
        assert dec.decode([logits]) == ["我们喜欢学习"]


# ----------------------------------------------------------------------------- decoding


def test_beam_search_with_the_lm_fixes_a_misspelling_greedy_makes(word_lm, vocab):
    # "HELLO WORLD" where O/U is an almost-tie in HELLO's O: greedy reads HELLU
    path = frames("HELL") + ["U/O", "[PAD]"] + frames(" WORLD")
    logits = [one_hot(vocab, path), one_hot(vocab, frames("THE LAZY DOG"))]
    ids = logits[0].argmax(-1)
    inv = {i: t for t, i in vocab.items()}
    assert "".join(inv[i] for i in ids if inv[i] not in ("[PAD]",)).replace("|", " ") == "HELLU WORLD"
    with LMDecoder(word_lm, vocab, alpha=0.5, beta=1.0, beam_width=32, processes=1) as one:
        single = one.decode(logits)
    assert single == ["HELLO WORLD", "THE LAZY DOG"]
    with LMDecoder(word_lm, vocab, alpha=0.5, beta=1.0, beam_width=32, processes=2) as two:
        assert two.decode(logits) == single  # pool of 2 processes, same texts
    with LMDecoder(word_lm, vocab, alpha=0.5, beta=1.0, beam_width=32, backend="torchaudio", processes=1) as ta:
        assert ta.decode(logits) == single


def test_missing_corrupt_or_mismatched_lm_is_an_error_before_decoding(word_lm, vocab, tmp_path):
    with pytest.raises(LMError, match="does not exist"):
        LMDecoder(tmp_path / "nope", vocab)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LMError, match="no lm.json"):
        open_lm(tmp_path / "empty")
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(word_lm, corrupt)
    (corrupt / BINARY_FILE).write_bytes(b"\x00garbage" * 100)
    with pytest.raises(LMError, match=r"lm.bin: KenLM cannot load it"):
        LMDecoder(corrupt, vocab)
    (corrupt / BINARY_FILE).unlink()
    with pytest.raises(LMError, match="lacks lm.bin"):
        open_lm(corrupt)
    lower = build_lm(tmp_path / "lower", sentences=["hello world", "éte"], normalize=str.strip,
                     cfg=LMBuildConfig(order=2))
    assert lower["alphabet"][0] == "d"
    with pytest.raises(LMError, match=r"characters the model's vocabulary lacks: 'dehlortwé'"):
        LMDecoder(tmp_path / "lower", vocab)


def test_evaluate_cli_with_a_bad_lm_fails_before_running_the_model(tmp_path):
    model = save_tiny_export(tmp_path / "model")
    shards = write_tiny_shards(tmp_path / "dev", [3], prefix="dev")
    proc = subprocess.run([sys.executable, "-m", "asr_dist.cli", "evaluate", str(model), str(shards), "--lm",
                           str(tmp_path / "missing")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not list(model.glob("eval-*.json"))
    proc = subprocess.run([sys.executable, "-m", "asr_dist.cli", "export", str(tmp_path / "no-checkpoint"),
                           str(tmp_path / "out"), "--lm", str(tmp_path / "missing")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and "LM folder" in proc.stderr and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- evaluate, tune, export


@pytest.mark.slow  # ~30 s idle: runs the network over shards, 4 grid points, a CLI subprocess
def test_evaluate_with_lm_and_tune_store_scores_and_params(word_lm, tmp_path):
    import shutil

    from asr_dist.lm.score import evaluate_with_lm
    from asr_dist.lm.tune import tune

    lm = tmp_path / "lm"
    shutil.copytree(word_lm, lm)
    model = save_tiny_export(tmp_path / "model")
    dev = write_tiny_shards(tmp_path / "dev", [4, 3], prefix="dev")
    out = evaluate_with_lm(model, dev, lm, alpha=0.5, beta=1.0, beam_width=8, processes=2)
    assert out["greedy"].num_samples == out["lm"].num_samples == 7
    assert out["decode"]["processes"] == 2 and out["decode"]["lm_decode_x_real_time"] > 0
    tuned = tune(model, dev, lm, alphas=(0.0, 0.5), betas=(0.0, 2.0), beam_width=8, processes=2)
    assert len(tuned["grid"]) == 4 and tuned["wer"] == min(g["wer"] for g in tuned["grid"])
    meta = json.loads((lm / "lm.json").read_text())
    assert (meta["tuned"]["alpha"], meta["tuned"]["beta"]) == (tuned["alpha"], tuned["beta"])
    assert open_lm(lm).params() == (tuned["alpha"], tuned["beta"])
    proc = subprocess.run([sys.executable, "-m", "asr_dist.cli", "evaluate", str(model), str(dev), "--lm", str(lm),
                           "--beam-width", "8", "--output", str(tmp_path / "e.json")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["decode"]["alpha"] == tuned["alpha"] and len(saved["lm"]["utterances"]) == 7
    assert "real time" in proc.stdout


@pytest.mark.slow  # ~40 s idle: pipeline() on 6 files twice, a 60 s file, a CLI subprocess
def test_export_with_lm_decodes_in_pipeline_like_transcribe_lm(word_lm, tmp_path):
    import transformers

    from asr_dist.lm.export import add_lm
    from asr_dist.transcribe import build_transcriber, load_audio, transcribe

    plain = peaky_export(tmp_path / "plain")
    exported = add_lm(peaky_export(tmp_path / "export"), word_lm, alpha=0.7, beta=0.3)
    assert (exported / "language_model" / BINARY_FILE).is_file()
    attrs = json.loads((exported / "language_model" / "attrs.json").read_text())
    assert (attrs["alpha"], attrs["beta"]) == (0.7, 0.3)
    files = []
    for i in range(6):
        f = tmp_path / f"a{i}.wav"
        sf.write(f, audio(0.8 + 0.3 * i, seed=i), 16000)
        files.append(f)
    pipe = transformers.pipeline("automatic-speech-recognition", model=str(exported), device="cpu")
    assert pipe.type == "ctc_with_lm"
    by_pipeline = [pipe({"raw": load_audio(f, 16000), "sampling_rate": 16000})["text"] for f in files]
    by_transcribe = [t for _, t in transcribe(build_transcriber(plain, lm_dir=word_lm, alpha=0.7, beta=0.3), files)]
    assert by_pipeline == by_transcribe
    proc = subprocess.run([sys.executable, "-m", "asr_dist.cli", "transcribe", str(plain), *map(str, files[:3]),
                           "--lm", str(word_lm), "--alpha", "0.7", "--beta", "0.3"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t", 1)[1] for line in proc.stdout.splitlines()] == by_pipeline[:3]
    assert any(by_pipeline)
    # 60 s file: chunked long-form decoding with word timestamps
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([audio(3.0, seed=i % 7) for i in range(20)]), 16000)
    out = transformers.pipeline("automatic-speech-recognition", model=str(exported), device="cpu",
                                chunk_length_s=10)({"raw": load_audio(long, 16000), "sampling_rate": 16000},
                                                    return_timestamps="word", decoder_kwargs={"beam_width": 8})
    assert " ".join(c["text"] for c in out["chunks"]) == out["text"]
    starts = [c["timestamp"][0] for c in out["chunks"]]
    assert starts == sorted(starts) and all(0 <= s <= 60 for s in starts)
    if out["chunks"]:
        assert max(c["timestamp"][1] for c in out["chunks"]) > 10  # words found beyond the first chunk


@pytest.mark.slow  # ~15 s idle: the network over 5 utterances
def test_final_eval_with_lm_adds_lm_scores_beside_greedy_in_eval_json(word_lm, tmp_path):
    from asr_dist.lm.score import check_lm_for_training, final_eval_with_lm

    model = peaky_export(tmp_path / "export")
    dev = write_tiny_shards(tmp_path / "dev", [5], prefix="dev")
    (tmp_path / "eval.json").write_text(json.dumps({"wer": 0.9, "cer": 0.5}))
    summary = final_eval_with_lm(model, dev, word_lm, tmp_path)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert (saved["wer"], saved["cer"]) == (0.9, 0.5) and saved["lm"] == summary
    assert set(summary) >= {"wer", "cer", "greedy_wer", "greedy_cer", "alpha", "beta", "lm_decode_x_real_time"}
    assert len(summary["examples"]) == 5
    import transformers

    processor = transformers.Wav2Vec2Processor.from_pretrained(str(model))
    check_lm_for_training(word_lm, processor)
    with pytest.raises(LMError, match="does not exist"):
        check_lm_for_training(tmp_path / "nope", processor)
