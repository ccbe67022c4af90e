"""Shared fixtures: tiny generated data sets, an isolated cache, and one real local Ray per test module."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Isolate every test run from the user's caches, Ray cluster and MLflow store before anything imports them.
os.environ["FSL_CACHE_DIR"] = tempfile.mkdtemp(prefix="fsl-test-cache-")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
    trial and its driver fit), no dashboard."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()


def tiny_study_argv(data: Path, tmp: Path, experiment: str, study: str | None = None) -> list[str]:
    """The protonet_search.py flags every test study on the tiny data shares: its data and episode shape, and
    storage plus a SQLite MLflow store in the test's own folder."""
    argv = ["--data", str(data), "--image-size", "16", "--n-query", "5", "--eval-episodes", "30"]
    argv += ["--storage", str(tmp / "results"), "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"]
    argv += ["--experiment", experiment]
    return argv + (["--study-name", study] if study else [])
