"""cluster.yaml and cluster-onprem.yaml as Ray's cluster launcher reads them, and the cluster guide's "Running on
a cluster" commands (docs/cluster.md, linked from the README) against the CLIs they call. Nothing here needs a
cloud account or starts Ray: launching, IAM, S3 and the machine image can only be checked on AWS itself."""

from __future__ import annotations

import copy
import importlib
import ipaddress
import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]
# Local paths outside the repository that a config may mount: the Ray token (`ray get-auth-token --generate`).
USER_FILES = {"~/.ray/auth_token"}
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
PLACEHOLDER = re.compile(r"YOUR-[A-Z]+|[\w-]*REPLACE-ME")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def schema_validate(config: dict[str, Any]) -> None:
    """The JSON schema shipped in the Ray wheel (what Ray's validate_config applies first)."""
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)


def schema_fallback(config: dict[str, Any]) -> None:
    """The schema alone, on the file as written: only the top-level min_workers of an on-premises cluster is set
    aside, which Ray's preparation moves into its single node type before validating."""
    config = copy.deepcopy(config)
    config.pop("min_workers", None)
    schema_validate(config)


def ray_validate(config: dict[str, Any]) -> None:
    """What `ray up` does before anything else: fill in the provider's defaults, then validate. The functions are
    private to Ray; where a Ray release moves them, the shipped schema still checks the file."""
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:
        schema_fallback(config)
        return
    validate_config(prepare_config(copy.deepcopy(config)))


def commands(config: dict[str, Any]) -> list[str]:
    found = [c for key in COMMAND_KEYS for c in config.get(key) or []]
    for node_type in (config.get("available_node_types") or {}).values():
        found += (node_type.get("initialization_commands") or []) + (node_type.get("worker_setup_commands") or [])
    return found


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def repo_mount(config: dict[str, Any]) -> str:
    """The remote folder the repository is copied to (the file_mounts entry whose local side is `.`)."""
    remotes = [remote for remote, local in config["file_mounts"].items() if local in (".", "./")]
    assert len(remotes) == 1, f"the repository should be mounted once, got {remotes}"
    return remotes[0].rstrip("/")


def open_to_world(config: dict[str, Any]) -> list[str]:
    """Every inbound rule anywhere in the config that admits the whole internet to a port other than SSH's."""
    bad = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            world = [r.get("CidrIp") for r in value.get("IpRanges") or []] + [
                r.get("CidrIpv6") for r in value.get("Ipv6Ranges") or []
            ]
            if any(cidr in ("0.0.0.0/0", "::/0") for cidr in world):
                ssh_only = value.get("FromPort") == 22 and value.get("ToPort") == 22
                if not (ssh_only and str(value.get("IpProtocol", "")).lower() == "tcp"):
                    bad.append(json.dumps(value))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(config)
    return bad


def mlflow_server(config: dict[str, Any]) -> tuple[str, str]:
    """The one command that starts the MLflow server, and the address it binds to (a variable resolved to the
    command that sets it)."""
    started = [c for c in commands(config) if "mlflow server" in c]
    assert len(started) == 1, f"expected one command starting the MLflow server, got {started}"
    command = started[0]
    assert command in (config.get("head_start_ray_commands") or []) + (config.get("head_setup_commands") or [])
    host = re.search(r"(?:--host|-h)[=\s]+(\S+)", command)
    assert host, f"the MLflow server must be given --host (its default is loopback only): {command}"
    value = host.group(1).strip("'\"")
    variable = re.fullmatch(r"\$\{?(\w+)\}?", value)
    if variable:
        assignment = re.search(rf"\b{variable.group(1)}=(\$\(.*?\)|\S+)(?=\s|;|&&|$)", command)
        assert assignment, f"--host {value} is set nowhere in the command"
        value = assignment.group(1)
    return command, value


# --- the config files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_accepts_the_config_without_any_cloud_sdk(name: str, monkeypatch: pytest.MonkeyPatch):
    config = load(name)
    monkeypatch.setitem(sys.modules, "boto3", None)  # an import of boto3 now fails: validation is offline
    ray_validate(config)
    schema_fallback(config)


@pytest.mark.parametrize("name", CONFIGS)
def test_validation_rejects_a_misspelled_key(name: str):
    import jsonschema

    config = load(name)
    config["setup_comands"] = config.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        ray_validate(config)
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        schema_fallback(config)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_local_path_it_names_exists(name: str):
    config = load(name)
    for remote, local in config["file_mounts"].items():
        if local.startswith("~"):
            assert local in USER_FILES, f"{remote}: {local} is outside the repository"
        else:
            assert (ROOT / local).exists(), f"file_mounts {remote}: {local} is not in the repository"
    for pattern_file in config.get("rsync_filter") or []:
        assert (ROOT / pattern_file).is_file(), f"rsync_filter {pattern_file} is not in the repository"
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token", "the Ray token must reach the nodes"


@pytest.mark.parametrize("name", CONFIGS)
def test_every_repository_file_its_commands_name_exists(name: str):
    config = load(name)
    mount = repo_mount(config)
    named = set()
    for command in commands(config):
        named |= {m.group(1) for m in re.finditer(re.escape(mount) + r"/([\w./-]+)", command)}
        named |= {
            m.group(1) for m in re.finditer(r"\b(?:bash|sh|python3?)\s+((?:scripts|studies|fsl)/[\w./-]+)", command)
        }
    created = {p for p in named if p.startswith(".venv/")}  # made by scripts/setup-venv.sh on the node
    assert created and "VENV=.venv" in (ROOT / "scripts" / "setup-venv.sh").read_text()
    assert "scripts/setup-venv.sh" in named, "nodes should install the project with the project's own script"
    for path in sorted(named - created):
        assert (ROOT / path).exists(), f"{name} runs {path}, which is not in the repository"


@pytest.mark.parametrize("name", CONFIGS)
def test_the_cluster_runs_the_ray_this_project_declares(name: str):
    import ray
    from packaging.requirements import Requirement

    declared = next(
        Requirement(line.strip().strip('",'))
        for line in (ROOT / "pyproject.toml").read_text().splitlines()
        if line.strip().startswith('"ray[')
    )
    pins = {m.group(1) for c in commands(load(name)) for m in re.finditer(r"ray\[[\w,]+\]==([\w.]+)", c)}
    assert len(pins) == 1, f"Ray should be pinned once, got {pins}"
    (pin,) = pins
    assert declared.specifier.contains(pin), f"Ray {pin} on the cluster is outside pyproject's {declared}"
    assert pin.split(".")[:2] == ray.__version__.split(".")[:2], "launch with the Ray the cluster runs"


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_authentication_stays_on(name: str):
    config = load(name)
    for text in strings(config):
        assert not re.search(r"RAY_AUTH_MODE\s*[=:]\s*['\"]?disabled", text, re.I), text
    starts = [c for c in commands(config) if "ray start" in c]
    assert len(starts) == 2  # head and workers
    for command in starts:
        assert "RAY_AUTH_MODE=token" in command, f"ray start without token mode: {command}"


@pytest.mark.parametrize("name", CONFIGS)
def test_mlflow_server_is_bound_to_one_private_or_loopback_address(name: str):
    config = load(name)
    command, host = mlflow_server(config)
    assert host not in ("0.0.0.0", "::", "[::]", "*", ""), f"MLflow must not listen on all interfaces: {command}"
    assert "--disable-security-middleware" not in command and "--allowed-hosts '*'" not in command
    assert re.search(r"--backend-store-uri\s+sqlite:////?\$HOME/", command), "an absolute SQLite store on the head"
    if config["provider"]["type"] == "local":
        assert host == config["provider"]["head_ip"] and ipaddress.ip_address(host).is_private
    else:  # the driver runs on the head; people come through the SSH tunnel
        assert host == "127.0.0.1", f"on AWS MLflow should bind to the head's loopback, not {host}"
    assert re.search(r"curl\b.*\|\|", command) and "nohup" in command, "started once, in the background"


@pytest.mark.parametrize("name", CONFIGS)
def test_no_port_but_ssh_is_open_to_the_world(name: str):
    config = load(name)
    assert open_to_world(config) == []
    if config["provider"]["type"] == "aws":
        assert config["provider"]["security_group"]["IpPermissions"] == []
    else:  # no cloud firewall in front of an on-premises cluster: bind nothing to all interfaces
        assert not any("0.0.0.0" in c for c in commands(config))


def test_the_firewall_check_catches_an_open_port():
    config = load("cluster.yaml")
    rule = {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    config["provider"]["security_group"]["IpPermissions"] = [rule]
    assert open_to_world(config) == [json.dumps(rule)]
    ssh = {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    config["provider"]["security_group"]["IpPermissions"] = [ssh]
    assert open_to_world(config) == []


def test_the_aws_cluster_has_a_cpu_head_and_gpu_workers():
    config = load("cluster.yaml")
    types = config["available_node_types"]
    assert "GPU" not in types[config["head_node_type"]]["resources"]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert {t["resources"]["GPU"] for t in workers.values()} >= {1, 4}
    assert all(t["min_workers"] <= t["max_workers"] <= config["max_workers"] for t in workers.values())


# --- the cluster guide's commands (docs/cluster.md) -----------------------------------------------------------


CLUSTER_GUIDE = ROOT / "docs" / "cluster.md"


def cluster_section() -> str:
    """The "Running on a cluster" section of the cluster guide, up to the next section."""
    guide = CLUSTER_GUIDE.read_text()
    assert "\n## Running on a cluster\n" in guide
    return guide.split("\n## Running on a cluster\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_links_the_cluster_guide():
    assert "](docs/cluster.md)" in (ROOT / "README.md").read_text()


def shell_lines(section: str) -> list[str]:
    """The section's shell commands, one per logical line (continuations joined, comments dropped)."""
    lines = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#\s.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def invocations(line: str, program: str) -> list[list[str]]:
    """Every call of `program` in a line: at its start, after ;, &&, || or |, or inside $(...)."""
    found = []
    for segment in re.split(r"\$\(|\)|&&|\|\||;|\|", line):
        words = segment.strip().split()
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words.pop(0)
        if words and words[0] == program:
            found.append(shlex.split(" ".join(words)))
    return found


def resolve(cli: click.Group, argv: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """The subcommand an argv (program name first) names, e.g. ["job", "submit"], its click command, and its
    remaining arguments."""
    command: click.Command = cli
    path: list[str] = []
    program, args = argv[0], list(argv[1:])
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"`{' '.join([program, *path, args[0]])}` is not a command"
        path.append(args.pop(0))
        command = sub
    return path, command, args


def ray_cli() -> click.Group:
    from ray.scripts.scripts import cli

    return cli


def ray_calls() -> list[tuple[list[str], click.Context]]:
    """Every `ray` call in the section, in order, parsed by Ray's own CLI (its options, arity and types); the
    command of `ray exec` is checked too when it is a ray call itself."""
    cli = ray_cli()
    calls = []
    queue = [call for line in shell_lines(cluster_section()) for call in invocations(line, "ray")]
    while queue:
        argv = queue.pop(0)
        path, command, args = resolve(cli, argv)
        try:
            ctx = command.make_context(" ".join(["ray", *path]), list(args))
        except click.ClickException as err:
            pytest.fail(f"`{shlex.join(argv)}`: {err.format_message()}")
        calls.append((path, ctx))
        config_file = ctx.params.get("cluster_config_file")
        if config_file:
            assert (ROOT / config_file).is_file(), f"`{shlex.join(argv)}`: no {config_file} in the repository"
        if path == ["exec"] and ctx.params["cmd"].startswith("ray "):
            queue.insert(0, shlex.split(ctx.params["cmd"]))
    return calls


def study_calls() -> list[tuple[str, list[str]]]:
    """Every `python studies/<name>.py ...` in the section (alone, or as the entrypoint of `ray job submit`)."""
    found = []
    for line in shell_lines(cluster_section()):
        words = shlex.split(line.replace("$(", " ").replace(")", " "))
        for i, word in enumerate(words[:-1]):
            if word in ("python", "python3") and re.fullmatch(r"studies/\w+\.py", words[i + 1]):
                found.append((words[i + 1], words[i + 2 :]))
    return found


def test_every_ray_command_and_option_in_the_guide_exists():
    calls = ray_calls()
    names = {" ".join(path) for path, _ in calls}
    assert {"up", "down", "job submit", "job logs", "get-head-ip", "dashboard"} <= names


def test_the_guide_lists_the_commands_in_order():
    order = [" ".join(path) for path, _ in ray_calls()]
    steps = ["get-auth-token", "up", "job submit", "job logs", "rsync-down", "down"]
    firsts = [order.index(step) for step in steps]
    assert firsts == sorted(firsts), f"expected {steps} in this order, got {order}"


def test_the_aws_steps_neither_wait_for_a_gpu_node_nor_copy_an_address_by_hand():
    """The cluster starts as its head alone and grows for the study, and MLflow answers on the head's loopback:
    no step polls `ray status` for GPUs or asks the user to paste an address."""
    aws = cluster_section().split("On your own machines", 1)[0]
    lines = shell_lines(aws)
    assert not [line for line in lines if "ray status" in line or "repeat until" in line]
    addresses = {m.group(0) for line in lines for m in re.finditer(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", line)}
    assert addresses <= {"127.0.0.1"}, f"addresses to fill in by hand: {addresses - {'127.0.0.1'}}"


def test_every_study_flag_in_the_guide_exists():
    calls = study_calls()
    assert calls, "the section should submit a study"
    for script, args in calls:
        assert (ROOT / script).is_file(), script
        # studies/<name>.py is a thin wrapper of the installed command fsl.commands.<name>, which owns the parser
        parser = importlib.import_module(f"fsl.commands.{Path(script).stem}").build_parser()
        for arg in args:
            if arg.startswith("--"):
                assert arg.split("=")[0] in parser._option_string_actions, f"{script} has no option {arg}"
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{script} rejects the guide's arguments {args}")


def test_the_guide_mlflow_command_exists():
    from mlflow.cli import cli

    calls = [call for line in shell_lines(cluster_section()) for call in invocations(line, "mlflow")]
    assert calls
    for argv in calls:
        path, command, args = resolve(cli, argv)
        try:
            command.make_context(" ".join(["mlflow", *path]), list(args))
        except click.ClickException as err:
            pytest.fail(f"`{shlex.join(argv)}`: {err.format_message()}")


def test_the_guide_fills_in_every_placeholder_of_cluster_yaml():
    """The template's placeholders (none once a user has filled them in) are all replaced by the guide's sed."""
    placeholders = {m.group(0) for text in strings(load("cluster.yaml")) for m in PLACEHOLDER.finditer(text)}
    replaced = set()
    for line in shell_lines(cluster_section()):
        if line.startswith("sed ") and "cluster.yaml" in line:
            replaced |= {m.group(1) for m in re.finditer(r"s/([^/]+)/", line)}
    assert replaced == {"YOUR-BUCKET", "ami-REPLACE-ME"}
    assert placeholders <= replaced, f"cluster.yaml has placeholders the guide leaves: {placeholders - replaced}"


def test_the_guide_example_study_fits_the_cluster_it_can_grow_to():
    """The cluster starts with no GPU worker and grows for the study's pending trials, so the AWS example's trial
    must fit one of cluster.yaml's node types (the check the study itself makes when it attaches); and it must
    log to the port MLflow listens on."""
    from fsl.distributed.cluster_shape import growth_ceiling, launcher_node_types, unsatisfiable

    config = load("cluster.yaml")
    submits = [ctx for path, ctx in ray_calls() if path == ["job", "submit"]]
    entry = list(submits[0].params["entrypoint"])  # the first one is the AWS example
    parser = importlib.import_module("fsl.commands.protonet_search").build_parser()
    args = parser.parse_args(entry[2:])
    assert args.storage.startswith("s3://"), "nodes share the study through S3"
    assert args.gpus_per_worker > 0, "the example runs on the GPU workers"
    worker = {"CPU": args.cpus_per_worker, "GPU": args.gpus_per_worker}
    types = launcher_node_types(config)
    assert unsatisfiable(worker, args.workers_per_trial, types) is None
    assert growth_ceiling(worker, args.workers_per_trial, types) >= 2, "the example has trials to run side by side"
    command, _ = mlflow_server(config)
    port = re.search(r"--port[=\s]+(\d+)", command).group(1)
    assert args.tracking_uri.endswith(f":{port}")
