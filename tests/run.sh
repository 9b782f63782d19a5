#!/usr/bin/env bash
# Runs the whole suite: warms DeepSpeed's JIT op cache once, starts the local Slurm, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
slurm/dev-cluster up  # the local Slurm for tests/test_slurm.py (idempotent; ~0.05 s when already up)
$PY -m asr_dist._warm_ops  # DeepSpeed JIT-builds its CPU collective op once (~30 s cold)
$PY -m pytest -ra -q --timeout=900 tests "$@"
