"""The provenance tags every run carries: the data's content hash, the code version and the hardware."""

import subprocess
from pathlib import Path

import numpy as np

from fsl.data.decoded import DecodedSplit
from fsl.tracking.provenance import PROJECT_ROOT, code_version, dataset_hash, hardware


def _split(images: np.ndarray) -> DecodedSplit:
    return DecodedSplit("train", images, np.array([0, 1]), ("a", "b"), ("1", "2"))


def test_dataset_hash_follows_the_pixels_not_the_folder():
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    same = dataset_hash({"train": _split(images.copy()), "episodes": object()})
    assert dataset_hash({"train": _split(images)}) == same and len(same) == 12
    changed = images.copy()
    changed[1, 2, 3, 0] = 1
    assert dataset_hash({"train": _split(changed)}) != same
    assert dataset_hash({"val": _split(images)}) != same  # the split's role is part of it


def test_code_version_is_the_git_commit(tmp_path: Path):
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert code_version().removesuffix("-dirty") == head.stdout.strip()
    assert code_version(tmp_path) == "unknown"


def test_hardware_names_the_cluster_resources():
    assert hardware({"CPU": 4.0, "GPU": 1.0}).startswith("4 CPU, 1 GPU; ")
