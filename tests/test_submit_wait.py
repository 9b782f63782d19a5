"""`asr-dist submit --wait` after a failure: what is left of the job is cancelled and the command returns only
once Slurm no longer lists it (issue 17, item 10). Slurm itself is faked here; tests/test_slurm.py runs jobs."""

from __future__ import annotations

import subprocess

from asr_dist.launch import submit


class FailedJob:
    job_id = "4242"

    def results(self):
        raise RuntimeError("task 0 raised ValueError")


def test_a_failed_job_still_running_is_cancelled_and_awaited(monkeypatch, capsys):
    states = iter(["RUNNING", "COMPLETING", "COMPLETING", None])  # what squeue says, call after call
    calls = []
    monkeypatch.setattr(submit, "slurm_view", lambda job_id: (next(states), None))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    assert submit.wait(FailedJob(), poll_s=0, grace_s=0) == 1  # no grace: Slurm did not end it on its own
    assert calls == [["scancel", "4242"]]
    assert next(states, "drained") == "drained"  # polled until Slurm no longer listed the job
    err = capsys.readouterr().err
    assert "job 4242 failed: task 0 raised ValueError" in err and "cancelled its remaining tasks" in err


def test_a_failed_job_that_slurm_ends_within_the_grace_period_is_not_cancelled(monkeypatch):
    """Slurm records such a job as FAILED (sacct); a scancel would turn it into CANCELLED."""
    states = iter(["RUNNING", "COMPLETING", None])
    calls = []
    monkeypatch.setattr(submit, "slurm_view", lambda job_id: (next(states), None))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    assert submit.wait(FailedJob(), poll_s=0, grace_s=30) == 1
    assert calls == []


def test_a_failed_job_that_slurm_already_ended_is_left_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(submit, "slurm_view", lambda job_id: (None, None))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    assert submit.wait(FailedJob(), poll_s=0) == 1
    assert calls == []
