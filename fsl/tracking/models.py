"""A study's best trials as MLflow Models, and their registration.

The best trial's best_model.pt (an artifact of its child run) becomes an MLflow Model of that run: the method's
served model (fsl.models.served: uint8 images in, embeddings, features or logits out) with a signature, an
input example and the best_model.pt itself (`extra_files`, what fsl-predict reads). With a registered name, it
becomes a version of that model. Both are idempotent: a model already logged for a run, or a version already
registered from it, is found and reused, so a resumed study or a replay never adds a second one.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "model"  # the logged model's name on its run
CHAMPION = "champion"  # the registered version of the study's best trial
BEST_MODEL_ARTIFACT = "checkpoint/best_model.pt"
EXAMPLE_IMAGES = 2


def best_runs(table: Any, metric: str, groups: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The child runs to publish as models, each with its registry aliases: `champion` for the study's best
    trial, `<key>-<value>` for the best trial of each value of a group key (e.g. setting-C)."""
    score = f"best_{metric}"
    if table is None or table.empty or score not in table or "mlflow_run_id" not in table:
        return {}
    scored = table[table[score].notna() & table["mlflow_run_id"].notna()].sort_values(score, ascending=False)
    if scored.empty:
        return {}
    runs: dict[str, list[str]] = {str(scored["mlflow_run_id"].iloc[0]): [CHAMPION]}
    for key in groups:
        if key not in scored:
            continue
        for value, rows in scored.groupby(key, sort=False):
            alias = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{key}-{value}")
            runs.setdefault(str(rows["mlflow_run_id"].iloc[0]), []).append(alias)
    return runs


def _find_logged_model(client: Any, experiment_id: str, run_id: str) -> str | None:
    found = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME}'"
    )
    ready = [m for m in found if str(m.status).endswith("READY")]
    return ready[0].model_id if ready else None


def served_from_file(path: Path) -> Any:
    """The served model of a best_model.pt, by its method's format; None for a method that serves none."""
    from fsl.train.checkpoint import read_checkpoint_file
    from fsl.train.registry import method_for_format

    saved = read_checkpoint_file(path)
    method = method_for_format(saved.get("format", "")) if isinstance(saved, dict) else None
    return (method.served_model(saved), saved) if method is not None else (None, saved)


def log_best_model(client: Any, experiment_id: str, run_id: str) -> str | None:
    """The run's best weights as an MLflow Model (once); its models:/ URI, or None when the run has no
    best_model.pt artifact or its method serves no model."""
    existing = _find_logged_model(client, experiment_id, run_id)
    if existing is not None:
        return f"models:/{existing}"
    if not any(a.path == BEST_MODEL_ARTIFACT for a in client.list_artifacts(run_id, "checkpoint")):
        return None
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        best_file = Path(client.download_artifacts(run_id, BEST_MODEL_ARTIFACT, tmp))
        served, saved = served_from_file(best_file)
        if served is None:
            return None
        size = int(saved["config"]["image_size"])
        example = np.random.default_rng(0).integers(0, 256, (EXAMPLE_IMAGES, size, size, 3), dtype=np.uint8)
        with torch.no_grad():
            output = served(torch.from_numpy(example)).numpy()
        model = client.create_logged_model(
            experiment_id,
            name=MODEL_NAME,
            source_run_id=run_id,
            tags={"fsl.format": str(saved["format"]), "fsl.output": served.output},
            model_type=served.output,
        )
        local = Path(tmp) / "mlflow-model"
        mlflow.pytorch.save_model(
            served,
            local,
            signature=infer_signature(example, output),
            input_example=example,
            extra_files=[str(best_file)],
            # MLflow's default: an exported graph (torch.export), which loads without this package and without
            # running pickled code; the network's own methods (ProtoNet's episodes) stay in best_model.pt.
            serialization_format="pt2",
            # Named, not inferred: inferring loads the model in a subprocess (seconds, and its log lines).
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
        )
        client.log_model_artifacts(model.model_id, str(local))
        client.finalize_logged_model(model.model_id, "READY")
    return f"models:/{model.model_id}"


def register(client: Any, name: str, model_uri: str, run_id: str, aliases: list[str]) -> str:
    """The model as a version of the registered model `name` (created once per run), with `aliases` moved to
    it; the version number."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
            raise
    model_id = model_uri.removeprefix("models:/")
    versions = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run_id]
    if versions:
        version = versions[0].version
    else:
        # The model's own artifact location as the source: a models:/ source would be resolved through the
        # process's default tracking URI rather than this client's store.
        source = client.get_logged_model(model_id).artifact_location
        version = client.create_model_version(name, source, run_id=run_id, model_id=model_id).version
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(version))
    return str(version)
