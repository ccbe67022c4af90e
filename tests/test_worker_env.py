"""The allocator and Tune settings a study's Ray workers start with (fsl.distributed.worker_env): what start_ray
passes to ray.init reaches a real Ray worker's environment at its start (where glibc reads it), and a value the
user set wins over the default."""

import logging
from pathlib import Path

import pytest
import ray

from fsl.distributed.worker_env import WORKER_DEFAULTS, worker_env_vars, worker_runtime_env
from fsl.study.runner import StudyOptions, ray_init_args

pytestmark = pytest.mark.ray


def test_defaults_unless_the_user_set_a_variable():
    assert worker_env_vars({}) == {
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_MMAP_THRESHOLD_": "4294967296",
        "MALLOC_TRIM_THRESHOLD_": "4294967296",
        "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60",
    }
    mine = worker_env_vars({"MALLOC_ARENA_MAX": "4", "PATH": "/bin"})
    assert mine == {**WORKER_DEFAULTS, "MALLOC_ARENA_MAX": "4"}


def test_a_cluster_address_gets_the_same_worker_environment():
    args = ray_init_args(StudyOptions("s", "/tmp/x", "sqlite:///x.db", address="10.0.0.5:6379"))
    assert args == {
        "address": "10.0.0.5:6379",
        "runtime_env": {"env_vars": worker_env_vars()},
        "logging_level": logging.WARNING,  # Ray's INFO start-up lines only with -v (fsl.study.console)
    }
    assert args["runtime_env"] == worker_runtime_env()
    verbose = StudyOptions("s", "/tmp/x", "sqlite:///x.db", address="10.0.0.5:6379", verbose=True)
    assert ray_init_args(verbose)["logging_level"] == logging.INFO


def test_a_study_worker_starts_with_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # the user's own choice
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    args = ray_init_args(StudyOptions("s", str(tmp_path), f"sqlite:///{tmp_path}/m.db", num_cpus=1))
    assert args["num_cpus"] == 1
    monkeypatch.delenv("MALLOC_ARENA_MAX")  # the worker must get it from the job, not inherit it from here
    ray.init(**args, include_dashboard=False, address="local")
    try:

        @ray.remote
        def environment_at_start() -> dict[str, str]:
            # /proc/self/environ is the environment the process was started with: what glibc read.
            entries = open("/proc/self/environ", "rb").read().decode().split("\0")
            return dict(entry.split("=", 1) for entry in entries if entry.startswith(("MALLOC_", "TUNE_FUNCTION")))

        seen = ray.get(environment_at_start.remote())
    finally:
        ray.shutdown()
    assert seen == {
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": str(4 << 30),
        "MALLOC_TRIM_THRESHOLD_": str(4 << 30),
        "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60",
    }
