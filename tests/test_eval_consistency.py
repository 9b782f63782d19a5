"""A score must not depend on how utterances were batched: training-time evaluation (2 ranks, the eval set
split between them) and `asr-dist evaluate` of the exported model (1 process) agree on every hypothesis, WER,
CER and loss, for a group-norm (wav2vec2-base style) model whose outputs padding would change."""

from __future__ import annotations

import json

import pytest

from test_train import launch


@pytest.mark.slow
def test_training_time_and_offline_evaluation_agree(tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    # evaluated on the training shards: more utterances of more lengths than the tiny dev set
    shards = type(tiny_shards)(train=tiny_shards.train, dev=tiny_shards.train, processor=tiny_shards.processor)
    proc = launch("ddp", run_dir, shards, ["train.max_steps=8", "model.feat_extract_norm=group",
                                           "checkpoint.every_steps=0", "data.max_batch_samples=4",
                                           "optimizer.lr=0.005"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    during = json.loads((run_dir / "eval.json").read_text())

    from asr_dist.evaluate import main as evaluate_main

    out = tmp_path / "offline.json"
    assert evaluate_main([str(run_dir / "export"), str(tiny_shards.train), "--output", str(out),
                          "--max-batch-samples", "16"]) == 0
    offline = json.loads(out.read_text())
    assert during["num_samples"] == offline["num_samples"] > 10
    assert (during["wer"], during["cer"]) == (offline["wer"], offline["cer"])
    assert during["loss"] == pytest.approx(offline["loss"], rel=1e-6, abs=0)
    per_utterance = lambda ev: {u["key"]: (u["hyp"], u["loss"]) for u in ev["utterances"]}  # noqa: E731
    a, b = per_utterance(during), per_utterance(offline)
    assert a.keys() == b.keys()
    for key in a:  # the same hypothesis and (to float32 rounding of the forward pass) the same loss
        assert a[key][0] == b[key][0] and a[key][1] == pytest.approx(b[key][1], rel=1e-5), (key, a[key], b[key])
