"""Where a study's numbers come from, as tags on every MLflow run: the data set's content, the code version
and the hardware, so that runs compared in the MLflow UI are known to be comparable."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def dataset_hash(shared: dict[str, Any]) -> str:
    """A short hash of the decoded splits a study shares (pixels, labels, class names): equal hashes mean the
    trials saw the same data, whatever folder it was read from."""
    digest = hashlib.sha256()
    for name in sorted(shared):
        split = shared[name]
        if isinstance(getattr(split, "images", None), np.ndarray):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(split.images).data)
            digest.update(np.ascontiguousarray(split.labels).data)
            digest.update("\n".join(split.class_names).encode())
    return digest.hexdigest()[:12]


def code_version(root: Path = PROJECT_ROOT) -> str:
    """The git commit of the code, with '-dirty' when it has uncommitted changes; 'unknown' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def source_tags(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """MLflow's standard source tags, as its own runs get them (mlflow.source.name: the command; type; git
    commit and branch), so that the UI's Source and Version columns fill. The commit of this package's
    checkout is used when the command was not started from one (an installed console script)."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_BRANCH,
        MLFLOW_GIT_COMMIT,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
        MLFLOW_USER,
    )

    tags = {k: v for k, v in resolve_tags({}).items() if k.startswith("mlflow.source.") or k == MLFLOW_USER}
    tags.setdefault(MLFLOW_SOURCE_TYPE, "LOCAL")
    if MLFLOW_GIT_COMMIT not in tags:
        commit, branch = _git(root, "rev-parse", "HEAD"), _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        if commit:
            tags[MLFLOW_GIT_COMMIT] = commit
        if branch and branch != "HEAD":  # HEAD: a detached checkout has no branch
            tags[MLFLOW_GIT_BRANCH] = branch
    # An entry point's path (.venv/bin/fsl-protonet-search) says less than its name.
    tags[MLFLOW_SOURCE_NAME] = Path(tags.get(MLFLOW_SOURCE_NAME) or "unknown").name
    return tags


def _git(root: Path, *args: str) -> str | None:
    """One git command's output in `root`; None without git or outside a checkout."""
    try:
        run = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (run.stdout.strip() or None) if run.returncode == 0 else None


def hardware(resources: dict[str, float]) -> str:
    """The Ray cluster's CPUs and GPUs and the driver's platform, e.g. '2 CPU, 0 GPU; Linux x86_64'."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    return f"{cpus:g} CPU, {gpus:g} GPU; {platform.system()} {platform.machine()}"
