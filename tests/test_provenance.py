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


def test_each_split_is_a_dataset_named_by_folder_and_split_with_a_digest_of_its_content(tmp_path: Path):
    import hashlib
    import json

    from fsl.data.episodes import FixedEpisodes
    from fsl.tracking.datasets import study_datasets

    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    episodes = FixedEpisodes(("e1",), np.array([[0, 1]]), np.array([[1, 0]]), np.array([[1, 0]]), n_way=2, k_shot=1)
    shared = {"train": _split(images), "val": _split(images[::-1].copy()), "val_episodes": episodes}
    train, val, eps = study_datasets(shared, tmp_path / "mini", tmp_path / "mini" / "val_testcase.csv")
    by_hand = hashlib.sha256(images.tobytes() + np.array([0, 1]).tobytes() + b"a\nb").hexdigest()[:16]
    assert (train["name"], train["digest"], train["context"]) == ("mini/train", by_hand, "training")
    assert json.loads(train["source"]) == {"uri": str(tmp_path / "mini")} and train["source_type"] == "local"
    assert json.loads(train["profile"]) == {"images": 2, "classes": 2}
    assert '"shape": [-1, 4, 4, 3]' in train["schema"]
    assert (val["name"], val["context"]) == ("mini/val", "evaluation") and val["digest"] != train["digest"]
    assert (eps["name"], eps["context"]) == ("mini/val_testcase", "evaluation")
    assert json.loads(eps["source"]) == {"uri": str(tmp_path / "mini" / "val_testcase.csv")}
    assert json.loads(eps["profile"]) == {"episodes": 1, "n_way": 2, "k_shot": 1, "n_query": 1}
    # The same pixels from another folder: the same digest; one changed pixel: another.
    again = study_datasets({"train": _split(images.copy())}, tmp_path / "copy")[0]
    assert again["digest"] == train["digest"] and again["name"] == "copy/train"
    changed = images.copy()
    changed[0, 0, 0, 0] += 1
    assert study_datasets({"train": _split(changed)}, tmp_path / "mini")[0]["digest"] != train["digest"]


def test_runs_get_mlflow_s_standard_source_tags():
    from fsl.tracking.provenance import source_tags

    tags = source_tags()
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
        branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=PROJECT_ROOT, capture_output=True)
        if branch.stdout.strip() not in (b"", b"HEAD"):
            assert tags["mlflow.source.git.branch"] == branch.stdout.decode().strip()
