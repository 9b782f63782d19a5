"""`make demo`: the whole product, offline, end to end, on a 2-core machine in about 15 minutes.

The story:
  1. synthesize two domains of English speech: a *source* domain (espeak-ng's many accents and voices, clean)
     and a *new* domain (flite and festival voices the base model never heard, with added noise);
  2. write both to WebDataset shards (vocabulary from the source training transcripts);
  3. stage (a): train a small wav2vec2-CTC base model on the source domain
     (`accelerate launch`, 2 processes, DeepSpeed ZeRO-2, gradient accumulation);
  4. stage (b): fine-tune it on the new domain with partial freezing (the encoder frozen for the first 50 updates,
     only the CTC head learning: fairseq's freeze_finetune_updates) and an exponential-decay schedule; halfway
     through, the demo SIGKILLs the job and resumes it from its sharded checkpoint;
  5. train the same model from scratch on the new domain for the same number of steps, for comparison;
     build a 4-gram LM from the demo's text sources (no dev sentence) and decode the base model with it;
  6. export, transcribe a few files with `transformers.pipeline`, and print the results table.

Every step is an ordinary `asr-dist` / `accelerate launch` command, printed before it runs, so the demo doubles as
a recipe. Stages whose outputs already exist are reused (delete runs/demo to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from asr_dist.checkpoint import latest_step

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class DemoPlan:
    """Sizes, and the minutes each training stage may take: the whole demo fits in about 15 minutes on 2 cores
    of any of our processors. Update counts are bought with those minutes at the speed a short probe measures
    (an AVX2-only CPU trains in fp32 at about a third of the speed of one with native bf16), capped by the
    counts that were tuned on the fast machine."""

    out: Path = ROOT / "runs" / "demo"
    seed: int = 0
    source_hours: float = 1.5
    new_hours: float = 1.2
    base_minutes: float = 8.0
    finetune_minutes: float = 1.8  # the new-domain stages (fine-tuning, and from scratch for comparison)
    max_base_steps: int = 1600
    max_finetune_steps: int = 400
    probe_steps: int = 24
    accelerate_config: str = "configs/accelerate/deepspeed_zero2.yaml"
    train_config: str = "configs/train/demo.yaml"


@dataclass
class StageSteps:
    """What the time budget bought, from the probe's measured seconds per update."""

    seconds_per_update: float
    precision: str
    base: int
    finetune: int

    @property
    def kill_at(self) -> int:
        return max(self.finetune // 2, 1)


# Evaluation, checkpoints and start-up take about this share of a stage beyond its updates (measured on the demo).
STAGE_OVERHEAD = 1.1


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=True, **kw)


def accelerate_train(plan: DemoPlan, overrides: list[str]) -> list[str]:
    return [str(BIN / "accelerate"), "launch", "--config_file", plan.accelerate_config, "-m", "asr_dist.train",
            "--config", plan.train_config, f"train.seed={plan.seed}", *overrides]


def synthesize(plan: DemoPlan) -> tuple[Path, Path]:
    corpus = plan.out / "corpus"
    source, new = corpus / "source", corpus / "new"
    if not (source / "train.jsonl").exists():
        sh([str(BIN / "asr-dist"), "synth", str(source), "--hours", str(plan.source_hours), "--seed",
            str(plan.seed), "--engines", "espeak", "--overwrite"])
    if not (new / "train.jsonl").exists():
        sh([str(BIN / "asr-dist"), "synth", str(new), "--hours", str(plan.new_hours), "--seed", str(plan.seed + 1),
            "--engines", "flite,festival", "--noisy-fraction", "1.0", "--overwrite"])
    return source, new


def shard(plan: DemoPlan, source: Path, new: Path) -> Path:
    shards = plan.out / "shards"
    jobs = [(source / "train.jsonl", shards / "source-train", ["--processor"]),
            (source / "dev.jsonl", shards / "source-dev", []),
            (new / "train.jsonl", shards / "new-train", []),
            (new / "dev.jsonl", shards / "new-dev", [])]
    for manifest, folder, extra in jobs:
        if not (folder / "index.json").exists():
            sh([str(BIN / "asr-dist"), "prepare", str(manifest), str(folder), "--prefix", folder.name,
                "--shard-mb", "20", *extra])
    return shards


def measure_speed(plan: DemoPlan, shards: Path, common: list[str]) -> StageSteps:
    """A short run of the base stage's job (same launcher, model, data and precision): seconds per update,
    then the update counts each stage's minutes buy. Reused when the demo is run again."""
    probe = plan.out / "probe"
    measured = probe / "speed.json"
    if not measured.exists():
        if probe.exists():
            shutil.rmtree(probe)
        sh(accelerate_train(plan, [*common, f"train.run_dir={probe / 'run'}", f"train.max_steps={plan.probe_steps}",
                                   f"data.train_shards={shards / 'source-train'}", "data.eval_shards=",
                                   "train.log_every=1", "checkpoint.every_steps=0", "eval.every_steps=0"]))
        run = probe / "run"
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        times = sorted(r["step_seconds"] for r in rows if r.get("kind") == "train" and r["step"] > 4)
        summary = json.loads((run / "summary.json").read_text())
        measured.write_text(json.dumps({"seconds_per_update": times[len(times) // 2],
                                        "precision": summary["precision"]["mode"],
                                        "why": summary["precision"]["reason"]}))
    speed = json.loads(measured.read_text())
    per_update = speed["seconds_per_update"] * STAGE_OVERHEAD

    def steps(minutes: float, cap: int) -> int:
        return max(min(int(minutes * 60 / per_update) // 10 * 10, cap), min(20, cap))

    bought = StageSteps(speed["seconds_per_update"], speed["precision"], steps(plan.base_minutes, plan.max_base_steps),
                        steps(plan.finetune_minutes, plan.max_finetune_steps))
    print(f"\n*** demo: {bought.seconds_per_update:.2f} s per update in {bought.precision} "
          f"({speed['why']}); the time budget buys {bought.base} base updates ({plan.base_minutes:g} min) and "
          f"{bought.finetune} fine-tuning updates ({plan.finetune_minutes:g} min) ***", flush=True)
    return bought


def run_with_kill(cmd: list[str], run_dir: Path, kill_after_step: int) -> int:
    """Start a training job and SIGKILL its whole process group as soon as its checkpoint at `kill_after_step`
    is published; returns the step it will resume from."""
    print(f"\n$ {shlex.join(cmd)}   # will be killed with SIGKILL after its checkpoint at step {kill_after_step}",
          flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    while proc.poll() is None:
        if (latest_step(run_dir) or 0) >= kill_after_step:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher; its ranks die with it (PR_SET_PDEATHSIG)
            proc.wait()
            print(f"\n*** demo: killed the training job (SIGKILL) after step {latest_step(run_dir)} was saved ***",
                  flush=True)
            return latest_step(run_dir)
        time.sleep(0.5)
    raise SystemExit(f"training finished before the demo could kill it (exit code {proc.returncode})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-dist demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (for smoke tests)")
    args = parser.parse_args(argv)
    plan = DemoPlan()
    if args.quick:
        plan = DemoPlan(out=ROOT / "runs" / "demo-quick", source_hours=0.1, new_hours=0.05, max_base_steps=20,
                        max_finetune_steps=12, probe_steps=8)
    started = time.time()
    source, new = synthesize(plan)
    shards = shard(plan, source, new)
    processor = shards / "source-train" / "processor"
    steps = measure_speed(plan, shards, [f"data.processor={processor}"])
    common = [f"data.processor={processor}", f"checkpoint.every_steps={steps.kill_at}"]

    # stage (a): base model on the source domain (an interrupted demo continues it: train.resume=auto)
    base = plan.out / "base"
    if not (base / "export" / "config.json").exists():
        sh(accelerate_train(plan, [*common, f"train.run_dir={base}", f"train.max_steps={steps.base}",
                                   f"data.train_shards={shards / 'source-train'}",
                                   f"data.eval_shards={shards / 'source-dev'}"]))

    # a 4-gram word LM from the demo's own text sources (no dev sentence in it), and the base model decoded with it
    lm_dir, with_lm = plan.out / "lm", plan.out / "base-with-lm.json"
    if not (lm_dir / "lm.json").exists():
        from asr_dist.lm.demo_lm import build_demo_lm

        print("\n*** demo: building the n-gram LM (asr_dist.lm.demo_lm: fortunes + WordNet, dev sentences left out) ***",
              flush=True)
        build_demo_lm(lm_dir, [shards / "source-dev", shards / "new-dev"])
    if not with_lm.exists():
        sh([str(BIN / "asr-dist"), "evaluate", str(base / "export"), str(shards / "source-dev"), "--lm", str(lm_dir),
            "--output", str(with_lm)])

    # stage (b): fine-tune on the new domain, killed halfway and resumed
    finetune = plan.out / "finetune"
    new_domain = [f"data.train_shards={shards / 'new-train'}", f"data.eval_shards={shards / 'new-dev'}",
                  f"train.max_steps={steps.finetune}", "eval.subset_field=speaker"]
    finetune_cmd = accelerate_train(plan, [*common, *new_domain, f"train.run_dir={finetune}",
                                           f"model.pretrained={base / 'export'}", "model.keep_pretrained_head=true",
                                           "schedule.name=exponential", "optimizer.lr=1e-3", "schedule.gamma=0.996",
                                           "freezing.feature_encoder=false", "freezing.encoder_updates=50"])
    resumed_from = None  # None: the fine-tuned model is left from an earlier demo run
    if not (finetune / "export" / "config.json").exists():
        if (latest_step(finetune) or 0) < steps.kill_at:
            resumed_from = run_with_kill([*finetune_cmd, "train.resume=none", "train.if_run_exists=move_aside"],
                                         finetune, steps.kill_at)
        else:
            resumed_from = latest_step(finetune)
        sh([*finetune_cmd, "train.resume=auto"])

    # the same model from scratch on the new domain, same steps
    scratch = plan.out / "scratch"
    if not (scratch / "export" / "config.json").exists():
        sh(accelerate_train(plan, [*common, *new_domain, f"train.run_dir={scratch}"]))

    # before fine-tuning: the base model on the new domain
    before = plan.out / "base-on-new.json"
    if not before.exists():
        sh([str(BIN / "asr-dist"), "evaluate", str(base / "export"), str(shards / "new-dev"), "--output", str(before)])

    dev_files = [json.loads(line)["audio"] for line in (new / "dev.jsonl").read_text().splitlines()[:3]]
    sh([str(BIN / "asr-dist"), "transcribe", str(finetune / "export"), *[str(new / f) for f in dev_files]])

    from asr_dist.report import write_report

    for run in (base, finetune, scratch):
        write_report(run)
    print_summary(plan, steps, before, base, finetune, scratch, resumed_from, time.time() - started, with_lm)
    return 0


def _final_eval(run_dir: Path) -> dict:
    path = run_dir / "eval.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _processor() -> str:
    from asr_dist.training.precision import device_description

    return device_description()


def _throughput(run_dir: Path) -> tuple[float, float]:
    """Median audio seconds per second and mean padding fraction over the run's training log."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = sorted(r["audio_sec_per_sec"] for r in rows if "audio_sec_per_sec" in r)
    pads = [r["padding_fraction"] for r in rows if "padding_fraction" in r]
    return (speeds[len(speeds) // 2] if speeds else float("nan"), sum(pads) / len(pads) if pads else float("nan"))


def print_summary(plan, steps: StageSteps, before: Path, base: Path, finetune: Path, scratch: Path,
                  resumed_from: int | None, wall: float, with_lm: Path | None = None) -> None:
    before_eval = json.loads(before.read_text())
    finetune_eval, scratch_eval = _final_eval(finetune), _final_eval(scratch)
    lm = json.loads(with_lm.read_text()) if with_lm is not None and with_lm.exists() else {}
    rows = [("base model, source dev", _final_eval(base)),
            ("base model + 4-gram LM (beam search), source dev", lm.get("lm", {})),
            ("base model, new-domain dev (before fine-tuning)", before_eval),
            ("fine-tuned, new-domain dev", finetune_eval),
            ("from scratch, new-domain dev (same steps)", scratch_eval)]
    print("\n" + "=" * 78)
    print(f"{'model / eval set':<50} {'WER':>8} {'CER':>8}")
    for name, ev in rows:
        print(f"{name:<50} {ev.get('wer', float('nan')):>8.3f} {ev.get('cer', float('nan')):>8.3f}")
    if lm:
        d = lm["decode"]
        print(f"  (LM: alpha {d['alpha']:g}, beta {d['beta']:g}, beam {d['beam_width']}, "
              f"{d['lm_decode_x_real_time']:.0f}x real time on {d['processes']} processes; greedy on the same "
              f"set: WER {lm['greedy']['wer']:.3f}, CER {lm['greedy']['cer']:.3f})")
    print("\nper voice (new-domain dev), WER / CER:")
    print(f"{'voice':<20} {'before':>15} {'fine-tuned':>15} {'scratch':>15}")
    for voice in sorted(finetune_eval.get("subsets", {})):
        cells = [ev.get("subsets", {}).get(voice, {}) for ev in (before_eval, finetune_eval, scratch_eval)]
        print(f"{voice:<20}" + "".join(f"{c.get('wer', float('nan')):>9.3f} /{c.get('cer', float('nan')):>5.3f}"
                                       for c in cells))
    print(f"\ntraining ({steps.precision} on {_processor()}; probe: {steps.seconds_per_update:.2f} s per update; "
          f"budget {plan.base_minutes:g} + 2 x {plan.finetune_minutes:g} min):")
    for name, run in (("base", base), ("fine-tune", finetune), ("scratch", scratch)):
        speed, pad = _throughput(run)
        summary = _summary(run)
        print(f"  {name:<10} {summary.get('steps', 0):5d} updates  {summary.get('audio_seconds_seen', 0) / 3600:5.2f} h "
              f"of audio  {speed:8.1f} audio s/s   padding {pad:6.1%}   precision "
              f"{summary.get('precision', {}).get('mode', '?')}")
    if resumed_from is None:
        print("  fine-tune: reused from an earlier demo run (delete runs/demo to run everything again)")
    else:
        print(f"  fine-tune killed with SIGKILL and resumed from step {resumed_from}")
    print(f"\nreports: {base}/report.md, {finetune}/report.md, {scratch}/report.md")
    print(f"demo wall time: {wall / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
