"""The encoder families side by side: the same espeak speech, the same number of updates, comparable sizes, from
scratch, one process. Per family: parameters, training audio-s/s, final training loss, dev CER and WER.

Sizes: configs/train/tiny.yaml's Transformer (hidden 64, 2 layers, 2 heads, FFN 128) for every family; the
raw-waveform families keep tiny.yaml's 7-layer CNN of 64 channels (320 samples per frame), w2v-BERT has its
filterbank projection instead (the features are computed in the DataLoader workers), Parakeet its 8x conv
subsampling. On a 2-core CPU this says which front end and which encoder is cheaper and learns faster at toy
scale; it says nothing about pretrained quality.

    .venv/bin/python benchmarks/families.py [--quick] [--shards DIR]   (DIR: train folder with processor/, and
                                                                      DIR/../dev)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
TINY = str(REPO / "configs" / "train" / "tiny.yaml")


def make_shards(out: Path, hours: float) -> tuple[Path, Path]:
    from asr_dist.corpus.readers import read_manifest
    from asr_dist.corpus.synth import synthesize
    from asr_dist.shards.prepare import write_shards

    synthesize(out / "corpus", hours=hours, seed=0, engines=("espeak",), dev_fraction=0.15)
    write_shards(read_manifest(out / "corpus" / "train.jsonl"), out / "train", prefix="train",
                 target_shard_mb=5.0, num_workers=2, write_processor=True)
    write_shards(read_manifest(out / "corpus" / "dev.jsonl"), out / "dev", prefix="dev", target_shard_mb=5.0,
                 num_workers=2)
    return out / "train", out / "dev"


def train_family(model_type: str, train: Path, dev: Path, work: Path, steps: int) -> dict:
    from accelerate.state import AcceleratorState

    from asr_dist.config import load_config
    from asr_dist.train import run

    run_dir = work / model_type
    cfg = load_config(TINY, [f"data.train_shards={train}", f"data.eval_shards={dev}", f"model.type={model_type}",
                             f"train.run_dir={run_dir}", f"train.max_steps={steps}", "train.max_epochs=1000",
                             "train.log_every=1", "data.num_workers=1", "optimizer.lr=0.003",
                             "schedule.warmup_steps=10", "model.feat_extract_norm=layer",
                             "model.do_stable_layer_norm=true"])
    AcceleratorState._reset_state(reset_partial_state=True)
    started = time.perf_counter()
    try:
        result = run(cfg)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "train"]
    audio = sum(r["audio_seconds"] for r in rows)
    train_wall = sum(r["step_seconds"] for r in rows)
    from safetensors import safe_open

    with safe_open(str(run_dir / "export" / "model.safetensors"), "pt") as f:
        params = sum(f.get_tensor(k).numel() for k in f.keys())
    return {"params_M": round(params / 1e6, 3), "train_audio_s_per_s": round(audio / train_wall, 1),
            "final_loss": round(sum(result["losses"][-5:]) / 5, 3), "dev_cer": round(result["eval"]["cer"], 3),
            "dev_wer": round(result["eval"]["wer"], 3), "wall_s": round(wall, 1)}


def run(quick: bool = False, shards: str = "") -> dict:
    import torch

    from asr_dist.families import FAMILIES

    torch.set_num_threads(2)
    steps = 30 if quick else 150
    with tempfile.TemporaryDirectory(prefix="asr_dist_families_") as tmp:
        work = Path(tmp)
        if shards:
            train, dev = Path(shards), Path(shards).parent / "dev"
        else:
            train, dev = make_shards(work / "data", hours=0.03 if quick else 0.15)
        out = {"steps": steps}
        for model_type in FAMILIES:
            out[model_type] = train_family(model_type, train, dev, work / "runs", steps)
        return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shards", default="")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.shards), indent=1))
