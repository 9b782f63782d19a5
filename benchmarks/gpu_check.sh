#!/usr/bin/env bash
# GPU readiness in under 8 minutes on a CUDA machine: the CUDA-marked tests, then a wav2vec2-base-sized
# throughput run under DDP and ZeRO-2 with MFU against the device's measured peak (benchmarks/gpu_throughput.py).
# Usage, from the repository root of a checkout with .venv built (`make venv`):  bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.version.cuda)"
timeout 240 $PY -m pytest -q -rs -m cuda tests/test_cuda.py
timeout 300 $PY benchmarks/gpu_throughput.py --steps 40
