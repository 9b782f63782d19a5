"""asr_dist: distributed fine-tuning of wav2vec2-CTC speech recognizers."""

__version__ = "0.1.0"
