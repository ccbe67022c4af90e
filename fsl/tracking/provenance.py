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


def hardware(resources: dict[str, float]) -> str:
    """The Ray cluster's CPUs and GPUs and the driver's platform, e.g. '2 CPU, 0 GPU; Linux x86_64'."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    return f"{cpus:g} CPU, {gpus:g} GPU; {platform.system()} {platform.machine()}"
