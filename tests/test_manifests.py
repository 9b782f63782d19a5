"""Importing other tools' manifests: NeMo JSON manifests (audio_filepath, duration, text, offset) into shards,
with the same rejects report, and a manifest's wrong duration reported (docs/data_sources.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from asr_dist.corpus.readers import CorpusError, read_manifest
from asr_dist.shards.prepare import write_shards


def tone(path, seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.fixture
def nemo(tmp_path):
    tone(tmp_path / "a.wav", 1.5)
    tone(tmp_path / "b.wav", 2.0)
    tone(tmp_path / "long.wav", 6.0)
    rows = [{"audio_filepath": "a.wav", "duration": 1.5, "text": "hello world"},
            {"audio_filepath": str(tmp_path / "b.wav"), "duration": 3.7, "text": "a wrong duration"},
            {"audio_filepath": "long.wav", "offset": 2.0, "duration": 1.25, "text": "a segment"},
            {"audio_filepath": "long.wav", "offset": 9.0, "duration": 1.0, "text": "past the end"}]
    manifest = tmp_path / "train_manifest.json"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_nemo_field_names_are_read(nemo):
    utts = {u.key: u for u in read_manifest(nemo)}
    assert sorted(utts) == ["a", "b", "long-000002000", "long-000009000"]
    assert utts["a"].audio == str(nemo.parent / "a.wav") and utts["a"].text == "hello world"
    assert utts["long-000002000"].offset == 2.0 and utts["long-000002000"].duration == 1.25
    assert "audio_filepath" not in utts["a"].meta


def test_nemo_manifest_into_shards_with_rejects_and_a_duration_warning(nemo, tmp_path):
    out = tmp_path / "shards"
    summary = write_shards(read_manifest(nemo), out, num_workers=1)
    index = json.loads((out / "index.json").read_text())
    durations = {s["key"]: s["duration"] for shard in index["shards"] for s in shard["samples"]}
    assert durations == {"a": 1.5, "b": 2.0, "long-000002000": 1.25}  # the audio's lengths, the segment cut
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["key"], r["reason"]) for r in rejects] == [("long-000009000", "bad_segment")]
    warnings = [json.loads(line) for line in (out / "warnings.jsonl").read_text().splitlines()]
    assert [(w["key"], w["reason"]) for w in warnings] == [("b", "duration_mismatch")]
    assert "3.700 s" in warnings[0]["detail"] and "2.000 s" in warnings[0]["detail"]
    assert summary.warned == {"duration_mismatch": 1} and summary.rejected == {"bad_segment": 1}
    assert "kept with warnings" in summary.table()


def test_missing_fields_name_the_accepted_spellings(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"wav": "a.wav", "text": "hi"}) + "\n")
    with pytest.raises(CorpusError, match=r"m\.json:1: missing field\(s\) audio \(or audio_filepath"):
        list(read_manifest(manifest))
    manifest.write_text(json.dumps({"audio_filepath": "a.wav", "text": "hi", "offset": 1.0}) + "\n")
    with pytest.raises(CorpusError, match="offset 1.0 needs a duration"):
        list(read_manifest(manifest))


def test_hugging_face_dataset_saved_to_disk_into_shards(tmp_path):
    datasets = pytest.importorskip("datasets")
    for i, seconds in enumerate([1.0, 1.5, 0.05]):
        tone(tmp_path / f"clip{i}.wav", seconds)
    (tmp_path / "clip3.wav").write_bytes(b"not audio at all")
    ds = datasets.Dataset.from_dict({"audio": [str(tmp_path / f"clip{i}.wav") for i in range(4)],
                                     "sentence": ["hello there", "good morning", "too short", "broken"],
                                     "client_id": ["s1", "s2", "s1", "s2"], "id": ["u0", "u1", "u2", "u3"],
                                     "accent": ["x", "y", "x", "y"]})
    ds.cast_column("audio", datasets.Audio(sampling_rate=16000)).save_to_disk(tmp_path / "hf" / "train")
    for i in range(4):
        (tmp_path / f"clip{i}.wav").unlink()  # the saved dataset holds the bytes itself

    from asr_dist.corpus.readers import open_corpus
    with pytest.raises(CorpusError, match="holds the splits"):
        datasets.DatasetDict({"train": ds}).save_to_disk(tmp_path / "dd")
        list(open_corpus(tmp_path / "dd"))
    out = tmp_path / "shards"
    summary = write_shards(open_corpus(tmp_path / "hf" / "train"), out, num_workers=2)
    index = json.loads((out / "index.json").read_text())
    samples = {s["key"]: s for shard in index["shards"] for s in shard["samples"]}
    assert sorted(samples) == ["u0", "u1"] and samples["u1"]["speaker"] == "s2"
    assert samples["u0"]["duration"] == 1.0 and samples["u0"]["text"] == "HELLO THERE"
    assert summary.rejected == {"too_short": 1, "unreadable": 1}


def test_prepare_writes_index_npz_tied_to_its_index_json(nemo, tmp_path):
    from asr_dist.data.flat_plan import FlatIndex
    from asr_dist.data.index import load_index

    out = tmp_path / "shards"
    write_shards(read_manifest(nemo), out, num_workers=1)
    flat, index = FlatIndex.load_for(out), load_index(str(out))
    assert flat is not None and flat.shard_names == tuple(s.name for s in index.shards)
    assert [flat.key(i) for i in range(flat.num_samples)] == [s.key for sh in index.shards for s in sh.samples]
    assert flat.durations.tolist() == [s.duration for sh in index.shards for s in sh.samples]
    (out / "index.json").write_text((out / "index.json").read_text().replace("1.5", "1.25"))
    assert FlatIndex.load_for(out) is None  # edited index.json: the arrays no longer match it
