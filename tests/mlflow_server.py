"""A real `mlflow server` process on 127.0.0.1 for the tests about a tracking server: started on a free port
(or on the port of one that was stopped), stopped with its worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.is_file() else ""

    def stop(self) -> None:
        """Stop the server and its worker: the process group it leads (started in its own session)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(
    root: Path,
    backend_store_uri: str | None = None,
    timeout_s: float = 300.0,
    attempts: int = 3,
    port: int | None = None,
) -> MlflowServer:
    """A real `mlflow server` on a free port of 127.0.0.1 (or the given one: a server started again), with one
    worker (tests share a small machine): on backend_store_uri, or a SQLite store and served artifacts under
    root. Its log is root/mlflow-server.log (appended). Returns once GET /health answers OK; a server that exits
    first (its port taken meanwhile) is started again on another port."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "mlflow-server.log"
    for attempt in range(attempts):
        if port is None or attempt:
            port = free_port()
        command = [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            *("--backend-store-uri", backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"),
            *("--artifacts-destination", str(root / "mlartifacts")),
        ]
        # MLflow 3 also starts a job runner with a pool of huey workers (for its GenAI jobs) unless told not to: it
        # doubles the server's start and stop time on a small machine, and tracking does not use it.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with log.open("ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        server = MlflowServer(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                    if response.status == 200 and response.read().strip() == b"OK":
                        return server
            except OSError:
                pass
            time.sleep(0.3)
        if process.poll() is None:
            server.stop()
            raise RuntimeError(f"mlflow server did not answer /health within {timeout_s:.0f} s:\n{server.log_tail()}")
    raise RuntimeError(f"mlflow server exited with status {process.returncode}:\n{server.log_tail()}")
