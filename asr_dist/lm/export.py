"""Put an LM into an exported model folder as a `Wav2Vec2ProcessorWithLM` (language_model/ + alpha/beta), so that
`transformers.pipeline("automatic-speech-recognition", model=FOLDER)` decodes with the LM by itself."""

from __future__ import annotations

import json
from pathlib import Path

from asr_dist.lm.decode import LMDecoder


def add_lm(model_dir: str | Path, lm_dir: str | Path, alpha: float | None = None, beta: float | None = None) -> Path:
    """Rewrite MODEL_DIR's processor as Wav2Vec2ProcessorWithLM with the LM (checked against its vocabulary) and
    the tuned (or given) alpha/beta; pipeline() then loads the decoder from MODEL_DIR/language_model/."""
    from transformers import Wav2Vec2Processor, Wav2Vec2ProcessorWithLM

    processor = Wav2Vec2Processor.from_pretrained(str(model_dir))
    decoder = LMDecoder(lm_dir, processor.tokenizer.get_vocab(), alpha, beta, backend="pyctcdecode", processes=1)
    with_lm = Wav2Vec2ProcessorWithLM(feature_extractor=processor.feature_extractor, tokenizer=processor.tokenizer,
                                      decoder=decoder.pyctcdecode_decoder)
    with_lm.save_pretrained(str(model_dir))
    _mark_feature_extractor(Path(model_dir) / "processor_config.json")
    return Path(model_dir)


def _mark_feature_extractor(processor_config: Path) -> None:
    """pipeline() attaches the LM decoder only when the *feature extractor's* config names a "...WithLM"
    processor_class (transformers' `_maybe_load_ctc_decoder`). transformers 5 saves it nested in
    processor_config.json with processor_class beside it, not inside, so pipeline() would decode greedily;
    the key is copied inside, where older preprocessor_config.json files always had it."""
    if not processor_config.is_file():
        return
    config = json.loads(processor_config.read_text())
    if isinstance(config.get("feature_extractor"), dict):
        config["feature_extractor"]["processor_class"] = config.get("processor_class", "Wav2Vec2ProcessorWithLM")
        processor_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
