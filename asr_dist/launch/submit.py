"""`asr-dist submit --config X.yaml [section.key=value ...] [--dry-run] [--wait]`: a training job on Slurm.

The config's `slurm` section becomes a submitit AutoExecutor (one task per GPU, or per process on CPU); the
job is a `asr_dist.launch.slurm_job.TrainingJob` holding the resolved config, which every task runs in-process.
Before anything is queued, `sbatch --test-only` asks Slurm whether the request can ever run: an unknown
partition or resources no node has fail here, with Slurm's own reason, instead of pending forever.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asr_dist.config import Config, ConfigError, load_config
from asr_dist.launch.slurm_job import EVENTS_FILE, JobEvents, TrainingJob, slurm_view


class SubmitError(RuntimeError):
    """Slurm refused the job (or is not reachable); the message carries sbatch's reason."""


def log_folder(cfg: Config) -> Path:
    return Path(cfg.slurm.folder or Path(cfg.train.run_dir) / "slurm").absolute()


def build_executor(cfg: Config):
    """A submitit executor for the slurm section (submitit translates the names to #SBATCH lines)."""
    import submitit

    if shutil.which("srun") is None:  # submitit's own message would be a bare RuntimeError
        raise SubmitError("Slurm's commands (srun, sbatch) are not on PATH: run this on a Slurm login node "
                          "(on this machine: slurm/dev-cluster up); submitit needs them even for --dry-run")
    s = cfg.slurm
    executor = submitit.AutoExecutor(folder=log_folder(cfg), cluster="slurm", slurm_max_num_timeout=s.max_requeues)
    params: dict = dict(
        name=s.job_name,
        nodes=s.nodes,
        tasks_per_node=s.tasks_per_node,
        cpus_per_task=s.cpus_per_task,
        timeout_min=s.timeout_min,
        slurm_signal_delay_s=s.signal_delay_s,
        # requeue explicitly: a cluster with JobRequeue=0 would otherwise refuse `scontrol requeue`
        slurm_additional_parameters={"requeue": True, **s.additional_parameters},
    )
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(s, name):
            params[f"slurm_{name}"] = getattr(s, name)
    if s.exclusive:
        params["slurm_exclusive"] = True
    if s.setup:
        params["slurm_setup"] = list(s.setup)
    executor.update_parameters(**params)
    return executor


def sbatch_script(executor) -> str:
    """The exact script `executor.submit` hands to sbatch (%j stands for the job id)."""
    slurm_executor = executor._executor  # submitit has no public dry-run; these two are what submit() uses
    return slurm_executor._make_submission_file_text(slurm_executor._submitit_command_str, uid="dry-run")


def check_with_slurm(script: str) -> None:
    """`sbatch --test-only`: Slurm validates partition, account, QOS and resources without queueing anything."""
    with tempfile.NamedTemporaryFile("w", suffix=".sbatch", delete=False) as f:
        f.write(script)
    try:
        done = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SubmitError("sbatch not found: is this a Slurm login node? (locally: slurm/dev-cluster up)") from None
    finally:
        Path(f.name).unlink(missing_ok=True)
    if done.returncode != 0:
        reason = "\n".join(line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip())
        raise SubmitError(f"Slurm refuses this job:\n{reason}")


def preflight(cfg: Config) -> None:
    """What can be checked before queueing (the precision is chosen on the compute node, for its hardware):
    inputs on disk, the DeepSpeed JSON, and a run folder not held by a running job."""
    from asr_dist.runfolder import RunFolder
    from asr_dist.training.backend import read_deepspeed_config
    from asr_dist.training.preflight import check_paths

    read_deepspeed_config(cfg)
    check_paths(cfg)
    if Path(cfg.train.run_dir).is_dir():
        folder = RunFolder(cfg.train.run_dir)
        folder.lock()  # raises RunFolderBusy naming the holder
        folder.unlock()


def submit(cfg: Config):
    """Validate with Slurm, submit, record the submission in the run's event log; returns the submitit Job."""
    executor = build_executor(cfg)
    check_with_slurm(sbatch_script(executor))
    try:
        job = executor.submit(TrainingJob(cfg.to_dict()))
    except Exception as error:  # submitit wraps sbatch's stderr in its own exception types
        raise SubmitError(f"sbatch failed: {error}") from error
    JobEvents(cfg.train.run_dir).write("submitted", job_id=job.job_id, folder=str(log_folder(cfg)),
                                       tasks=cfg.slurm.nodes * cfg.slurm.tasks_per_node)
    return job


def describe(job, cfg: Config) -> str:
    s = cfg.slurm
    out, err = job.paths.stdout, job.paths.stderr  # task 0; task N writes <id>_N_log.out/.err
    events = Path(cfg.train.run_dir) / EVENTS_FILE
    return "\n".join([
        f"submitted job {job.job_id}: {s.nodes} node(s) x {s.tasks_per_node} task(s)"
        f"{f', {s.gpus_per_node} GPU(s) per node' if s.gpus_per_node else ''}, time limit {s.timeout_min} min"
        f"{f', partition {s.partition}' if s.partition else ''}",
        f"  logs      {out}",
        f"            {err}   (task N: {job.job_id}_N_log.out/.err in the same folder)",
        f"  events    {events}   (start, resume step, stop reason, requeues, end)",
        f"  follow    tail -f {shlex.quote(str(out))}",
        f"            squeue -j {job.job_id}; sacct -j {job.job_id}",
        f"  stop      scancel {job.job_id}   (save + requeue instead: scancel --signal=USR2 {job.job_id})",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-dist submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training config (YAML)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. slurm.nodes=2 slurm.partition=gpu")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script; submit nothing")
    parser.add_argument("--wait", action="store_true", help="wait for the job to end (requeues included)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        preflight(cfg)
    except ConfigError as error:
        print(f"asr-dist submit: {error}", file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            print(sbatch_script(build_executor(cfg)))
            return 0
        job = submit(cfg)
    except SubmitError as error:
        print(f"asr-dist submit: {error}", file=sys.stderr)
        return 1
    print(describe(job, cfg), flush=True)
    if not args.wait:
        return 0
    return wait(job)


ACTIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "COMPLETING", "STAGE_OUT", "RESIZING")


def wait(job, poll_s: float = 2.0, end_timeout_s: float = 120.0, grace_s: float = 30.0) -> int:
    """Block until the job is over; print task 0's result or the job's error (0 = success).

    submitit reports a failure as soon as the tasks' result files say so, while Slurm may still hold the job
    (other tasks stuck in a collective with the failed one, or still tearing down): after a failure the rest
    of the job is cancelled and we wait until Slurm no longer lists it, so that `--wait` returns with the job
    really over (a failed job no longer shows as running afterwards).
    """
    try:
        results = job.results()
    except Exception as error:  # submitit's FailedJobError/UncompletedJobError carry the traceback and log paths
        print(f"job {job.job_id} failed: {error}", file=sys.stderr)
        end_failed_job(job.job_id, poll_s, end_timeout_s, grace_s)
        return 1
    summary = results[0]
    if isinstance(summary, dict):  # asr_dist.train.run's summary, without the per-step losses
        summary = ", ".join(f"{k}={summary[k]}" for k in ("steps", "final_loss", "eval", "export_dir") if k in summary)
    print(f"job {job.job_id} finished: {summary}")
    return 0


def end_failed_job(job_id: str, poll_s: float = 2.0, timeout_s: float = 120.0, grace_s: float = 30.0) -> None:
    """After a failure: let Slurm end the job on its own for `grace_s` (so that sacct keeps FAILED), then cancel
    what is left, and wait (bounded) until Slurm no longer lists it as active."""
    def wait_while_active(seconds: float) -> str:
        state, _ = slurm_view(job_id)
        deadline = time.monotonic() + seconds
        while state in ACTIVE_STATES and time.monotonic() < deadline:
            time.sleep(poll_s)
            state, _ = slurm_view(job_id)
        return state

    state = wait_while_active(grace_s)
    if state not in ACTIVE_STATES:
        return
    if state != "COMPLETING":
        subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=60)
        print(f"job {job_id} was still {state} {grace_s:.0f} s after the failure: cancelled its remaining tasks",
              file=sys.stderr)
    state = wait_while_active(timeout_s)
    if state in ACTIVE_STATES:
        print(f"job {job_id} is still {state} in Slurm {timeout_s:.0f} s after the failure; see squeue -j {job_id}",
              file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main())
