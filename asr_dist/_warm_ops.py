"""Build DeepSpeed's JIT-compiled CPU ops once (`python -m asr_dist._warm_ops`), at install time and before tests.

DeepSpeed compiles its shared-memory collective op (shm_comm) with ninja the first time a DeepSpeed run
starts on a machine without CUDA (~30 s, minutes on a loaded machine). `make venv` and tests/run.sh call this
so that no run pays (or hangs on) that build; it goes into the venv's own build folder (asr_dist/ds_ops.py),
clearing a stale build lock first. On GPU machines there is nothing to build.
"""

from __future__ import annotations

import logging
import sys
import time

from asr_dist import ds_ops


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    root = ds_ops.use_venv_extensions_dir()
    ds_ops.clear_stale_locks(root)
    op = ds_ops.load_shm_op()  # None when the accelerator does not use it
    print(f"DeepSpeed CPU ops ready in {root} ({'shm_comm' if op is not None else 'nothing to build'}) "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
