"""Shared fixtures: tiny generated data sets, an isolated cache, and one real local Ray per test module."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

# Isolate every test run from the user's caches, Ray cluster and MLflow store before anything imports them.
os.environ["FSL_CACHE_DIR"] = tempfile.mkdtemp(prefix="fsl-test-cache-")
atexit.register(shutil.rmtree, os.environ["FSL_CACHE_DIR"], ignore_errors=True)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("OMP_NUM_THREADS", "1")

# A line Ray's log monitor forwarded from a raylet or worker, e.g. "(raylet) ... is over 95% full" or
# "(pid=123) ...", possibly coloured. It reaches this process's stderr at any moment while a module's Ray is up.
_RAY_FORWARDED = re.compile(r"^(\x1b\[[0-9;]*m)*\((raylet|[^)]*pid=\d+[^)]*)\)")


def own_stderr(err: str) -> str:
    """stderr without the lines Ray forwarded from its processes: what the code under test wrote."""
    return "".join(line for line in err.splitlines(keepends=True) if not _RAY_FORWARDED.match(line))


def rewrite_visibly(path: Path, data: bytes, guard_s: float = 10.0) -> None:
    """Write `data` over `path` so that its change time moves: a file system stamps times at its own granularity,
    so a write within the same tick as the last change leaves the file's times as they were (what a cache keyed
    by size and times compares). The write is repeated until they move."""
    before = path.stat().st_ctime_ns
    deadline = time.monotonic() + guard_s
    path.write_bytes(data)
    while path.stat().st_ctime_ns == before:
        assert time.monotonic() < deadline, f"guard: {path}'s change time did not move in {guard_s:.0f} s"
        time.sleep(0.001)
        path.write_bytes(data)


TINY_EPISODES = {"n_way": 5, "k_shot": 1, "n_query": 5, "n_episodes": 30}


def write_tiny_hw4(root: Path, seed: int = 0) -> Path:
    """An HW4-layout folder: 8 train / 5 val classes of 20 images at 16 px, 30 fixed 5-way 1-shot episodes."""
    from fsl.data.demo import write_demo_dataset

    write_demo_dataset(
        root,
        seed=seed,
        image_size=16,
        n_train_classes=8,
        n_val_classes=5,
        images_per_class=20,
        episodes=TINY_EPISODES,
    )
    return root


@pytest.fixture(scope="session")
def tiny_hw4_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hw4(tmp_path_factory.mktemp("tiny") / "hw4")


@pytest.fixture
def tiny_hw4(tiny_hw4_master: Path, tmp_path: Path) -> Path:
    """A private copy that a test may damage."""
    import shutil

    return Path(shutil.copytree(tiny_hw4_master, tmp_path / "hw4"))


@pytest.fixture(scope="module")
def local_ray():
    """One real local Ray per test module: fixed logical CPUs (more than the 2 cores, so a 2-worker DDP
    trial and its driver fit) and no GPU, whatever the machine has; no dashboard."""
    import ray

    ray.init(address="local", num_cpus=4, num_gpus=0, include_dashboard=False, object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()


def tiny_study_argv(data: Path, tmp: Path, experiment: str, study: str | None = None) -> list[str]:
    """The protonet_search.py flags every test study on the tiny data shares: its data and episode shape, and
    storage plus a SQLite MLflow store in the test's own folder."""
    argv = ["--data", str(data), "--image-size", "16", "--n-query", "5", "--eval-episodes", "30"]
    argv += ["--storage", str(tmp / "results"), "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"]
    argv += ["--experiment", experiment]
    return argv + (["--study-name", study] if study else [])


# What the libraries print when they start (Ray, Tune, Optuna, MLflow): a study shows none of it without -v.
LIBRARY_CHATTER = (
    "Token authentication is enabled",
    "Started a local Ray instance",
    "Configuration for experiment",
    "View detailed results here",
    "tensorboard --logdir",
    "A new study created",
    "Creating initial MLflow database",
    " INFO ",
)


def assert_quiet(output: str) -> None:
    """Only the study's own lines: none of LIBRARY_CHATTER."""
    noisy = [line for line in output.splitlines() if any(marker in line for marker in LIBRARY_CHATTER)]
    assert not noisy, "library chatter on the console:\n" + "\n".join(noisy)


def write_tiny_office(root: Path, seed: int = 0) -> Path:
    """An Office-Home-like HW4 folder: 6 classes, 6 train and 3 val images each, at 16 px."""
    from fsl.data.demo import write_office_demo_dataset

    write_office_demo_dataset(root, seed=seed, image_size=16, n_classes=6, train_per_class=6, val_per_class=3)
    return root


@pytest.fixture(scope="session")
def tiny_office(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_office(tmp_path_factory.mktemp("tiny") / "office")


# ResNet18 with small heads and batches: what the BYOL and Office-Home tests train, in seconds.
TINY_BYOL_PARAMS = ["head_width=32", "projection_dim=16", "batch_size=16"]
TINY_CLASSIFIER_PARAMS = ["head_width=16", "batch_size=12"]


def tiny_output_argv(tmp: Path, experiment: str, study: str) -> list[str]:
    """Storage and a SQLite MLflow store in the test's own folder."""
    return [
        *("--storage", str(tmp / "results"), "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"),
        *("--experiment", experiment, "--study-name", study),
    ]
