"""A study's data as MLflow datasets: what fills the runs table's Dataset column and its dataset filter.

Each decoded split a study shares (train, val, the BYOL probe split) is one dataset, named after the data folder
and the split, with a digest of the decoded pixels, labels and class names: the same digest means the trials saw
the same data, whichever folder or copy it was read from. The fixed evaluation episodes are one more dataset
(their file as the source, the episodes actually scored as the digest). Datasets are plain dicts here (the Tune
callback that logs them is pickled with the study); fsl.tracking.recorder turns them into MLflow's entities.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

TRAINING, EVALUATION = "training", "evaluation"  # MLflow's conventional mlflow.data.context values
DIGEST_CHARS = 16  # MLflow keeps up to 36; 16 hex characters never collide between a user's data sets


def split_digest(split: Any) -> str:
    """The decoded split's content: pixels, labels and class names (not file names or paths)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(split.images).data)
    digest.update(np.ascontiguousarray(split.labels).data)
    digest.update("\n".join(split.class_names).encode())
    return digest.hexdigest()[:DIGEST_CHARS]


def episodes_digest(episodes: Any) -> str:
    """The episodes actually scored: each one's support and query rows and query labels, in order."""
    digest = hashlib.sha256()
    for array in (episodes.support, episodes.query, episodes.query_labels):
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:DIGEST_CHARS]


def _meta(name: str, digest: str, source: Path, schema: Any, profile: dict[str, Any], context: str) -> dict[str, Any]:
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    local = get_dataset_source_from_json(json.dumps({"uri": str(source)}), "local")  # MLflow's local-path source
    dataset = MetaDataset(local, name=name, digest=digest, schema=schema)
    return {**dataset.to_dict(), "profile": json.dumps(profile), "context": context}


def _split_schema(split: Any) -> Any:
    from mlflow.types.schema import Schema, TensorSpec

    return Schema(
        [
            TensorSpec(split.images.dtype, (-1, *split.images.shape[1:]), "image"),
            TensorSpec(split.labels.dtype, (-1,), "label"),
        ]
    )


def study_datasets(shared: dict[str, Any], data_root: Path, episodes_file: Path | None = None) -> tuple[dict, ...]:
    """The datasets of a study's shared data: each decoded split (`train` for training, the others for
    evaluation) and, when given, the fixed evaluation episodes read from (or saved to) episodes_file."""
    folder = Path(data_root).name
    datasets = []
    for key in sorted(shared):
        value = shared[key]
        if isinstance(getattr(value, "images", None), np.ndarray):
            profile = {"images": len(value.labels), "classes": len(value.class_names)}
            context = TRAINING if key == "train" else EVALUATION
            name = f"{folder}/{key}"
            datasets.append(_meta(name, split_digest(value), data_root, _split_schema(value), profile, context))
        elif episodes_file is not None and hasattr(value, "support") and hasattr(value, "query_labels"):
            profile = {"episodes": len(value), "n_way": value.n_way, "k_shot": value.k_shot, "n_query": value.n_query}
            name = f"{folder}/{Path(episodes_file).stem}"
            datasets.append(_meta(name, episodes_digest(value), Path(episodes_file), None, profile, EVALUATION))
    return tuple(datasets)
