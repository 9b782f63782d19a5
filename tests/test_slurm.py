"""`asr-dist submit` against a real local Slurm (slurm/dev-cluster): submission, requeue, resume, limits.

The training jobs are real: 2 tasks of the tiny wav2vec2 run on the tiny espeak shards, DDP over gloo, each
task set up from Slurm's environment by launch/slurm_job.py. They spend most of their time waiting for each
other, so the module submits them all at once (`jobs` fixture) and one loop plays the operator: it sends
signals when a job is mid-run, and after the time-limit job's first graceful stop it raises that job's limit
so that the resumed run has time to finish. The tests then check each job's outcome:

    baseline    uninterrupted; writes the final checkpoint; its per-step losses are the reference
    usr2        2 nodes x 1 task, train.resume=none; `scancel --signal=USR2` during start-up (submitit's
                handler -> __submitit_checkpoint__ -> requeue), then mid-run -> save, requeue, resume at the
                saved step, finish
    time_limit  --time=1 (a real time limit; data read through a slow `pipe:` so that training outlasts the
                first minute) -> USR2 from Slurm -> save, requeue, resume, finish
    give_up     DeepSpeed ZeRO-2, slurm.max_requeues=1, interrupted twice -> requeued once, then ends with a
                clear message
    cancel      plain `scancel` mid-run -> the trainer saves, the job ends CANCELLED and is not requeued
    sbatch_template  slurm/train.sbatch (srun + accelerate launch) on 2 nodes, USR2 to the batch script ->
                forwarded to the trainers -> save, requeue by the script, resume, finish

"Lost no data" is checked step by step: the same seed and plan give every step of an interrupted run the
same samples as the uninterrupted run, so the per-step sample counts and losses must match exactly (a lost
or repeated batch shifts everything after it), and so must the final weights.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asr_dist.launch.slurm_job import read_events

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 24
ALL_JOBS_TIMEOUT_S = 420


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local two-node Slurm (started here when `make test` has not already done it)."""
    done = subprocess.run([str(ROOT / "slurm" / "dev-cluster"), "up"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"slurm/dev-cluster up failed:\n{done.stderr}"
    return ROOT / "slurm" / "dev-cluster"


def submit_cmd(run_dir: Path, *overrides: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "asr_dist.cli", "submit", "--config", str(ROOT / "configs/train/tiny.yaml"),
            f"train.run_dir={run_dir}", "slurm.tasks_per_node=2", "slurm.timeout_min=10", *overrides, *extra]


def data_overrides(shards, slow: bool = False) -> list[str]:
    if not slow:
        return [f"data.train_shards={shards.train}"]
    names = sorted(s["name"] for s in json.loads((shards.train / "index.json").read_text())["shards"])
    first, last = Path(names[0]).stem.split("-")[1], Path(names[-1]).stem.split("-")[1]
    # The same shards through a pipe that takes 2 s per shard: slow storage, not CPU, stretches the run.
    # Slurm signals every process of the job step, so the pipe's shell ignores USR2 (docs/slurm.md).
    url = f"pipe:trap '' USR2; sleep 2 && cat {shards.train}/train-{{{first}..{last}}}.tar"
    return [f"data.train_shards={url}", f"data.train_index={shards.train / 'index.json'}",
            f"data.processor={shards.processor}"]


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind", "train") == "train" and "loss" in r]


def last_step(run_dir: Path) -> int:
    rows = metrics(run_dir)
    return max((r["step"] for r in rows), default=0)


def job_id_of(log: Path) -> str | None:
    m = re.search(r"submitted job (\d+)", log.read_text()) if log.is_file() else None
    return m.group(1) if m else None


def scancel_usr2(job_id: str) -> None:
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)


class Run:
    """One `asr-dist submit --wait` in the background: its run folder, job id, exit code and output."""

    def __init__(self, name: str, root: Path, cmd: list[str]):
        self.name, self.run_dir, self.log = name, root / name, root / f"{name}.submit.log"
        self.proc = subprocess.Popen(cmd + ["--wait"], cwd=ROOT, stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT, text=True)
        self.signals_sent = 0
        self.limit_raised = False

    @property
    def job_id(self) -> str | None:
        return job_id_of(self.log)

    @property
    def events(self) -> list[dict]:
        return read_events(self.run_dir)

    def starts(self) -> list[dict]:
        return [e for e in self.events if e["event"] == "start"]

    @property
    def output(self) -> str:
        return self.log.read_text()

    def done(self) -> bool:
        return self.proc.poll() is not None


class SbatchRun:
    """slurm/train.sbatch (srun + accelerate launch, no submitit) submitted with plain sbatch: 2 nodes x 1."""

    def __init__(self, name: str, root: Path, *overrides: str):
        import os

        self.name, self.run_dir, self.log = name, root / name, root / f"{name}.out"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PROCS_PER_NODE": "1",
               "ACCELERATE_CONFIG": str(ROOT / "configs/accelerate/cpu_ddp_2proc.yaml")}
        done = subprocess.run(["sbatch", "--parsable", "--nodes=2", "--gpus-per-node=0", "--cpus-per-task=1",
                               "--ntasks-per-node=1", "--time=10", f"--output={self.log}",
                               str(ROOT / "slurm/train.sbatch"), str(ROOT / "configs/train/tiny.yaml"),
                               f"train.run_dir={self.run_dir}", *overrides],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
        self.job_id = done.stdout.strip().split(";")[0]
        self.signals_sent = 0

    @property
    def output(self) -> str:
        return self.log.read_text() if self.log.is_file() else ""

    def states(self) -> list[str]:
        """One sacct line per run of the job (-D: requeued runs too), oldest first."""
        out = subprocess.run(["sacct", "-n", "-X", "-D", "-j", self.job_id, "-o", "State", "--parsable2"],
                             capture_output=True, text=True, timeout=30).stdout
        return out.split()

    def done(self) -> bool:
        queued = subprocess.run(["squeue", "-h", "-j", self.job_id, "-o", "%T"], capture_output=True, text=True,
                                timeout=30).stdout.strip()
        return queued == ""


# ----------------------------------------------------------------------------- the jobs


@pytest.fixture(scope="module")
def jobs(slurm_cluster, tiny_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm_jobs")
    common = (f"train.max_steps={MAX_STEPS}", "train.max_epochs=1000", "checkpoint.every_steps=1000")
    runs: dict[str, Run] = {}
    # First the time-limit job, alone, so that its first minute is spent training rather than competing
    # with the other jobs' start-up for the two cores (Slurm's USR2 comes 30-60 s after the start).
    runs["time_limit"] = Run("time_limit", root, submit_cmd(
        root / "time_limit", *data_overrides(tiny_shards, slow=True), *common, "slurm.timeout_min=1",
        "slurm.signal_delay_s=3", "slurm.max_requeues=3"))
    _wait_for(lambda: last_step(runs["time_limit"].run_dir) >= 1 or runs["time_limit"].done(), 120,
              "the time-limit job's first step", runs)
    runs["baseline"] = Run("baseline", root, submit_cmd(root / "baseline", *data_overrides(tiny_shards), *common))
    # Two nodes x one task: rank 1 finds rank 0 through the first host of the allocation. train.resume=none:
    # a requeued run must still continue from this job's own save.
    runs["usr2"] = Run("usr2", root, submit_cmd(root / "usr2", *data_overrides(tiny_shards), *common, "slurm.nodes=2",
                                                "slurm.tasks_per_node=1", "train.resume=none"))
    # With DataLoader workers: Slurm's SIGTERM reaches them too; they must not die of it (the trainer saves).
    runs["cancel"] = Run("cancel", root, submit_cmd(root / "cancel", *data_overrides(tiny_shards), *common,
                                                    "data.num_workers=4"))
    runs["sbatch_template"] = SbatchRun("sbatch_template", root, *data_overrides(tiny_shards), *common)
    # DeepSpeed ZeRO-2 here: each rank saves its own optimizer shard at every stop.
    zero2 = ROOT / "configs/deepspeed/zero2.json"
    runs["give_up"] = Run("give_up", root, submit_cmd(root / "give_up", *data_overrides(tiny_shards), *common,
                                                      "slurm.max_requeues=1", f"train.deepspeed_config={zero2}"))

    def operator_step() -> bool:
        usr2, give_up, time_limit = runs["usr2"], runs["give_up"], runs["time_limit"]
        # USR2 twice: first while Python is still starting (submitit's own handler is in place, GracefulStop is
        # not yet: the start event is written before the trainer is even imported), then mid-training.
        if usr2.signals_sent == 0 and usr2.starts():
            scancel_usr2(usr2.job_id)
            usr2.signals_sent = 1
        if usr2.signals_sent == 1 and len(usr2.starts()) == 2 and last_step(usr2.run_dir) >= 3:
            scancel_usr2(usr2.job_id)
            usr2.signals_sent = 2
        # Twice: once in the first run, once after the requeued run has made progress of its own.
        if give_up.job_id and give_up.signals_sent < 2:
            starts = give_up.starts()
            resumed_at = (starts[-1].get("resume_from_step") or 0) if starts else 0
            if len(starts) == give_up.signals_sent + 1 and last_step(give_up.run_dir) >= resumed_at + 2:
                scancel_usr2(give_up.job_id)
                give_up.signals_sent += 1
        # A plain scancel (SIGTERM to every task) mid-run.
        cancel = runs["cancel"]
        if cancel.signals_sent == 0 and cancel.job_id and last_step(cancel.run_dir) >= 3:
            subprocess.run(["scancel", cancel.job_id], check=True, timeout=30)
            cancel.signals_sent = 1
        # The template's `--signal=B:USR2@N` goes to the batch script: the same as `scancel --batch`.
        template = runs["sbatch_template"]
        if template.signals_sent == 0 and last_step(template.run_dir) >= 3:
            subprocess.run(["scancel", "--batch", "--signal=USR2", template.job_id], check=True, timeout=30)
            template.signals_sent = 1
        # After the first graceful stop at the time limit: 10 minutes for the resumed run. (On a loaded machine
        # the first USR2 may come before the trainer is up; submitit then requeues and the next minute counts.)
        if not time_limit.limit_raised and any(e["event"] == "stop" for e in time_limit.events):
            subprocess.run(["scontrol", "update", f"JobId={time_limit.job_id}", "TimeLimit=10"], check=True,
                           timeout=30)
            time_limit.limit_raised = True
        return all(r.done() for r in runs.values())

    _wait_for(operator_step, ALL_JOBS_TIMEOUT_S, "all jobs to end", runs)
    return runs


def _wait_for(condition, timeout_s: float, what: str, runs: dict[str, Run]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            states = {name: (r.job_id, r.events[-1:] if isinstance(r, Run) else r.output[-300:])
                      for name, r in runs.items()}
            for r in runs.values():
                if r.job_id:
                    subprocess.run(["scancel", r.job_id], timeout=30)
                if isinstance(r, Run):
                    r.proc.kill()
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}; last events: {states}")
        time.sleep(0.5)


# ----------------------------------------------------------------------------- checks


def final_checkpoint(run_dir: Path) -> Path:
    from asr_dist.checkpoint import find_checkpoint, read_meta

    path = find_checkpoint(run_dir)
    assert read_meta(path)["step"] == MAX_STEPS, f"{path}: {read_meta(path)}"
    return path


def weights(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(checkpoint / "model.safetensors")


def assert_same_training(run: Run, baseline: Run) -> None:
    """Every step saw the same samples with the same weights as the uninterrupted run: nothing lost, nothing
    seen twice; and the final weights are equal."""
    ran, ref = metrics(run.run_dir), metrics(baseline.run_dir)
    assert [r["step"] for r in ran] == list(range(1, MAX_STEPS + 1)), "each step logged exactly once"
    assert [r["samples"] for r in ran] == [r["samples"] for r in ref]
    assert [r["loss"] for r in ran] == pytest.approx([r["loss"] for r in ref], rel=1e-6)
    mine, theirs = weights(final_checkpoint(run.run_dir)), weights(final_checkpoint(baseline.run_dir))
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert (mine[name] - theirs[name]).abs().max().item() <= 1e-6, name


def assert_resumed_where_it_stopped(run: Run, reason: str) -> None:
    """A graceful stop (for `reason`), its requeue, and the next run starting exactly at the saved step."""
    events = run.events
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["submitted", "start"] and kinds[-1] == "finish" and "error" not in kinds, kinds
    i = kinds.index("stop")
    stop, requeue, start = events[i:i + 3]
    assert 0 < stop["step"] < MAX_STEPS and reason in stop["reason"], stop
    # Near a real time limit `scontrol requeue` can report a failure (empty message) although Slurm does requeue
    # the job (seen once in ~10 runs); what must hold is that the job came back and resumed at the saved step.
    assert requeue["event"] in ("requeue", "requeue_failed") and requeue["step"] == stop["step"], requeue
    if requeue["event"] == "requeue":
        assert requeue["requeues"] == stop["restarts"] + 1, requeue
    assert (start["event"], start["restarts"], start["resume_from_step"]) == ("start", stop["restarts"] + 1,
                                                                            stop["step"]), start
    assert events[-1]["step"] == MAX_STEPS


# ----------------------------------------------------------------------------- tests: submission


def test_dry_run_prints_the_sbatch_script_and_submits_nothing(slurm_cluster, tiny_shards, tmp_path):
    done = subprocess.run(submit_cmd(tmp_path / "run", *data_overrides(tiny_shards), "slurm.job_name=asr_dry_run",
                                     "slurm.partition=debug",
                                     "slurm.signal_delay_s=120", 'slurm.setup=["export NCCL_DEBUG=WARN"]',
                                     extra=("--dry-run",)),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    for line in ("#SBATCH --job-name=asr_dry_run", "#SBATCH --ntasks-per-node=2", "#SBATCH --nodes=1",
                 "#SBATCH --partition=debug", "#SBATCH --signal=USR2@120", "#SBATCH --time=10",
                 "#SBATCH --requeue", "export NCCL_DEBUG=WARN"):
        assert line in script.splitlines(), f"{line!r} not in:\n{script}"
    assert re.search(r"^srun .* -m submitit.core._submit ", script, re.M), script
    queued = subprocess.run(["squeue", "-h", "-n", "asr_dry_run"], capture_output=True, text=True).stdout
    assert queued.strip() == "" and not (tmp_path / "run" / "job_events.jsonl").exists()


@pytest.mark.parametrize("overrides, reason", [
    (["slurm.partition=no_such_partition"], "Invalid partition name specified"),
    (["slurm.nodes=3"], "Requested node configuration is not available"),  # the cluster has two nodes
    (["slurm.cpus_per_task=64"], "Requested node configuration is not available"),
])
def test_bad_slurm_settings_fail_at_submit_time_with_slurms_reason(slurm_cluster, tiny_shards, tmp_path, overrides,
                                                                   reason):
    done = subprocess.run(submit_cmd(tmp_path / "run", *data_overrides(tiny_shards), "slurm.job_name=asr_refused",
                                     *overrides),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Slurm refuses this job" in done.stderr and reason in done.stderr, done.stderr
    queued = subprocess.run(["squeue", "-h", "-n", "asr_refused"], capture_output=True, text=True).stdout
    assert queued.strip() == "", "a refused job must not be left pending"


def test_a_missing_shard_folder_is_refused_before_anything_is_queued(tmp_path):
    done = subprocess.run(submit_cmd(tmp_path / "run", f"data.train_shards={tmp_path / 'nowhere'}"), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"data.train_shards = {tmp_path / 'nowhere'}: no such folder" in done.stderr
    assert not (tmp_path / "run" / "job_events.jsonl").exists()


@pytest.mark.parametrize("overrides, message", [
    (["slurm.gpus_per_node=4", "slurm.tasks_per_node=1"],
     "slurm.tasks_per_node = 1 is not allowed; expected one task per GPU: equal to slurm.gpus_per_node (4)"),
    (["slurm.timeout_min=1", "slurm.signal_delay_s=90"], "slurm.signal_delay_s = 90 is not allowed"),
])
def test_inconsistent_slurm_section_is_refused_before_slurm_is_asked(tmp_path, overrides, message):
    done = subprocess.run(submit_cmd(tmp_path / "run", *overrides), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr


# ----------------------------------------------------------------------------- tests: training jobs


@pytest.mark.slow
def test_uninterrupted_job_completes_and_writes_its_final_checkpoint(jobs):
    run = jobs["baseline"]
    assert run.proc.returncode == 0, run.output
    assert re.search(r"job \d+ finished: steps=%d, " % MAX_STEPS, run.output), run.output
    assert [e["event"] for e in run.events] == ["submitted", "start", "finish"]
    final_checkpoint(run.run_dir)
    assert {r["world_size"] for r in run.starts()} == {2}


@pytest.mark.slow
def test_usr2_mid_run_saves_requeues_and_resumes_without_losing_data(jobs):
    run = jobs["usr2"]
    assert run.proc.returncode == 0, run.output
    events = run.events
    assert [e["event"] for e in events] == ["submitted", "start", "requeue", "start", "stop", "requeue", "start",
                                            "finish"], events
    _, start0, early, start1, stop, requeue, start2, finish = events
    # The signal during start-up reached submitit's handler, which called __submitit_checkpoint__: requeued
    # without a save, and the second run starts from scratch.
    assert "before the trainer was ready" in early["reason"] and early["step"] is None
    assert (start0["restarts"], start1["restarts"]) == (0, 1)
    assert (start1["resume"], start1["resume_from_step"]) == ("none", None)
    # The signal mid-run: a graceful stop, saved by all ranks, and the third run resumes exactly there.
    assert 0 < stop["step"] < MAX_STEPS and "preempted or signalled" in stop["reason"], stop
    assert (requeue["step"], requeue["requeues"]) == (stop["step"], 2)
    assert (start2["restarts"], start2["resume"], start2["resume_from_step"]) == (2, "auto", stop["step"])
    assert finish["step"] == MAX_STEPS
    assert "error" not in [e["event"] for e in events]
    assert {(s["nodes"], s["world_size"], len(set(s["hosts"]))) for s in (start0, start1, start2)} == {(2, 2, 2)}
    assert_same_training(run, jobs["baseline"])  # 2 nodes x 1 task trains exactly like 1 node x 2 tasks


@pytest.mark.slow
def test_time_limit_saves_requeues_and_resumes_without_losing_data(jobs):
    run = jobs["time_limit"]
    assert run.proc.returncode == 0, run.output
    assert_resumed_where_it_stopped(run, "time limit")
    assert_same_training(run, jobs["baseline"])


@pytest.mark.slow
def test_job_that_keeps_stopping_ends_after_max_requeues_with_a_clear_message(jobs):
    run = jobs["give_up"]
    assert run.proc.returncode == 1, run.output
    assert "RequeueLimitReached" in run.output and "slurm.max_requeues=1 reached, not requeued" in run.output
    kinds = [e["event"] for e in run.events]
    assert kinds == ["submitted", "start", "stop", "requeue", "start", "stop", "give_up"], kinds
    stops = [e for e in run.events if e["event"] == "stop"]
    assert stops[0]["step"] < stops[1]["step"] < MAX_STEPS
    from asr_dist.checkpoint import find_checkpoint, read_meta

    meta = read_meta(find_checkpoint(run.run_dir))
    assert meta["step"] == stops[1]["step"], "the last stop saved too"
    assert (meta["distributed_type"], meta["zero_stage"], meta["world_size"]) == ("DEEPSPEED", 2, 2)
    state = subprocess.run(["sacct", "-n", "-X", "-j", run.job_id, "-o", "State", "--parsable2"],
                           capture_output=True, text=True).stdout.split()
    assert state[-1] == "FAILED", state


@pytest.mark.slow
def test_scancel_saves_and_ends_the_job_without_requeueing_it(jobs, tiny_shards):
    """A plain scancel of a run with 4 DataLoader workers per rank: saved at the agreed step, not requeued; the
    same command resumes it, and the finished run equals the uninterrupted one (samples, losses, weights)."""
    from asr_dist.checkpoint import find_checkpoint, read_meta

    run = jobs["cancel"]
    assert run.proc.returncode == 1 and "CANCELLED" in run.output, run.output[-2000:]
    kinds = [e["event"] for e in run.events]
    assert kinds == ["submitted", "start", "stop"], kinds
    stop = run.events[-1]
    assert "Slurm is ending the job" in stop["reason"] and 0 < stop["step"] < MAX_STEPS, stop
    assert read_meta(find_checkpoint(run.run_dir))["step"] == stop["step"], "saved on SIGTERM"
    states = subprocess.run(["sacct", "-n", "-X", "-D", "-j", run.job_id, "-o", "State", "--parsable2"],
                            capture_output=True, text=True).stdout.splitlines()
    assert [s.split()[0] for s in states] == ["CANCELLED"], states  # "CANCELLED by 0": one run, not requeued
    assert "killed by signal" not in run.output and "DataLoader worker" not in run.output, run.output[-2000:]

    resumed = subprocess.run([*submit_cmd(run.run_dir, *data_overrides(tiny_shards), f"train.max_steps={MAX_STEPS}",
                                          "train.max_epochs=1000", "checkpoint.every_steps=1000",
                                          "data.num_workers=4"), "--wait"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert_same_training(run, jobs["baseline"])


@pytest.mark.slow
def test_plain_sbatch_template_forwards_usr2_requeues_and_resumes_without_losing_data(jobs):
    run = jobs["sbatch_template"]
    assert run.states() == ["REQUEUED", "COMPLETED"], (run.states(), run.output[-3000:])
    out = run.output
    assert "2 node(s) x 1 process(es), main localhost:" in out  # the first host of the allocation
    assert "USR2: asking the trainer to save and stop" in out
    saved = re.search(r"saved checkpoint \S+/step-(\d+)", out)
    assert saved and 0 < int(saved.group(1)) < MAX_STEPS, out[-3000:]
    assert "requeueing (1/3)" in out and "job %s (requeue 1/3)" % run.job_id in out
    assert re.search(r"resumed from \S+/step-%s \(step %s" % (saved.group(1), saved.group(1)), out), out[-3000:]
    assert "training finished" in out
    assert_same_training(run, jobs["baseline"])
