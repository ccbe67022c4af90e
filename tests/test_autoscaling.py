"""Studies on a real autoscaling Ray cluster (bench/fake_cluster.py: Ray's fake multi-node provider adds and
removes local nodes as the cluster's resource demand asks). The head has 1 CPU and no GPU; the only worker type,
`gpu-node`, advertises 1 CPU and 1 GPU (a logical GPU: the trials train on the CPU) and starts from zero, as the
GPU workers of cluster.yaml do. One cluster for the module; each study has its own storage and MLflow store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest
from conftest import tiny_study_argv
from trial_holds import GUARD_S, TrialHolds

from bench.fake_cluster import FakeAutoscalingCluster, free_port, kill, processes_naming, wait_until
from fsl.distributed.cluster_shape import CONFIG_ENV

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
FIXED = ["--param", "lr=0.002", "--param", "augment=none", "--param", "head_depth=0", "--param", "train_way=5"]
GPU_NODE = {"resources": {"CPU": 1, "GPU": 1}, "min_workers": 0, "max_workers": 2}


@pytest.fixture(scope="module")
def cluster():
    import ray

    assert not ray.is_initialized()
    cluster = FakeAutoscalingCluster(
        {"gpu-node": GPU_NODE}, head_cpus=1, idle_timeout_minutes=0.1, max_workers=2, dashboard=True
    )
    try:
        cluster.start()
        # This process is a driver of the cluster too: it reads the nodes, and runs the study whose trial it holds.
        with cluster.driver():
            yield cluster
    finally:
        cluster.shutdown()


def _worker_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]


def _study_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", CONFIG_ENV)}
    return {**env, **extra}


def _start_node(cluster: FakeAutoscalingCluster, name: str, flags: str, hide: Path | None = None) -> Path:
    """One more node, joined by hand with `ray start --address` as on a second machine: its own temp folder, under
    the cluster's so that the cluster's shutdown ends it too. `hide` starts it in a mount namespace of its own in
    which that folder is an empty tmpfs. Returns the temp folder once the node is alive."""
    import ray

    folder = cluster.temp_dir / name
    before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    start = _ray_start_argv(cluster, folder, flags)
    if hide is not None:
        script = 'mount -t tmpfs none "$0" && exec "$@"'
        start = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(hide), *start]
    subprocess.run(start, check=True, capture_output=True, timeout=GUARD_S, env=_study_env(RAY_USAGE_STATS_ENABLED="0"))
    wait_until(lambda: any(n["Alive"] and n["NodeID"] not in before for n in ray.nodes()), GUARD_S, f"{name} to join")
    return folder


def _ray_start_argv(cluster: FakeAutoscalingCluster, folder: Path, flags: str) -> list[str]:
    return [
        *(sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={cluster.address}", *flags.split()),
        *(f"--temp-dir={folder}", "--disable-usage-stats", "--object-store-memory=100000000"),
        f"--dashboard-agent-listen-port={free_port()}",  # not the default, which the head's agent holds
    ]


def _stop_node(folder: Path) -> None:
    """Kill a node started by _start_node: every process that names its temp folder, and their children."""
    kill(processes_naming(str(folder)))


def _run_study(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "studies/protonet_search.py", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )


def _trial_results(study: Path) -> dict[str, list[dict]]:
    return {
        d.name: [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        for d in study.glob("trial-*")
    }


def _children(tmp_path: Path, experiment: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs[runs["tags.fsl.role"] == "trial"]


def test_a_study_started_before_any_gpu_node_exists_grows_the_cluster_which_shrinks_after(
    cluster, tiny_hw4_master: Path, tmp_path: Path
):
    import ray

    assert _worker_nodes() == [] and ray.cluster_resources().get("GPU", 0) == 0  # the head alone, no GPU
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "grow", "grown") + [
        *"--num-samples 2 --epochs 1 --grace-period 1 --episodes-per-epoch 4 --gpus-per-worker 1".split(),
        *FIXED,
        *("--address", cluster.address),
    ]
    done = _run_study(argv, _study_env(**{CONFIG_ENV: str(cluster.config_path)}))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The study kept as many trials pending as the cluster can hold at its largest: two gpu-nodes.
    assert (
        "Trials at once: up to 2 (what the cluster holds at its largest: 2 x gpu-node, 2 worker nodes at most "
        f"({cluster.config_path}))"
    ) in done.stdout

    results = _trial_results(tmp_path / "results" / "grown")
    assert len(results) == 2 and all(r[-1]["epoch"] == 1 for r in results.values())
    nodes = {r[-1]["node_id"] for r in results.values()}
    head = ray.get_runtime_context().get_node_id()
    assert head not in nodes  # every trial ran on a node the autoscaler added for it
    children = _children(tmp_path, "grow")
    assert len(children) == 2 and set(children["status"]) == {"FINISHED"}
    by_trial = {r[-1]["trial_id"]: r[-1]["node_id"] for r in results.values()}
    for _, child in children.iterrows():
        assert child["tags.fsl.nodes"] == by_trial[child["tags.fsl.trial_id"]]

    # Idle nodes go away after the study (idle_timeout_minutes 0.1 here).
    wait_until(lambda: _worker_nodes() == [], GUARD_S, "the idle gpu-nodes to be removed")


def test_a_trial_no_node_type_can_hold_is_refused_before_any_trial_starts(
    cluster, tiny_hw4_master: Path, tmp_path: Path
):
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "refused", "too-big") + [
        *"--num-samples 2 --epochs 1 --gpus-per-worker 2".split(),
        *FIXED,
        *("--address", cluster.address),
    ]
    done = _run_study(argv, _study_env(**{CONFIG_ENV: str(cluster.config_path)}))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: --cpus-per-worker 1 --gpus-per-worker 2: a trial asks for CPU 1, GPU 2, more than any node of the "
        "cluster has (its largest node type, gpu-node, has CPU 1, GPU 1) "
        f"(node types from {cluster.config_path})"
    ]
    assert not (tmp_path / "results" / "too-big").exists()  # Tune never created the study


def test_a_study_that_waits_too_long_for_nodes_stops_saved_and_resumes_when_they_come(
    cluster, tiny_hw4_master: Path, tmp_path: Path
):
    """Node types unknown to the study (no config it can read): a trial that needs 2 GPUs waits, the autoscaler
    has no node type for it, and the study gives up after --wait-timeout with its trials still pending. A node
    with 2 GPUs then joins by hand, and --resume runs them: nothing was lost or duplicated."""
    from ray.tune import ExperimentAnalysis

    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "waits", "waiting") + [
        *"--num-samples 2 --epochs 1 --episodes-per-epoch 4 --gpus-per-worker 2".split(),
        *FIXED,
        *("--address", cluster.address),
    ]
    env = _study_env(HOME=str(tmp_path))  # no ~/ray_bootstrap_config.yaml: the node types are unknown
    done = _run_study([*argv, "--wait-timeout", "8"], env)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Trials at once: up to 2 (every trial: no node fits one yet, and the cluster's node types are unknown)" in (
        done.stdout
    )
    assert re.search(
        r"^Waiting for resources: no trial has run for \d+ s; 2 trials pending, each asking for CPU 1, GPU 2 ",
        done.stdout,
        re.MULTILINE,
    )
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    study = tmp_path / "results" / "waiting"
    waited = re.match(r"error: no trial could run for (\d+) s \(--wait-timeout 8\): ", error)
    assert waited and int(waited.group(1)) >= 8, error
    assert error.endswith(
        ": 2 trials pending, each asking for CPU 1, GPU 2, which the cluster did not provide; the study is saved "
        f"in {study}: add --resume to continue it once the cluster has the resources"
    )
    saved = ExperimentAnalysis(str(study)).trials
    assert [t.status for t in saved] == ["PENDING", "PENDING"]
    assert _children(tmp_path, "waits").empty  # no trial started, so no trial run

    extra = _start_node(cluster, "two-gpu-node", "--num-cpus=1 --num-gpus=2")
    try:
        resumed = _run_study([*argv, "--resume"], env)
    finally:
        _stop_node(extra)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    results = _trial_results(study)
    assert sorted(results) == sorted(f"trial-{t.trial_id}" for t in saved)  # the same two trials, run once each
    assert all([r["epoch"] for r in rows] == [1] for rows in results.values())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["waits"])
    assert (runs["tags.fsl.role"] == "study").sum() == 1  # the resumed study logs to the parent it began
    children = runs[runs["tags.fsl.role"] == "trial"]
    assert sorted(children["tags.fsl.trial_id"]) == sorted(t.trial_id for t in saved)
    assert set(children["status"]) == {"FINISHED"}


def test_a_node_lost_mid_trial_costs_only_the_epochs_since_its_checkpoint(
    cluster, tiny_hw4_master: Path, tmp_path: Path, monkeypatch
):
    """The trial is held before it reports its second epoch (its first is checkpointed and in MLflow); then the
    node it runs on dies as a reclaimed spot node does: its raylet and the trial's process are killed. The trial
    continues from its epoch-1 checkpoint on another node, in the same MLflow run."""
    monkeypatch.setenv(CONFIG_ENV, str(cluster.config_path))
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "node-loss", "lost") + [
        *"--num-samples 1 --epochs 3 --grace-period 3 --episodes-per-epoch 4 --gpus-per-worker 1".split(),
        *FIXED,
        *("--address", cluster.address),
    ]
    holds = TrialHolds(tmp_path / "holds", [2])
    outcome: dict[str, int] = {}
    study = threading.Thread(target=lambda: outcome.update(code=holds.run(argv)), daemon=True)
    study.start()
    try:
        pid = holds.wait(2, failed=lambda: None if study.is_alive() else "the study ended")
        first = wait_until(
            lambda: (c := _children(tmp_path, "node-loss")).shape[0] == 1 and c.iloc[0].get("tags.fsl.nodes"),
            GUARD_S,
            "the trial's first epoch and node in MLflow",
        )
        trial_process = psutil.Process(pid)
        raylet = trial_process.parent()
        assert raylet.name() == "raylet", raylet.cmdline()
        for process in (raylet, trial_process):
            process.send_signal(signal.SIGKILL)
    finally:
        holds.release_all()
        study.join(timeout=GUARD_S)
    assert not study.is_alive() and outcome["code"] == 0

    children = _children(tmp_path, "node-loss")
    assert len(children) == 1  # the restarted trial logged to its run, not a new one
    child = children.iloc[0]
    nodes = child["tags.fsl.nodes"].split(",")
    assert len(nodes) == 2 and nodes[0] == first and nodes[1] != first  # the lost node, then another
    history = mlflow.MlflowClient().get_metric_history(child["run_id"], "val_acc")
    assert sorted(m.step for m in history) == [1, 2, 3]  # each epoch once: no gap, no duplicate
    (rows,) = _trial_results(tmp_path / "results" / "lost").values()
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # restored from epoch 1: epoch 1 was not trained again
    table = pd.read_csv(tmp_path / "results" / "lost" / "results.csv")
    assert len(table) == 1 and table.loc[0, "status"] == "TERMINATED"


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -m` (a mount namespace) to hide a folder from a node")
def test_a_local_storage_folder_another_node_cannot_see_is_refused_before_any_trial(
    cluster, tiny_hw4_master: Path, tmp_path: Path
):
    """A node joins in a mount namespace of its own where the study's storage folder is an empty tmpfs: the
    folder exists on that node, but it is not the one the driver writes, as on a second machine."""
    storage = tmp_path / "results"
    storage.mkdir()
    blind = _start_node(cluster, "blind-node", "--num-cpus=1 --num-gpus=0", hide=storage)
    try:
        argv = tiny_study_argv(tiny_hw4_master, tmp_path, "blind", "unseen") + [
            *"--num-samples 1 --epochs 1".split(),
            *FIXED,
            *("--address", cluster.address),
        ]
        done = _run_study(argv, _study_env(**{CONFIG_ENV: str(cluster.config_path)}))
    finally:
        _stop_node(blind)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert re.fullmatch(
        rf"error: --storage {re.escape(str(storage))}: a local folder that 1 of the cluster's \d+ nodes cannot "
        r"see \(e\.g\. [\d.]+\); with --address use s3://\.\.\. or a folder every node mounts",
        error,
    ), error
    assert not (storage / "unseen").exists() and not list(storage.glob(".fsl-storage-check-*"))


def test_ray_job_submit_runs_a_study_on_the_cluster_as_the_guide_does(cluster, tiny_hw4_master: Path, tmp_path: Path):
    """The cluster guide's commands (docs/cluster.md) on a real cluster: a second node joins with `ray start
    --address`, and `ray job submit --working-dir .` runs the study's driver on the head from the uploaded code,
    attached with `--address auto`, its trials on the nodes."""
    import ray

    second = _start_node(cluster, "second-node", "--num-cpus=1 --num-gpus=0")
    study = tmp_path / "results" / "submitted"
    entrypoint = ["python", "studies/protonet_search.py", "--address", "auto"]
    entrypoint += tiny_study_argv(tiny_hw4_master, tmp_path, "jobs", "submitted")
    entrypoint += [*"--num-samples 1 --epochs 1 --episodes-per-epoch 4".split(), *FIXED]
    try:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", cluster.dashboard_url),
                *("--working-dir", ".", "--submission-id", f"fsl-{tmp_path.name}", "--", *entrypoint),
            ],
            cwd=ROOT,
            env=_study_env(),
            capture_output=True,
            text=True,
            timeout=GUARD_S,
        )
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        _stop_node(second)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Job 'fsl-{tmp_path.name}' succeeded" in done.stdout
    assert "Preparing study 'submitted'" in done.stdout  # the job's logs, streamed back by `ray job submit`
    results = _trial_results(study)
    assert len(results) == 1 and all(r[-1]["epoch"] == 1 for r in results.values())
    assert {r[-1]["node_id"] for r in results.values()} <= nodes
    runs = _children(tmp_path, "jobs")
    assert len(runs) == 1 and set(runs["status"]) == {"FINISHED"}
