"""A real autoscaling Ray cluster on this machine, for tests/test_autoscaling.py and bench/b8_autoscaling.py: Ray's
fake multi-node provider (shipped in the Ray wheel) adds and removes local worker nodes, each its own raylet, as
the cluster's real resource demand asks.

`ray.cluster_utils.AutoscalingCluster` does the same but cannot start from the pip wheel (it reads an example
config the wheel does not ship) and ends with `ray stop --force`, which would stop every Ray of the user. This
one writes the config itself, starts the head on its own port and temp folder, and ends by killing exactly the
processes of that temp folder (the head's, and those of the nodes the autoscaler added, which live in the
head's session folder)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

# The keys a cluster launcher config must have; the fake provider uses none of their values.
_EMPTY_KEYS: dict[str, Any] = {
    **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands")},
    **{key: [] for key in ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
    **{key: [] for key in ("cluster_synced_files", "rsync_exclude", "rsync_filter")},
    "file_mounts": {},
    "file_mounts_sync_continuously": False,
    "auth": {},
    "docker": {},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeAutoscalingCluster:
    def __init__(
        self,
        worker_types: dict[str, dict[str, Any]],
        head_cpus: int = 1,
        idle_timeout_minutes: float = 0.1,
        max_workers: int = 4,
        dashboard: bool = False,
    ) -> None:
        """worker_types: name -> {"resources": {...}, "min_workers": n, "max_workers": n}. With `dashboard`, the
        head runs Ray's dashboard, and with it the Jobs server (`ray job submit --address <dashboard_url>`)."""
        # Short: Ray's Unix sockets live under it, and their paths have a length limit.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="fsl-as-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config_path = self.temp_dir / "autoscaler.json"
        self.config = {
            "cluster_name": "fake_multinode",
            "max_workers": max_workers,
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": idle_timeout_minutes,
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,  # the provider's nodes join this head (default: port 6379)
            },
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
                **{name: {"node_config": {}, **spec} for name, spec in worker_types.items()},
            },
            "head_node_type": "ray.head.default",
            **_EMPTY_KEYS,
        }
        self.head_cpus = head_cpus
        self.dashboard_port = free_port() if dashboard else None
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}" if dashboard else None
        # Ray's token authentication stays on, as on every cluster of this project's; the cluster's own token, so
        # that no token of the user's is needed or touched. Every process that talks to the cluster needs env.
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}

    def start(self, timeout_s: float = 300.0) -> None:
        self.config_path.write_text(json.dumps(self.config))  # JSON is YAML
        env = {
            **os.environ,
            **self.env,
            # A job's entrypoint (`python ...`, as docs/cluster.md submits it) runs with the head's
            # PATH: this Python's.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        command = [
            *(sys.executable, "-m", "ray.scripts.scripts", "start", "--head"),
            *(f"--port={self.port}", f"--temp-dir={self.temp_dir}", f"--autoscaling-config={self.config_path}"),
            *(f"--num-cpus={self.head_cpus}", "--num-gpus=0", "--disable-usage-stats"),
            *(
                (f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1")
                if self.dashboard_port
                else ("--include-dashboard=false",)
            ),
            "--object-store-memory=200000000",
            # Its own port, not Ray's fixed default (52365): another Ray on this machine (a user's, a test's)
            # may hold that one, and a head whose agent cannot listen takes no job.
            f"--dashboard-agent-listen-port={free_port()}",
        ]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=timeout_s)
        if self.dashboard_url:
            self._wait_for_jobs(env, timeout_s)

    def _wait_for_jobs(self, env: dict[str, str], timeout_s: float) -> None:
        """The Jobs server answers before the head's agent that runs jobs has registered ("No available agent to
        submit job"): a first trivial job, submitted until one is accepted and succeeds, says it is ready."""
        submit = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", self.dashboard_url]
        deadline = time.monotonic() + timeout_s
        while True:
            done = subprocess.run([*submit, "--", "true"], env=env, capture_output=True, text=True, timeout=timeout_s)
            if done.returncode == 0:
                return
            assert "No available agent" in done.stderr + done.stdout, done.stderr[-2000:]
            assert time.monotonic() < deadline, f"guard: the Jobs server took no job within {timeout_s:.0f} s"
            time.sleep(0.5)

    @contextlib.contextmanager
    def driver(self, **init_args: Any) -> Iterator[None]:
        """This process as a driver of the cluster (ray.init with `init_args`), speaking with the cluster's token;
        the studies it starts inherit the token through the environment. Both are undone at the end."""
        import ray

        try:
            with environment(self.env):
                _reload_ray_auth()
                try:
                    ray.init(address=self.address, **{"logging_level": "WARNING", **init_args})
                    yield
                finally:
                    ray.shutdown()
        finally:
            _reload_ray_auth()

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: those whose command line names the cluster's temp folder or port
        (its daemons and raylets), and their children (Ray's workers, which rename themselves `ray::...`)."""
        return processes_naming(str(self.temp_dir), f":{self.port}")

    def shutdown(self) -> None:
        kill(self.processes())
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """This process's environment with `values` set, and as it was again at the end."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def processes_naming(*marks: str) -> list[psutil.Process]:
    """Live processes (not this one) whose command line contains one of `marks`, and all their children."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if any(mark in cmdline for mark in marks):
            found[process.pid] = process
            try:
                found.update((child.pid, child) for child in process.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
    found.pop(os.getpid(), None)
    return list(found.values())


def kill(processes: list[psutil.Process]) -> None:
    """SIGKILL each process and wait until they are gone."""
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)


def _reload_ray_auth() -> None:
    """Ray caches its auth mode (in its config) and the token it read in this process; the next ray.init must
    read the environment again, as Ray itself does when it turns token mode on for a local cluster."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def wait_until(condition, guard_s: float, what: str, every_s: float = 0.2) -> Any:  # noqa: ANN001
    """Poll a state until it holds; the guard only ends a test that would otherwise hang."""
    deadline = time.monotonic() + guard_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"guard: {what} did not happen within {guard_s:.0f} s"
        time.sleep(every_s)
    return value
