"""Hugging Face `datasets` audio datasets written by `save_to_disk`, as a corpus for `asr-dist prepare`.

Listing reads only the small columns (no audio). Each utterance's audio is named `hfds:FOLDER#ROW`;
prepare's encoding workers open the dataset (memory-mapped Arrow, once per worker) and read that row's
encoded bytes, undecoded (`Audio(decode=False)`: libsndfile decodes them as for any file, no torchcodec).
Column names accepted: docs/data_sources.md.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from pathlib import Path

from asr_dist.corpus.readers import CorpusError, Utterance, make_key

PREFIX = "hfds:"
TEXT_COLUMNS = ("text", "sentence", "transcript", "transcription", "normalized_text")
KEY_COLUMNS = ("id", "key", "utterance_id", "segment_id", "audio_id")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id")


def is_hf_dataset(folder: Path) -> bool:
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def _load(folder: str):
    try:
        from datasets import Audio, DatasetDict, load_from_disk
    except ImportError:
        raise CorpusError(f"{folder} is a Hugging Face dataset: `pip install datasets` to read it") from None
    ds = load_from_disk(folder)
    if isinstance(ds, DatasetDict):
        raise CorpusError(f"{folder} holds the splits {', '.join(ds)}: give one split's folder, "
                          f"e.g. {Path(folder) / next(iter(ds))}")
    audio = [name for name, feature in ds.features.items() if isinstance(feature, Audio)]
    if not audio:
        raise CorpusError(f"{folder}: no Audio column (columns: {', '.join(ds.column_names)})")
    return ds.cast_column(audio[0], Audio(decode=False)), audio[0]


def read_hf_dataset(folder: str | Path) -> Iterator[Utterance]:
    """Utterances of a saved dataset: its Audio column, a text column, optional key and speaker columns;
    other scalar columns go into meta (-> KEY.json). Without a key column the key is FOLDER-NAME-ROW."""
    folder = str(Path(folder).resolve())
    ds, audio = _load(folder)
    columns = ds.column_names
    text = next((c for c in TEXT_COLUMNS if c in columns), None)
    if text is None:
        raise CorpusError(f"{folder}: no transcript column; expected one of {', '.join(TEXT_COLUMNS)} "
                          f"(columns: {', '.join(columns)})")
    key = next((c for c in KEY_COLUMNS if c in columns), None)
    speaker = next((c for c in SPEAKER_COLUMNS if c in columns), None)
    listing = ds.remove_columns([audio])
    for row_number, row in enumerate(listing):
        meta = {k: v for k, v in row.items() if k not in (text, key, speaker)
                and isinstance(v, (str, int, float, bool)) and k != "duration"}
        duration = row.get("duration")
        yield Utterance(key=make_key(str(row[key])) if key else f"{make_key(Path(folder).name)}-{row_number:08d}",
                        audio=f"{PREFIX}{folder}#{row_number}", text=str(row[text] or ""),
                        duration=float(duration) if isinstance(duration, (int, float)) else None,
                        speaker=str(row[speaker]) if speaker and row[speaker] is not None else "",
                        meta={**meta, "hf_row": row_number})


@functools.lru_cache(maxsize=4)
def _opened(folder: str):
    return _load(folder)


def open_audio(name: str) -> io.BytesIO:
    """The encoded audio bytes of `hfds:FOLDER#ROW` (raises FileNotFoundError when the row has none)."""
    folder, _, row = name[len(PREFIX):].rpartition("#")
    ds, audio = _opened(folder)
    value = ds[int(row)][audio]
    if value.get("bytes"):
        return io.BytesIO(value["bytes"])
    if value.get("path") and Path(value["path"]).is_file():
        return io.BytesIO(Path(value["path"]).read_bytes())
    raise FileNotFoundError(f"row {row} of {folder} holds no audio bytes and no readable path ({value.get('path')!r})")
