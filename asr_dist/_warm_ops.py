"""Build DeepSpeed's JIT-compiled CPU ops once (`python -m asr_dist._warm_ops`), before tests or benchmarks.

DeepSpeed compiles its shared-memory collective op (shm_comm) with ninja the first time a DeepSpeed run
starts on a machine without CUDA (~30 s, minutes on a loaded machine) and caches it in the torch-extensions
folder. Two ranks starting at once both wait on that build, so the first DeepSpeed test would pay it inside
its time budget; tests/run.sh calls this first. On GPU machines there is nothing to build.
"""

from __future__ import annotations

import sys
import time


def main() -> int:
    started = time.perf_counter()
    from deepspeed.comm.torch import build_shm_op

    op = build_shm_op()  # a no-op (None) when the accelerator does not use it
    print(f"DeepSpeed CPU ops ready ({'shm_comm' if op is not None else 'nothing to build'}) "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
