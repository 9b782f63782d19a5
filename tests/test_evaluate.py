"""Evaluation: greedy CTC decoding, CTC loss, corpus-level WER/CER, per-subset scores, rank splits."""

from __future__ import annotations

import io
import json
import math
import tarfile

import jiwer
import pytest
import soundfile as sf
import torch
from accelerate import Accelerator

from asr_dist.config import EvalConfig
from asr_dist.evaluate import greedy_decode, score
from asr_dist.evaluate import evaluate as run_eval

from _tiny_model import audio, make_batch, save_tiny_export, tiny_model_and_processor


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_processor()


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def eval_batches(processor) -> list[dict]:
    items = [(f"utt{i:02d}", text, f"spk{i % 3}", audio(0.4 + 0.15 * i, seed=i))
             for i, text in enumerate(["HELLO WORLD", "THE QUICK BROWN FOX", "JUMPS OVER THE LAZY DOG",
                                       "DON'T PANIC", "HELLO", "THE LAZY FOX", "BROWN DOG"])]
    return [make_batch(processor, items[0:3]), make_batch(processor, items[3:5]), make_batch(processor, items[5:7])]


# ----------------------------------------------------------------------------- decoding


def one_hot_logits(ids: list[int], vocab: int) -> torch.Tensor:
    logits = torch.full((len(ids), vocab), -5.0)
    logits[torch.arange(len(ids)), torch.tensor(ids)] = 5.0
    return logits


def test_greedy_decode_collapses_repeats_drops_blanks_and_maps_the_delimiter(tiny):
    _, processor = tiny
    v = processor.tokenizer.get_vocab()
    blank, bar = v["[PAD]"], v["|"]
    # H H _ E L L _ L O | | W O R L D _ (then padding frames that would read "ZZZ")
    path = [v["H"], v["H"], blank, v["E"], v["L"], v["L"], blank, v["L"], v["O"], bar, bar,
            v["W"], v["O"], v["R"], v["L"], v["D"], blank]
    pad_frames = [v["Z"], blank, v["Z"]]
    logits = torch.stack([one_hot_logits(path + pad_frames, len(v)),
                          one_hot_logits([v["D"], v["O"], v["G"]] + [blank] * (len(path) + 0), len(v))])
    assert greedy_decode(logits, processor, torch.tensor([len(path), 3])) == ["HELLO WORLD", "DOG"]
    full = greedy_decode(logits, processor)
    assert full[0] == "HELLO WORLDZZ"  # without lengths, padded frames leak into the text
    assert full == processor.batch_decode(logits.argmax(-1))


def test_greedy_decode_equals_batch_decode_on_model_output(tiny):
    model, processor = tiny
    batch = eval_batches(processor)[0]
    with torch.no_grad():
        logits = model(batch["input_values"], attention_mask=batch["attention_mask"]).logits
    assert greedy_decode(logits, processor) == processor.batch_decode(logits.argmax(-1))


# ----------------------------------------------------------------------------- scores


def records(pairs, subsets=None):
    return [{"key": f"k{i}", "ref": r, "hyp": h, "subset": (subsets[i] if subsets else None),
             "loss": 1.0, "tokens": len(r), "seconds": 1.0} for i, (r, h) in enumerate(pairs)]


def test_wer_and_cer_are_corpus_level_with_hand_computed_values():
    pairs = [("A B C D", "A B C D"), ("E F", "E X")]  # 1 word error in 6 words; 1 char error in 10 chars
    result = score(records(pairs, ["s1", "s2"]), num_examples=1)
    assert result.wer == pytest.approx(1 / 6)  # a mean of per-utterance WERs would be (0 + 1/2) / 2
    assert result.cer == pytest.approx(1 / 10)
    assert result.subsets["s1"].wer == 0.0 and result.subsets["s2"].wer == pytest.approx(0.5)
    assert result.subsets["s2"].cer == pytest.approx(1 / 3) and result.subsets["s2"].num_samples == 1
    assert result.examples == [{"key": "k0", "ref": "A B C D", "hyp": "A B C D"}]


def test_wer_counts_insertions_deletions_and_empty_hypotheses():
    pairs = [("THE CAT SAT", "THE CAT SAT DOWN"),  # 1 insertion
             ("ON THE MAT", "ON MAT"),  # 1 deletion
             ("HELLO", "")]  # 1 deletion
    result = score(records(pairs))
    assert result.wer == pytest.approx(3 / 7)
    assert result.cer == pytest.approx((5 + 4 + 5) / (11 + 10 + 5))  # " DOWN", "THE ", "HELLO"
    assert result.subsets == {}


def test_score_is_the_same_however_records_are_split_over_ranks():
    pairs = [(f"W{i} X Y", f"W{i} X" if i % 2 else f"W{i} Z Y") for i in range(9)]
    recs = records(pairs, [f"s{i % 2}" for i in range(9)])
    whole = score(recs)
    rank_a, rank_b, rank_c = recs[0:5], recs[5:6], recs[6:]  # unequal shares
    split = score(rank_c + rank_a + rank_b)
    assert split.to_dict() == {**whole.to_dict()}
    doubled = score(recs + recs[:2])  # a loader that duplicated samples: counted once, reported
    assert doubled.wer == whole.wer and doubled.duplicates_dropped == 2
    with pytest.raises(ValueError, match="empty"):
        score([])


# ----------------------------------------------------------------------------- evaluate() on a model


def test_evaluate_matches_per_utterance_decoding_and_the_models_own_ctc_loss(tiny, accelerator):
    model, processor = tiny
    batches = eval_batches(processor)
    cfg = EvalConfig(num_examples=2, subset_field="speaker")
    model.train()  # evaluate() must switch to eval mode and back
    result = run_eval(model, batches, processor, accelerator, cfg)
    assert model.training

    # independent: one utterance at a time (no padding), the tokenizer's own decoding, the model's own loss
    model.eval()
    refs, hyps, subsets, loss_sum, tokens = [], [], [], 0.0, 0
    for batch in batches:
        for i in range(len(batch["keys"])):
            n = int(batch["attention_mask"][i].sum())
            labels = batch["labels"][i : i + 1]
            with torch.no_grad():
                out = model(batch["input_values"][i : i + 1, :n], labels=labels)  # ctc_loss_reduction="sum"
            hyps.append(processor.batch_decode(out.logits.argmax(-1))[0])
            refs.append(batch["meta"][i]["text"])
            subsets.append(batch["meta"][i]["speaker"])
            loss_sum += float(out.loss)
            tokens += int((labels >= 0).sum())
    assert [u["hyp"] for u in result.utterances] == hyps  # keys are utt00.. in batch order
    assert result.num_samples == 7 and result.num_tokens == tokens
    assert result.loss == pytest.approx(loss_sum / tokens, rel=1e-4)
    assert result.wer == pytest.approx(jiwer.wer(refs, hyps)) and result.cer == pytest.approx(jiwer.cer(refs, hyps))
    for name in ("spk0", "spk1", "spk2"):
        idx = [i for i, s in enumerate(subsets) if s == name]
        assert result.subsets[name].wer == pytest.approx(jiwer.wer([refs[i] for i in idx], [hyps[i] for i in idx]))
    assert [e["key"] for e in result.examples] == ["utt00", "utt01"]
    assert math.isfinite(result.loss)
    assert result.audio_seconds == pytest.approx(sum(b["audio_seconds"] for b in batches))
    assert "REF: HELLO WORLD" in result.format()
    json.dumps(result.to_dict(utterances=True))  # the CLI writes it as JSON


def test_references_come_from_the_labels_when_meta_has_no_text(tiny, accelerator):
    model, processor = tiny
    batches = eval_batches(processor)[:1]
    texts = [m["text"] for m in batches[0]["meta"]]
    bare = [{**batches[0], "meta": [{"speaker": m["speaker"]} for m in batches[0]["meta"]]}]
    result = run_eval(model, bare, processor, accelerator, EvalConfig())
    assert [u["ref"] for u in result.utterances] == texts


def test_evaluate_on_simulated_ranks_equals_one_rank(tiny, accelerator):
    model, processor = tiny
    batches = eval_batches(processor)
    cfg = EvalConfig(num_examples=3)
    whole = run_eval(model, batches, processor, accelerator, cfg)
    rank0 = run_eval(model, batches[:1], processor, accelerator, cfg)  # unequal shares of the set
    rank1 = run_eval(model, batches[1:], processor, accelerator, cfg)
    gathered = score(rank1.utterances + rank0.utterances, num_examples=3)  # what gather_object hands every rank
    for name in ("loss", "wer", "cer", "num_samples", "num_tokens", "examples"):
        assert getattr(gathered, name) == getattr(whole, name), name
    assert {k: v.wer for k, v in gathered.subsets.items()} == {k: v.wer for k, v in whole.subsets.items()}


def test_evaluate_in_bf16_stays_close_to_fp32(tiny, accelerator):
    model, processor = tiny
    batches = eval_batches(processor)
    fp32 = run_eval(model, batches, processor, accelerator, EvalConfig())
    bf16 = run_eval(model, batches, processor, accelerator, EvalConfig(), mixed_precision="bf16")
    assert bf16.loss == pytest.approx(fp32.loss, rel=0.05)
    assert bf16.num_samples == fp32.num_samples


# ----------------------------------------------------------------------------- `asr-dist evaluate`


def shard_samples(folder):
    """(key, samples, meta) of every sample in a shard folder, read with tarfile + soundfile only."""
    index = json.loads((folder / "index.json").read_text())
    out = []
    for shard in index["shards"]:
        with tarfile.open(folder / shard["name"]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for s in shard["samples"]:
            wave, _ = sf.read(io.BytesIO(members[f"{s['key']}.flac"]), dtype="float32")
            out.append((s["key"], wave, json.loads(members[f"{s['key']}.json"])))
    return out


def test_cli_on_an_export_and_a_shard_folder_agrees_with_the_asr_pipeline(tiny_shards, tmp_path, capsys):
    from transformers import pipeline

    from asr_dist import cli
    from asr_dist.text import load_processor

    model_dir = save_tiny_export(tmp_path / "export", processor=load_processor(tiny_shards.processor))
    out_json = tmp_path / "dev-eval.json"
    argv = ["evaluate", str(model_dir), str(tiny_shards.dev), "--output", str(out_json), "--subset-field", "voice",
            "--num-examples", "2", "--max-batch-seconds", "8", "--num-workers", "0"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out_json.read_text())

    # independently: every dev sample through transformers' pipeline, one at a time, no padding
    pipe = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    samples = shard_samples(tiny_shards.dev)
    hyps = {key: pipe({"raw": wave, "sampling_rate": 16000})["text"] for key, wave, _ in samples}
    refs = {key: meta["text"] for key, _, meta in samples}
    voices = {key: meta["voice"] for key, _, meta in samples}
    keys = sorted(refs)

    assert [u["key"] for u in report["utterances"]] == keys  # every sample exactly once
    assert {u["key"]: u["hyp"] for u in report["utterances"]} == hyps
    assert report["wer"] == pytest.approx(jiwer.wer([refs[k] for k in keys], [hyps[k] for k in keys]))
    assert report["cer"] == pytest.approx(jiwer.cer([refs[k] for k in keys], [hyps[k] for k in keys]))
    assert set(report["subsets"]) == set(voices.values())
    for voice, sub in report["subsets"].items():
        ks = [k for k in keys if voices[k] == voice]
        assert sub["wer"] == pytest.approx(jiwer.wer([refs[k] for k in ks], [hyps[k] for k in ks]))
    assert f"REF: {refs[keys[0]]}" in printed and f"WER {100 * report['wer']:.2f}%" in printed


def test_cli_rejects_bad_folders_naming_them(tmp_path, capsys):
    from asr_dist import cli

    model_dir = save_tiny_export(tmp_path / "export")
    assert cli.main(["evaluate", str(tmp_path / "nowhere"), str(tmp_path)]) == 2
    assert "nowhere is not an exported model folder" in capsys.readouterr().err
    assert cli.main(["evaluate", str(model_dir), str(tmp_path)]) == 2
    assert f"{tmp_path} is not a shard folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real ranks


@pytest.mark.slow
@pytest.mark.parametrize("accelerate_config", ["cpu_ddp_2proc.yaml", "deepspeed_zero3.yaml"])
def test_two_real_ranks_with_unequal_shares_equal_one_rank(accelerate_config, tiny, accelerator, tmp_path):
    """DDP and ZeRO-3 (where every forward is collective: the rank with fewer batches must keep pace)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import eval_worker

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{repo / 'tests'}{os.pathsep}{repo}")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(repo / "configs" / "accelerate" / accelerate_config), "--main_process_port", str(_free_port()),
           str(repo / "tests" / "eval_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=400)
    ranks = [tmp_path / f"rank{r}.json" for r in (0, 1)]
    assert all(p.exists() for p in ranks), proc.stdout[-3000:] + proc.stderr[-3000:]
    got = [json.loads(p.read_text()) for p in ranks]
    if accelerate_config.startswith("deepspeed"):
        assert got[0]["zero_stage"] == 3

    model, processor = tiny
    single = run_eval(model, eval_worker.all_batches(processor), processor, accelerator,
                      EvalConfig(num_examples=2, subset_field="speaker")).to_dict(utterances=True)
    for result in got:  # every rank holds the whole set's scores
        assert result["num_samples"] == single["num_samples"] == len(eval_worker.TEXTS)
        assert [u["key"] for u in result["utterances"]] == [u["key"] for u in single["utterances"]]
        assert [u["hyp"] for u in result["utterances"]] == [u["hyp"] for u in single["utterances"]]
        assert result["wer"] == single["wer"] and result["cer"] == single["cer"]
        assert result["loss"] == pytest.approx(single["loss"], rel=1e-4)
        assert result["duplicates_dropped"] == 0 and result["examples"] == single["examples"]
        assert {k: v["wer"] for k, v in result["subsets"].items()} == {k: v["wer"] for k, v in single["subsets"].items()}

    # metrics: one line per log call (main process only), throughput summed over both ranks
    train, ev = (json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    assert train["logged_by_rank"] == 0 and train["padding_fraction"] == pytest.approx(1 - 3 / 4)
    assert ev["kind"] == "eval" and ev["eval/wer"] == single["wer"]
    assert len(list((tmp_path / "run").rglob("events.out.tfevents.*"))) == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
