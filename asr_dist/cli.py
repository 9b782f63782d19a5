"""The `asr-dist` command: one subcommand per stage of the flow.

Each subcommand lives in its own module, which exposes `main(argv) -> int`; this file only dispatches,
importing lazily so that `asr-dist synth` does not pay for importing torch and DeepSpeed.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "synth": ("asr_dist.corpus.synth", "generate the offline demo corpus with Debian's TTS engines"),
    "prepare": ("asr_dist.shards.prepare", "write WebDataset shards + index.json from a corpus"),
    "train": ("asr_dist.train", "train on one process (use `accelerate launch -m asr_dist.train` for many)"),
    "export": ("asr_dist.export", "turn a checkpoint (DDP or ZeRO shards) into a save_pretrained folder"),
    "transcribe": ("asr_dist.transcribe", "transcribe audio files with an exported model"),
    "evaluate": ("asr_dist.evaluate", "WER/CER of an exported model on a shard folder"),
    "report": ("asr_dist.report", "write runs/NAME/report.md with plots"),
    "submit": ("asr_dist.launch.submit", "submit a training job to Slurm through submitit"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print("usage: asr-dist COMMAND [options]\n\ncommands:")
        for name, (_, help_) in SUBCOMMANDS.items():
            print(f"  {name:<11} {help_}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
