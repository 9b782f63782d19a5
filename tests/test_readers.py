"""Corpus readers (asr_dist/corpus/readers.py) on small trees and manifests the tests build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_dist.corpus.readers import CorpusError, Utterance, make_key, open_corpus, read_librispeech, read_manifest

LIBRISPEECH = {  # speaker -> chapter -> [(utterance number, transcript)]
    "103": {"1240": [(0, "CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED"), (1, "THAT HAD ITS SOURCE AWAY BACK")]},
    "1034": {"121119": [(0, "THE GIRL'S FACE WAS PALE")], "121120": [(5, "SHE SAID NOTHING")]},
}


def _tone(path: Path, seconds: float = 0.5, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")


def make_librispeech_tree(root: Path) -> dict[str, str]:
    """SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt + SPEAKER-CHAPTER-NNNN.flac; returns key -> transcript."""
    expected = {}
    for speaker, chapters in LIBRISPEECH.items():
        for chapter, lines in chapters.items():
            folder = root / speaker / chapter
            folder.mkdir(parents=True)
            rows = []
            for number, text in lines:
                key = f"{speaker}-{chapter}-{number:04d}"
                _tone(folder / f"{key}.flac")
                rows.append(f"{key} {text}")
                expected[key] = text
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(rows) + "\n")
    return expected


def test_librispeech_tree(tmp_path):
    expected = make_librispeech_tree(tmp_path)
    utts = list(read_librispeech(tmp_path))
    assert {u.key: u.text for u in utts} == expected
    for u in utts:
        assert Path(u.audio) == tmp_path / u.key.split("-")[0] / u.key.split("-")[1] / f"{u.key}.flac"
        assert u.speaker == u.key.split("-")[0]
        assert u.meta == {} and u.duration is None
    assert [u.key for u in open_corpus(tmp_path)] == [u.key for u in utts]


def test_librispeech_accounts_for_orphans(tmp_path):
    """An audio file without a transcript line and a line without audio both come out (prepare rejects them)."""
    make_librispeech_tree(tmp_path)
    chapter = tmp_path / "103" / "1240"
    _tone(chapter / "103-1240-0009.flac")  # no transcript line
    with (chapter / "103-1240.trans.txt").open("a") as f:
        f.write("103-1240-0007 A LINE WITHOUT AUDIO\n")
    by_key = {u.key: u for u in read_librispeech(tmp_path)}
    assert by_key["103-1240-0009"].text == "" and "no transcript line" in by_key["103-1240-0009"].meta["problem"]
    assert by_key["103-1240-0007"].text == "A LINE WITHOUT AUDIO"
    assert not Path(by_key["103-1240-0007"].audio).exists()


def test_librispeech_errors(tmp_path):
    with pytest.raises(CorpusError, match="no \\*.trans.txt"):
        list(read_librispeech(tmp_path))
    with pytest.raises(CorpusError, match="not a folder"):
        list(read_librispeech(tmp_path / "nope"))


def test_jsonl_manifest(tmp_path):
    (tmp_path / "wavs").mkdir()
    _tone(tmp_path / "wavs" / "a.wav")
    _tone(tmp_path / "b.wav")
    rows = [
        {"audio": "wavs/a.wav", "text": "hello there", "speaker": "s1", "duration": 0.5, "voice": "en-us", "snr": 20},
        {"audio": str(tmp_path / "b.wav"), "text": "General Kenobi", "key": "utt.b"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    a, b = read_manifest(manifest)
    assert a == Utterance(key="wavs-a", audio=str(tmp_path / "wavs" / "a.wav"), text="hello there", duration=0.5,
                          speaker="s1", meta={"voice": "en-us", "snr": 20})
    assert b == Utterance(key="utt_b", audio=str(tmp_path / "b.wav"), text="General Kenobi")  # no dots in keys
    assert [u.key for u in open_corpus(manifest)] == ["wavs-a", "utt_b"]


def test_tsv_manifest(tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("audio\ttext\tspeaker\tduration\tcondition\n"
                        "x/1.flac\tfirst one\tspk\t1.25\tclean\n"
                        "x/2.flac\tsecond\t\t\tnoisy\n")
    one, two = read_manifest(manifest)
    assert one == Utterance(key="x-1", audio=str(tmp_path / "x" / "1.flac"), text="first one", duration=1.25,
                            speaker="spk", meta={"condition": "clean"})
    assert (two.key, two.duration, two.speaker, two.meta) == ("x-2", None, "", {"condition": "noisy"})


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", '{"audio": "a.wav", "text": "ok"}\n{not json\n', r"bad.jsonl:2: not valid JSON"),
    ("bad.jsonl", '{"audio": "a.wav"}\n', r"bad.jsonl:1: missing field\(s\) text"),
    ("bad.jsonl", '["a.wav", "text"]\n', r"bad.jsonl:1: expected a JSON object"),
    ("bad.jsonl", '{"audio": "a.wav", "text": "x", "duration": "long"}\n', r"bad.jsonl:1: duration 'long'"),
    ("bad.tsv", "audio\ttext\na.wav\n", r"bad.tsv:2: 1 columns, the header has 2"),
    ("bad.tsv", "", r"empty TSV manifest"),
])
def test_malformed_manifests_name_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(CorpusError, match=message):
        list(read_manifest(tmp_path / name))


def test_open_corpus_rejects_unknown_sources(tmp_path):
    (tmp_path / "x.csv").write_text("audio,text\n")
    with pytest.raises(CorpusError, match="expected a LibriSpeech-layout folder or a .jsonl/.json/.tsv manifest"):
        open_corpus(tmp_path / "x.csv")
    with pytest.raises(CorpusError, match="does not exist"):
        open_corpus(tmp_path / "missing.jsonl")


def test_make_key():
    assert make_key("103-1240-0000") == "103-1240-0000"
    assert make_key("spk 1/utt.2") == "spk_1-utt_2"
    with pytest.raises(CorpusError):
        make_key("...")
