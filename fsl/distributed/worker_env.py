"""The environment of the Ray processes that train: glibc's allocator set up for the large, short-lived tensors
of a training step on CPUs, and Tune given time to end a stopped trial before its process runs the next one.

By default glibc hands every freed block above 32 MiB back to the kernel and maps it again, zero-filled, at the
next step; and a thread other than the main one (Tune runs each trial's function in one) allocates from an
arena whose heaps cannot hold such a block, so it is mapped and unmapped every time whatever the thresholds.
Measured on this project's 2-core CI machine (glibc 2.36), a Conv4 epoch at 32 px spent a third of its time in
the kernel on those page faults; one arena that keeps freed memory made the same epoch 1.6x faster in a
thread and in the main thread alike (bench/README.md). The cost is that a training process keeps its peak
heap instead of returning it, which PyTorch's own CUDA allocator does on a GPU anyway.

glibc reads these variables once, when a process starts, so they are given to Ray as the job's environment
(every worker process of the study starts with them); a variable the user has set keeps the user's value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

MALLOC_DEFAULTS = {
    "MALLOC_ARENA_MAX": "1",  # every thread allocates from the main heap, which can hold blocks of any size
    "MALLOC_MMAP_THRESHOLD_": str(4 << 30),  # blocks up to 4 GiB come from the heap, not from fresh mappings
    "MALLOC_TRIM_THRESHOLD_": str(4 << 30),  # and freed memory stays there for the next step (up to 4 GiB)
}

# A trial process that Tune reuses (fsl.study.runner) first waits for the stopped trial's thread to end; if it has
# not ended in TUNE_FUNCTION_THREAD_TIMEOUT_S (Tune's default: 2 s) the next trial fails ("Could not re-use
# actor"). Ending takes milliseconds, but on a loaded machine the thread may not run for seconds: a time limit
# there would make a study's result depend on the machine's load, so it is a guard only.
TUNE_DEFAULTS = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "60"}
WORKER_DEFAULTS = {**MALLOC_DEFAULTS, **TUNE_DEFAULTS}


def worker_env_vars(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings the study's Ray workers start with: WORKER_DEFAULTS, except where `environ` (the driver's
    environment) already sets a variable, whose value is passed on instead."""
    environ = os.environ if environ is None else environ
    return {name: environ.get(name, default) for name, default in WORKER_DEFAULTS.items()}


def worker_runtime_env() -> dict[str, dict[str, str]]:
    """ray.init's runtime_env for a study's job: every worker process starts with worker_env_vars()."""
    return {"env_vars": worker_env_vars()}
