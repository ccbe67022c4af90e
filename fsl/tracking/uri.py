"""Which MLflow tracking store a study writes to, and what artifact folder goes with it."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

# Schemes MLflow 3 serves as tracking stores (the ./mlruns file store is no longer one of them).
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def resolve_tracking_uri(flag: str | None, cwd: Path | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///<absolute working folder>/mlflow.db."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or ""
    source = "--tracking-uri" if flag else "MLFLOW_TRACKING_URI"
    if not uri:
        return f"sqlite:///{(Path(cwd or Path.cwd()) / 'mlflow.db').resolve()}"
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES:
        raise ValueError(
            f"{source}={uri!r}: expected a URI such as sqlite:////abs/path/mlflow.db or http://host:5000 "
            "(MLflow 3 no longer accepts file stores like ./mlruns)"
        )
    if scheme == "sqlite":
        path = uri.split("sqlite:///", 1)[-1]
        if not path.startswith("/"):
            # Trials run in their own working folders: a relative database would split the study.
            uri = f"sqlite:///{Path(path).resolve()}"
        Path(uri.split("sqlite:///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def tracking_server_problem(uri: str, timeout_s: float) -> str | None:
    """Why the tracking server at uri does not answer GET /health within timeout_s, in a few words; None when it
    answers, or when the store is not a server (SQLite and databases need none)."""
    if not uri.startswith(("http://", "https://")):
        return None
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            return None if response.status == 200 else f"/health answered HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return f"/health answered HTTP {err.code}"
    except (OSError, ValueError) as err:  # refused, unknown host, timed out, a malformed URL
        reason = getattr(err, "reason", err)
        return failure_reason(reason) if isinstance(reason, BaseException) else str(reason)


def check_tracking_server(uri: str, timeout_s: float = 10.0) -> None:
    """A tracking server must answer when a study starts: a wrong address or a server not started is one line
    before any work, rather than a study that runs without tracking. (A server that stops later is retried and
    replayed: fsl.tracking.mlflow_callback, studies/sync_mlflow.py.)"""
    problem = tracking_server_problem(uri, timeout_s)
    if problem is not None:
        raise ValueError(
            f"--tracking-uri {uri}: no MLflow server answers ({problem}); start one (mlflow server --host "
            "127.0.0.1 --port 5000 --backend-store-uri sqlite:////abs/path/mlflow.db) or give another URI"
        )


def failure_reason(err: BaseException) -> str:
    """A tracking store's failure in a few words. A refused connection's message is a page of urllib3 repr;
    its last words say what happened."""
    text = str(err).strip()
    errno = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", text)
    return errno.group(1).strip() if errno else (text.splitlines()[0][:200] if text else type(err).__name__)


def artifact_location_for(uri: str, experiment: str) -> str | None:
    """For a SQLite store, artifacts live beside the database (not in whatever folder MLflow was started
    from); a tracking server chooses its own artifact store."""
    if uri.startswith("sqlite:///"):
        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment)
        return (Path(uri.split("sqlite:///", 1)[1]).parent / "mlartifacts" / folder).as_uri()
    return None


def beside_python(command: str, fallback: str | None = None) -> str:
    """A command installed beside this Python (the venv's bin/, often not on PATH), by its full path; else
    `fallback` (or the bare name) for a shell to find."""
    beside = Path(sys.executable).parent / command
    return str(beside) if beside.is_file() else (fallback or command)


def sync_command(study_path: str, tracking_uri: str) -> str:
    """The command that replays a study's results into MLflow (fsl.commands.sync_mlflow)."""
    sync = beside_python("fsl-sync-mlflow", fallback="python studies/sync_mlflow.py")
    return f"{sync} {study_path} --tracking-uri {tracking_uri}"


def ui_command(uri: str, port: int = 5000) -> str:
    """How to open the MLflow UI on this store, with the mlflow installed beside this Python (the venv's)."""
    if uri.startswith("sqlite:///"):
        return f"{beside_python('mlflow')} ui --backend-store-uri {uri} --port {port}"
    return f"open {uri}"


def runs_page(uri: str, experiment_id: str | None, port: int = 5000) -> str:
    """The experiment's runs table in the UI: on the server itself, or on the `mlflow ui` of ui_command."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"
    return f"{base}/#/experiments/{experiment_id}/runs"


def open_ui_line(uri: str, experiment_id: str | None, port: int = 5000) -> str:
    """The summary's last line; `port` (--ui-port) for a local store's `mlflow ui` (5000 is AirPlay's on macOS)."""
    if uri.startswith(("http://", "https://")):
        return f"  open the UI: {runs_page(uri, experiment_id)}"
    return f"  open the UI: {ui_command(uri, port)}  then {runs_page(uri, experiment_id, port)}"


def resolve_checkpoint(checkpoint: str, tracking_uri: str | None, flag: str = "--checkpoint") -> Path:
    """A local checkpoint file: the path itself, or an MLflow URI downloaded: an artifact (runs:/<run_id>/...)
    or a logged or registered model (models:/<model_id>, models:/NAME@champion, runs:/<run_id>/model), whose
    best_model.pt travels in the model's extra files (fsl.tracking.models)."""
    if "://" not in checkpoint and not checkpoint.startswith(("runs:/", "models:/")):
        return Path(checkpoint)
    import mlflow

    # One small file: MLflow's progress bar would only add noise lines to the study's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        local = mlflow.artifacts.download_artifacts(checkpoint, tracking_uri=resolve_tracking_uri(tracking_uri))
    except Exception as err:  # MLflow raises several types for a missing run or artifact
        raise ValueError(f"{flag} {checkpoint}: cannot download it ({str(err).splitlines()[0]})") from None
    local = Path(local)
    if local.is_dir():  # a model: its best_model.pt
        found = sorted(local.rglob("best_model.pt"))
        if not found:
            raise ValueError(f"{flag} {checkpoint}: a model without a best_model.pt (not logged by this project)")
        return found[0]
    return local
