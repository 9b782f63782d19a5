"""`asr-dist transcribe MODEL_DIR FILE...`: one line per file, `FILE<TAB>TRANSCRIPT`.

The model folder is what `asr-dist export` writes (save_pretrained model + processor), and it is
read by transformers' own ASR pipeline, so this command also proves that the export works for
anyone who only has transformers. Audio is read with soundfile (any format libsndfile reads),
mixed down to mono and resampled to the feature extractor's rate with torchaudio.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np


class AudioReadError(ValueError):
    """An input file that cannot be read as audio (the message names the file and the reason)."""


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Float32 mono samples of `path` at `sample_rate`."""
    import soundfile as sf

    from asr_dist.audio import read_audio

    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"{path}: no such file")
    try:
        return read_audio(path, sample_rate)
    except ValueError:
        raise AudioReadError(f"{path}: holds no samples") from None
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioReadError(f"{path}: not readable as audio ({e})") from None


def build_transcriber(model_dir: str | Path, device: str = "cpu", chunk_seconds: float = 0.0):
    """transformers' ASR pipeline on an exported folder; `chunk_seconds` > 0 decodes long files in
    overlapping chunks (the pipeline's CTC striding)."""
    from transformers import pipeline

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not an exported model folder (no config.json); "
                                "write one with `asr-dist export`")
    kwargs = {"chunk_length_s": chunk_seconds} if chunk_seconds > 0 else {}
    return pipeline("automatic-speech-recognition", model=str(model_dir), device=device, **kwargs)


def transcribe(pipe, files: list[str | Path]) -> Iterator[tuple[str | Path, str]]:
    """(file, transcript) for each file, in order, as each is done; a file that cannot be read
    raises AudioReadError naming it when its turn comes."""
    rate = pipe.feature_extractor.sampling_rate
    for f in files:
        yield f, pipe({"raw": load_audio(f, rate), "sampling_rate": rate})["text"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-dist transcribe",
                                     description="Transcribe audio files with an exported model folder.")
    parser.add_argument("model_dir", help="save_pretrained folder with the model and its processor")
    parser.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, ... any rate, any channels)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--chunk-seconds", type=float, default=0.0, help="decode long files in chunks (0 = whole)")
    args = parser.parse_args(argv)
    try:
        pipe = build_transcriber(args.model_dir, args.device, args.chunk_seconds)
        for f, text in transcribe(pipe, args.files):
            print(f"{f}\t{text}", flush=True)
    except (AudioReadError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
