"""`asr-dist prepare` (asr_dist/shards/prepare.py): shard round trip, determinism, planted bad inputs."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_dist.corpus.readers import Utterance, read_librispeech, read_manifest
from asr_dist.shards.encode import ctc_frames
from asr_dist.shards.prepare import NothingUsable, main, write_shards
from asr_dist.text import build_vocab


def read_shard_folder(folder: Path) -> tuple[dict, dict[str, dict]]:
    """(index, key -> {"flac": bytes, "json": dict, "shard": name, "tarinfo": [...]}) read with plain tarfile."""
    index = json.loads((folder / "index.json").read_text())
    samples: dict[str, dict] = {}
    for shard in index["shards"]:
        with tarfile.open(folder / shard["name"]) as tar:
            members = tar.getmembers()
            for m in members:
                key, _, ext = m.name.partition(".")
                entry = samples.setdefault(key, {"shard": shard["name"], "tarinfo": []})
                assert ext not in entry, f"{m.name} appears twice"
                entry[ext] = tar.extractfile(m).read()
                entry["tarinfo"].append(m)
    for entry in samples.values():
        entry["json"] = json.loads(entry["json"])
    return index, samples


def read_rejects(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rejects.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- round trip


def test_round_trip_every_sample_once_bit_exact(tiny_corpus, tiny_shards):
    manifest = {u.key: u for u in read_manifest(tiny_corpus.train_manifest)}
    index, samples = read_shard_folder(tiny_shards.train)

    # every manifest utterance is in exactly one shard, in key order, and the index says where
    index_keys = [s["key"] for shard in index["shards"] for s in shard["samples"]]
    assert index_keys == sorted(manifest) and set(samples) == set(manifest)
    assert len(index["shards"]) > 1
    for shard in index["shards"]:
        assert {k for k, v in samples.items() if v["shard"] == shard["name"]} == {s["key"] for s in shard["samples"]}
        assert shard["num_samples"] == len(shard["samples"])
        assert shard["num_bytes"] == (tiny_shards.train / shard["name"]).stat().st_size
        assert shard["total_seconds"] == pytest.approx(sum(s["duration"] for s in shard["samples"]))
    assert index["num_samples"] == len(manifest) and index["sample_rate"] == 16000
    assert index["total_seconds"] == pytest.approx(sum(s["duration"] for sh in index["shards"] for s in sh["samples"]))
    assert read_rejects(tiny_shards.train) == []

    by_key = {s["key"]: s for shard in index["shards"] for s in shard["samples"]}
    for key, utt in manifest.items():
        source, source_rate = sf.read(utt.audio, dtype="int16")
        decoded, rate = sf.read(io.BytesIO(samples[key]["flac"]), dtype="int16")
        info = sf.info(io.BytesIO(samples[key]["flac"]))
        assert (rate, source_rate, info.format, info.subtype, info.channels) == (16000, 16000, "FLAC", "PCM_16", 1)
        np.testing.assert_array_equal(decoded, source)  # lossless: bit-exact
        meta = samples[key]["json"]
        assert meta == {"text": utt.text, "duration": len(source) / 16000, "speaker": utt.speaker,
                        "source": utt.audio, "voice": utt.meta["voice"]}
        assert by_key[key] == {"key": key, "duration": len(source) / 16000, "text": utt.text, "speaker": utt.speaker}
        assert all(m.mtime == 0 and m.uname == "asr_dist" for m in samples[key]["tarinfo"])


def test_processor_vocab_from_training_split(tiny_corpus, tiny_shards):
    train_texts = [u.text for u in read_manifest(tiny_corpus.train_manifest)]
    vocab = json.loads((tiny_shards.processor / "vocab.json").read_text())
    assert vocab == build_vocab(train_texts)
    assert not (tiny_shards.dev / "processor").exists()
    dev_index, _ = read_shard_folder(tiny_shards.dev)
    assert dev_index["num_samples"] == len(list(read_manifest(tiny_corpus.dev_manifest)))


def test_vocab_ignores_rejected_transcripts(tiny_corpus, tmp_path):
    good = list(read_manifest(tiny_corpus.dev_manifest))
    bad = [Utterance(key="ghost", audio=str(tmp_path / "missing.wav"), text="JAZZ QUIZ"),
           Utterance(key="dotted.key", audio=good[0].audio, text="JUMP")]
    summary = write_shards(good + bad, tmp_path / "out", prefix="dev", num_workers=0, write_processor=True)
    assert summary.rejected == {"missing_audio": 1, "bad_key": 1} and summary.num_kept == len(good)
    vocab = json.loads((tmp_path / "out" / "processor" / "vocab.json").read_text())
    assert vocab == build_vocab([u.text for u in good])
    assert not {"J", "Q", "Z"} & set(vocab)


# ----------------------------------------------------------------------------- determinism and conversion


def test_resampled_stereo_input_is_deterministic_whatever_the_worker_count(tiny_corpus, tmp_path):
    """22.05 kHz stereo 24-bit input: resampled to 16 kHz mono; the same bytes with 0 or 2 workers."""
    originals = list(read_manifest(tiny_corpus.train_manifest))[:6]
    utts = []
    for u in originals:
        converted = tmp_path / f"{u.key}.wav"
        subprocess.run(["sox", "-R", u.audio, "-r", "22050", "-c", "2", "-b", "24", str(converted)], check=True)
        utts.append(Utterance(key=u.key, audio=str(converted), text=u.text, speaker=u.speaker))
    one = write_shards(utts, tmp_path / "w0", num_workers=0, target_shard_mb=0.1)
    two = write_shards(reversed(utts), tmp_path / "w2", num_workers=2, target_shard_mb=0.1)
    assert one.num_shards == two.num_shards > 1
    for name in [p.name for p in sorted((tmp_path / "w0").iterdir())]:
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name

    _, samples = read_shard_folder(tmp_path / "w0")
    for u in originals:
        original, _ = sf.read(u.audio, dtype="float64")
        decoded, rate = sf.read(io.BytesIO(samples[u.key]["flac"]), dtype="float64")
        assert rate == 16000 and decoded.ndim == 1
        assert abs(len(decoded) - len(original)) <= 1
        n = min(len(decoded), len(original))
        error = decoded[:n] - original[:n]
        snr_db = 10 * np.log10(np.sum(original[:n] ** 2) / np.sum(error ** 2))
        assert snr_db > 25, f"{u.key}: resampled audio differs from the 16 kHz original (SNR {snr_db:.1f} dB)"


def test_rerun_replaces_shards_and_removes_stale_ones(tiny_corpus, tmp_path):
    utts = list(read_manifest(tiny_corpus.dev_manifest))
    first = write_shards(utts, tmp_path, prefix="dev", num_workers=0, target_shard_mb=0.05)
    assert first.num_shards > 1
    second = write_shards(utts, tmp_path, prefix="dev", num_workers=0, target_shard_mb=100)
    assert second.num_shards == 1
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["dev-000000.tar"]
    index, samples = read_shard_folder(tmp_path)
    assert sorted(samples) == sorted(u.key for u in utts) and index["num_samples"] == len(utts)


# ----------------------------------------------------------------------------- bad inputs


def _speech(tiny_corpus, i: int) -> tuple[np.ndarray, str]:
    utt = list(read_manifest(tiny_corpus.train_manifest))[i]
    audio, _ = sf.read(utt.audio, dtype="int16")
    return audio, utt.text


def test_planted_bad_files_are_each_rejected_and_good_ones_kept(tiny_corpus, tmp_path, capsys):
    root = tmp_path / "LibriSpeech"
    good, bad = root / "100" / "1", root / "100" / "2"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    good_lines, bad_lines, expected = [], [], {}

    for i in range(8):  # good: real speech as FLAC
        audio, text = _speech(tiny_corpus, i)
        sf.write(good / f"100-1-{i:04d}.flac", audio, 16000, subtype="PCM_16")
        good_lines.append(f"100-1-{i:04d} {text}")
    speech, text = _speech(tiny_corpus, 0)
    sf.write(tmp_path / "whole.flac", speech, 16000, subtype="PCM_16")
    sf.write(tmp_path / "whole.wav", speech, 16000, subtype="PCM_16")

    def plant(number: int, reason: str, line: str | None, write=None, suffix=".flac"):
        key = f"100-2-{number:04d}"
        if write is not None:
            write(bad / f"{key}{suffix}")
        if line is not None:
            bad_lines.append(f"{key} {line}")
        expected[key] = reason

    plant(0, "unreadable", text, lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)))
    plant(1, "truncated", text, lambda p: p.write_bytes((tmp_path / "whole.flac").read_bytes()[:15000]))
    plant(2, "truncated", text, lambda p: p.write_bytes((tmp_path / "whole.wav").read_bytes()[:20000]), ".wav")
    plant(3, "empty_audio", text, lambda p: sf.write(p, np.zeros(0, np.int16), 16000), ".wav")
    plant(4, "empty_audio", text, lambda p: sf.write(p, np.zeros(16000, np.int16), 16000))
    plant(5, "empty_text", "", lambda p: sf.write(p, speech, 16000))
    plant(6, "unnormalizable_text", "ROOM 101", lambda p: sf.write(p, speech, 16000))
    plant(7, "too_short_for_ctc", text * 2, lambda p: sf.write(p, speech[: 16000 // 2], 16000))
    plant(8, "too_short", "HI", lambda p: sf.write(p, speech[:1600], 16000))
    plant(9, "too_long", text, lambda p: sf.write(p, np.concatenate([speech] * 5), 16000))  # header says > 7 s
    plant(13, "too_long", text, lambda p: sf.write(p, np.concatenate([speech] * 8)[:16000 * 13 // 2], 16000))  # 6.5 s
    plant(10, "missing_audio", text)
    plant(11, "empty_text", None, lambda p: sf.write(p, speech, 16000))  # audio without a transcript line
    plant(12, "unreadable", text, lambda p: p.write_bytes(b""))
    (good / "100-1.trans.txt").write_text("\n".join(good_lines) + "\n")
    (bad / "100-2.trans.txt").write_text("\n".join(bad_lines) + "\n100-2-0000 A SECOND LINE FOR A KEY\n")
    expected_duplicates = 1  # the second 100-2-0000 line

    out = tmp_path / "shards"
    assert main([str(root), str(out), "--workers", "2", "--max-duration", "6", "--shard-mb", "0.2"]) == 0
    table = capsys.readouterr().out

    index, samples = read_shard_folder(out)
    assert sorted(samples) == sorted(f"100-1-{i:04d}" for i in range(8))  # nothing good lost
    rejects = read_rejects(out)
    duplicates = [r for r in rejects if r["reason"] == "duplicate_key"]
    assert len(duplicates) == expected_duplicates and duplicates[0]["key"] == "100-2-0000"
    by_key = {r["key"]: r for r in rejects if r["reason"] != "duplicate_key"}
    assert {k: r["reason"] for k, r in by_key.items()} == expected
    for key, r in by_key.items():
        assert Path(r["source"]).parent == bad and Path(r["source"]).stem == key and r["detail"]
    assert "no transcript line" in by_key["100-2-0011"]["detail"]
    assert "declares" in by_key["100-2-0002"]["detail"]

    counts = {}
    for r in rejects:
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    for reason, count in counts.items():  # the summary table lists every reason with its count
        assert any(line.split() == [reason, str(count)] for line in table.splitlines()), (reason, table)
    assert "kept" in table and f"{len(rejects)}" in table


def test_too_short_for_ctc_matches_the_wav2vec2_frame_count(tmp_path):
    """The limit sits exactly at the conv stack's output length: one sample fewer is rejected."""
    text = "ABAB"  # 4 labels, no repeats
    frames_needed = 4
    n = next(n for n in range(400, 3000) if ctc_frames(n) >= frames_needed)
    rng = np.random.default_rng(1)
    for name, length in (("fits", n), ("short", n - 1)):
        sf.write(tmp_path / f"{name}.wav", (rng.standard_normal(length) * 3000).astype(np.int16), 16000)
    utts = [Utterance(key=k, audio=str(tmp_path / f"{k}.wav"), text=text) for k in ("fits", "short")]
    summary = write_shards(utts, tmp_path / "out", num_workers=0, min_duration=0.0)
    assert summary.num_kept == 1 and summary.rejected == {"too_short_for_ctc": 1}
    assert read_rejects(tmp_path / "out")[0]["key"] == "short"
    assert n == 400 + 3 * 320  # receptive field 400 samples, then a frame every 320 (20 ms)


def test_ctc_frames_agrees_with_transformers():
    import torch
    from transformers import Wav2Vec2Config
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2PreTrainedModel

    lengths = torch.arange(300, 50000, 37)
    model_like = type("ModelLike", (), {"config": Wav2Vec2Config()})()
    theirs = Wav2Vec2PreTrainedModel._get_feat_extract_output_lengths(model_like, lengths)
    assert [ctc_frames(int(n)) for n in lengths] == theirs.tolist()


def test_fails_only_when_nothing_is_usable(tmp_path, capsys):
    (tmp_path / "junk.flac").write_bytes(b"not audio at all")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "junk.flac", "text": "HELLO"}) + "\n"
                        + json.dumps({"audio": "junk.flac", "text": "42", "key": "other"}) + "\n")
    with pytest.raises(NothingUsable, match="all 2 inputs were rejected"):
        write_shards(read_manifest(manifest), tmp_path / "out", num_workers=0)
    assert not (tmp_path / "out" / "index.json").exists()
    assert {r["reason"] for r in read_rejects(tmp_path / "out")} == {"unreadable", "unnormalizable_text"}
    assert main([str(manifest), str(tmp_path / "out2"), "--workers", "0"]) == 1
    assert main([str(tmp_path / "nowhere.csv"), str(tmp_path / "out3")]) == 2
    assert "nowhere.csv" in capsys.readouterr().err
