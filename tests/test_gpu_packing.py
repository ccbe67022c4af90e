"""GPU packing on a real local Ray that declares one logical GPU (no GPU is needed: Ray schedules on the
declared resource, and the trials train on the CPU because torch sees no CUDA device): single-worker trials
of --gpus-per-worker 0.25 share the GPU four at a time (shown by holding four trials at once, tests/trial_holds.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pytest
from conftest import tiny_study_argv
from trial_holds import TrialHolds

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_with_one_gpu():
    import ray

    # More CPUs than four trials need, so the one GPU is what limits how many run at once.
    ray.init(address="local", num_cpus=6, num_gpus=1, include_dashboard=False, object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    """The most intervals open at one instant (an end at the same instant as a start does not overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def test_max_overlap_counts_intervals_open_at_once():
    assert max_overlap([(0, 10), (2, 5), (3, 4), (6, 9)]) == 3
    assert max_overlap([(0, 1), (1, 2)]) == 1
    assert max_overlap([]) == 0


def test_quarter_gpu_trials_run_four_at_once(ray_with_one_gpu, tiny_hw4_master: Path, tmp_path: Path):
    from fsl.distributed.train_trial import TrialResources
    from fsl.study.capacity import concurrency
    from fsl.study.runner import StudyOptions

    quarter = StudyOptions("s", str(tmp_path), "sqlite://", resources=TrialResources(1, 1.0, 0.25))
    assert concurrency(quarter, total_trials=6)[0] == 4  # 1 GPU / 0.25, though 6 CPUs would fit six

    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "packing", "quarter-gpus") + [
        *"--num-samples 5 --epochs 1 --episodes-per-epoch 2 --gpus-per-worker 0.25".split(),
        *"--param lr=0.002 --param augment=none --param head_depth=0 --param train_way=5".split(),
        *"--grace-period 1".split(),  # no early stopping
    ]
    # Each of the first four reports is held: a held trial reports nothing more, so they come from four trials,
    # and all four wait at once (the fifth trial could only start when one of them ends).
    holds = TrialHolds(tmp_path / "holds", range(1, 5))
    study_ended = threading.Event()
    held: list[int] = []

    def wait_for_four() -> None:
        try:
            failed = lambda: "the study ended" if study_ended.is_set() else None  # noqa: E731
            held.extend(holds.wait(number, failed=failed) for number in range(1, 5))
        finally:
            holds.release_all()

    waiter = threading.Thread(target=wait_for_four, daemon=True)
    waiter.start()
    try:
        assert holds.run(argv) == 0
    finally:
        study_ended.set()
        waiter.join(timeout=60)
    assert len(set(held)) == 4, held  # four trial processes held at the same time

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["packing"])
    children = runs[runs["tags.fsl.role"] == "trial"]
    assert len(children) == 5 and (children["status"] == "FINISHED").all()
    intervals = [(int(r.start_time.value), int(r.end_time.value)) for r in children.itertuples()]
    assert max_overlap(intervals) == 4  # the four held runs were open together, and never a fifth
    parent = runs[runs["tags.fsl.role"] == "study"].iloc[0]
    assert parent["params.gpus_per_worker"] == "0.25"
    assert parent["tags.fsl.hardware"].startswith("6 CPU, 1 GPU")
