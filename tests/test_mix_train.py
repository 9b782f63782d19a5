"""The trainer with two weighted sources and two named eval sets: a 2-rank run saved at step 2 resumes on
1 rank to step 4; the mix it logs equals the plan's samples, eval.json and the report show each eval set."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch

from _ranks import logs, run_ranks
from _shard_factory import tiny_processor, write_tiny_shards

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "train" / "tiny.yaml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    folders = {"alpha": write_tiny_shards(root / "alpha", [8, 8, 8], seed=1, prefix="alpha"),
               "beta": write_tiny_shards(root / "beta", [6, 6], seed=2, prefix="beta"),
               "deva": write_tiny_shards(root / "deva", [6], seed=3, prefix="deva"),
               "devb": write_tiny_shards(root / "devb", [2, 2], seed=4, prefix="devb")}
    tiny_processor().save_pretrained(root / "processor")
    return root, folders


def args(corpus, run_dir: Path, *overrides: str) -> list[str]:
    root, f = corpus
    return ["-m", "asr_dist.train", "--config", TINY, f"train.run_dir={run_dir}", "train.mixed_precision=no",
            f"data.processor={root / 'processor'}",
            f"data.train=[{{name: alpha, shards: {f['alpha']}, weight: 3}}, {{name: beta, shards: {f['beta']}}}]",
            f"data.eval={{deva: {f['deva']}, devb: {f['devb']}}}", "checkpoint.keep_best=true",
            "checkpoint.best_eval_set=devb", "checkpoint.every_steps=2", "checkpoint.keep_last=3", *overrides]


def test_two_sources_resume_on_one_rank_and_report_the_mix_and_each_eval_set(corpus, tmp_path):
    from asr_dist.config import load_config
    from asr_dist.data.loader import build_train_loader
    from asr_dist.data.plan import split_to_multiple
    from asr_dist.report import write_report
    from asr_dist.text import load_processor

    log_dir, run_dir = tmp_path / "logs", tmp_path / "run"
    assert run_ranks(args(corpus, run_dir, "train.max_steps=2"), 2, log_dir, "two") == [0, 0], logs(log_dir, "two")
    one = args(corpus, run_dir, "train.max_steps=4", "checkpoint.every_steps=3")
    assert run_ranks(one, 1, log_dir, "one") == [0], logs(log_dir, "one")
    assert "source beta: weight 1, 12 samples, 8 per epoch" in (log_dir / "one-rank0.log").read_text()

    # what the plan says the two runs trained on: 2 steps x 2 ranks, then the re-split tail for 1 rank
    cfg = load_config(TINY, args(corpus, run_dir)[4:])
    from asr_dist.families import frames_for_samples
    from asr_dist.model import build_model

    processor = load_processor(corpus[0] / "processor")
    frames_for = frames_for_samples(build_model(cfg.model, processor), processor.feature_extractor)
    loader = build_train_loader(cfg.data, processor, seed=cfg.train.seed, rank=0, world_size=2, grad_accum=1,
                                frames_for=frames_for)  # as the trainer: samples it cannot align are left out
    plan = loader.epoch_plan(0, 2, 1)
    resumed = plan[:4] + split_to_multiple(plan[4:], 1)[:2]
    source = {s.name: s.source for s in loader.index.shards}
    expected = collections.Counter(source[loader.index.shards[s.shard].name] for b in resumed for s in b.samples)

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["kind"] == "train"][-1]
    assert last["step"] == 4
    assert (last["mix/alpha/samples"], last["mix/beta/samples"]) == (expected["alpha"], expected["beta"])
    seconds = sum(s.duration for b in resumed for s in b.samples if loader.index.shards[s.shard].source == "beta")
    assert last["mix/beta/audio_hours"] == pytest.approx(seconds / 3600)

    state = torch.load(run_dir / "checkpoints" / "step-4" / "extra_state" / "rank-0.pt", weights_only=False)
    assert state["loader"]["batches_consumed"] == 6 and state["loader"]["resplits"] == [[4, 1, 1]]

    result = json.loads((run_dir / "eval.json").read_text())
    assert result["primary_set"] == "devb" and set(result["sets"]) == {"deva", "devb"}
    assert result["sets"]["deva"]["num_samples"] == 6 and result["sets"]["devb"]["num_samples"] == 4
    assert result["wer"] == result["sets"]["devb"]["wer"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals[-1]["eval_deva/wer"] == result["sets"]["deva"]["wer"]
    meta = json.loads((run_dir / "checkpoints" / "step-4" / "checkpoint.json").read_text())
    assert meta["metrics"]["wer"] == result["sets"]["devb"]["wer"]  # keep_best follows the chosen set

    report = write_report(run_dir).read_text()
    assert "| devb (primary) |" in report and "| deva |" in report
    assert f"| alpha | {expected['alpha']} |" in report and f"| beta | {expected['beta']} |" in report


def test_a_source_with_missing_shards_is_an_error_naming_it_before_training(corpus, tmp_path):
    import shutil

    from asr_dist.config import load_config
    from asr_dist.data.loader import build_train_loader
    from asr_dist.data.mix import SourceError

    root, f = corpus
    broken = tmp_path / "beta"
    shutil.copytree(f["beta"], broken)
    (broken / "beta-000001.tar").unlink()
    overrides = args(corpus, tmp_path / "run")[4:]
    overrides = [o.replace(str(f["beta"]), str(broken)) for o in overrides]
    cfg = load_config(TINY, overrides)
    with pytest.raises(SourceError, match=r"data\.train\[1\] \(beta\).*beta-000001\.tar"):
        build_train_loader(cfg.data, tiny_processor(), seed=0, rank=0, world_size=1, grad_accum=1)
    (broken / "index.json").write_text("{not json")
    with pytest.raises(SourceError, match=r"data\.train\[1\] \(beta\).*index"):
        build_train_loader(cfg.data, tiny_processor(), seed=0, rank=0, world_size=1, grad_accum=1)


def test_a_named_eval_set_that_cannot_be_opened_is_an_error_naming_it(corpus, tmp_path):
    from asr_dist.config import load_config
    from asr_dist.eval_sets import EvalSetError, build_eval_sets

    overrides = [o if not o.startswith("data.eval=") else f"data.eval={{deva: {corpus[1]['deva']}, devc: {tmp_path}}}"
                 for o in args(corpus, tmp_path / "run")[4:] if not o.startswith("checkpoint.best_eval_set")]
    cfg = load_config(TINY, overrides)
    with pytest.raises(EvalSetError, match=r"eval set 'devc' \(data\.eval\.devc = .*index"):
        build_eval_sets(cfg.data, tiny_processor(), rank=0, world_size=1)
    loaders = build_eval_sets(load_config(TINY, args(corpus, tmp_path / "run")[4:]).data, tiny_processor(), rank=0,
                              world_size=1)
    assert {name: loader.num_samples for name, loader in loaders.items()} == {"deva": 6, "devb": 4}


def test_best_eval_set_must_be_a_configured_set(corpus, tmp_path):
    from asr_dist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"checkpoint\.best_eval_set = 'devz'.*deva, devb"):
        load_config(TINY, args(corpus, tmp_path / "run", "checkpoint.best_eval_set=devz")[4:])


def test_preflight_names_the_source_and_the_eval_set_whose_folder_is_missing(corpus, tmp_path):
    from asr_dist.config import ConfigError, load_config
    from asr_dist.training.preflight import check_paths

    root, f = corpus
    overrides = [o.replace(str(f["beta"]), str(tmp_path / "nowhere")).replace(str(f["devb"]), str(tmp_path / "gone"))
                 for o in args(corpus, tmp_path / "run")[4:]]
    with pytest.raises(ConfigError) as e:
        check_paths(load_config(TINY, overrides))
    lines = str(e.value).splitlines()
    assert any(line.strip().startswith("data.train[1].shards (beta) = ") and "no such folder" in line for line in lines)
    assert any(line.strip().startswith("data.eval.devb = ") and "no such folder" in line for line in lines)
    check_paths(load_config(TINY, args(corpus, tmp_path / "run")[4:]))  # all present: no error
