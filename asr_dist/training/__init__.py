"""The trainer, one module per responsibility (asr_dist/train.py is the entry point that wires them):

    precision.py   which precision this hardware should compute in, measured
    backend.py     DDP or DeepSpeed ZeRO-N + precision -> the Accelerator, autocast, input dtype
    preflight.py   every input on disk and the config's sanity, before any process group
    budget.py      total updates and updates per epoch, fixed at the start; the run's progress counters
    step.py        one optimizer update (accumulation, normalization, clipping, skipping, loss scaling)
    components.py  build(cfg): every part of a run, resumed from its checkpoint
    loop.py        the loop: logging, evaluation, checkpoints, stop, end-of-run
"""
