"""Security basics, checked on the source: checkpoints load as weights only, nothing is evaluated as code,
Ray's authentication is never turned off, and --param values are parsed as literals; and checked on a real
study: credentials in the environment never reach MLflow."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from fsl.study.space import parse_param

ROOT = Path(__file__).resolve().parents[1]
CODE = [p for folder in ("fsl", "studies", "scripts", "bench") for p in (ROOT / folder).rglob("*.py")]


def _calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(node, ast.Call)]


def test_every_torch_load_is_weights_only():
    loads = []
    for path in CODE:
        for call in _calls(path):
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr == "load" and getattr(func.value, "id", "") == "torch":
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords)
                loads.append((f"{path.relative_to(ROOT)}:{call.lineno}", safe))
    assert loads, "expected the checkpoint code to call torch.load"
    assert [where for where, safe in loads if not safe] == []


def test_no_code_is_evaluated():
    found = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path in CODE
        for call in _calls(path)
        if isinstance(call.func, ast.Name) and call.func.id in ("eval", "exec", "compile")
    ]
    assert found == []


def test_nothing_turns_ray_authentication_off():
    files = [*CODE, *ROOT.glob("*.yaml"), *ROOT.glob("*.md"), *(ROOT / "scripts").glob("*.sh"), ROOT / ".ci" / "run"]
    offending = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines(), start=1)
        if "RAY_AUTH_MODE=disabled" in line and not line.lstrip().startswith("#")  # a warning comment may name it
    ]
    assert offending == []


@pytest.mark.parametrize("text", ["lr=__import__('os').getpid()", "head_depth=1+1", "augment=none;import os"])
def test_param_values_are_literals_not_code(text: str):
    try:
        value = parse_param(text)[1]
    except ValueError:
        return  # refused: fine
    assert isinstance(value, str) and value == text.split("=", 1)[1]  # kept as text, never run


SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "sentinel-aws-7f3a9c1e",
    "AWS_ACCESS_KEY_ID": "sentinel-akid-52be04d8",
    "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow-b81d6f20",
    "MLFLOW_TRACKING_TOKEN": "sentinel-token-0c9e4a77",
}


def test_environment_and_credentials_are_never_logged_to_mlflow(tiny_hw4_master: Path, tmp_path: Path, monkeypatch):
    """A real 2-trial study on a real local Ray, with credentials in the environment of the driver and (since
    Ray is started after they are set) of every trial: no param or tag of the parent or a child run holds a
    secret's value or an environment variable's name."""
    import ray
    from conftest import tiny_study_argv
    from mlflow import MlflowClient

    from fsl.commands.protonet_search import main

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    argv = tiny_study_argv(tiny_hw4_master, tmp_path, "secrets", "secrets")
    argv += [*"--num-samples 2 --epochs 1 --episodes-per-epoch 2 --max-concurrent 1".split()]
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=100 * 1024**2)
    try:
        in_a_worker = ray.get(ray.remote(lambda: os.environ.get("AWS_SECRET_ACCESS_KEY")).remote())
        assert in_a_worker == SECRETS["AWS_SECRET_ACCESS_KEY"]  # Ray's processes do hold the secret
        assert main(argv) == 0
    finally:
        ray.shutdown()

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("secrets")
    runs = client.search_runs([experiment.experiment_id])
    roles = sorted(run.data.tags.get("fsl.role", "") for run in runs)
    assert roles == ["study", "trial", "trial"]
    logged = [
        (run.info.run_name, kind, key, value)
        for run in runs
        for kind, entries in (("param", run.data.params), ("tag", run.data.tags))
        for key, value in entries.items()
    ]
    assert sum(kind == "param" for _, kind, _, _ in logged) > 20  # the check reads the real entries
    forbidden = [*SECRETS.values(), *SECRETS]
    assert [entry for entry in logged if any(word in f"{entry[2]}={entry[3]}" for word in forbidden)] == []
