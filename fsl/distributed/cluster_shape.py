"""What a Ray cluster can grow to, and how many of a study's trials that fits.

A study attached to an autoscaling cluster must not size itself to the nodes that happen to be up when it starts:
the trials it leaves pending are the demand that makes Ray's autoscaler add nodes. What the cluster can grow to
comes from the autoscaler's node types, read from the cluster launcher's config on the head node,
``~/ray_bootstrap_config.yaml``, which `ray up` writes there and Ray's autoscaler runs from (Ray Tune checks the
same file to tell an autoscaling cluster), or from the file given by $FSL_AUTOSCALER_CONFIG: a driver that does
not run on the head, a cluster started by hand with ``ray start --autoscaling-config``, or one whose autoscaler
runs elsewhere (KubeRay: a file with the same ``available_node_types`` and ``max_workers`` as its worker groups).
Ray keeps its own record of the node groups in the GCS, but reads it only through private modules
(``ray._private.state``), which this project does not use: they change without notice between Ray releases.

The arithmetic is pure and works on plain dicts, so it is tested against hand-computed cases.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Bundle = Mapping[str, float]

LAUNCHER_CONFIG = "~/ray_bootstrap_config.yaml"
CONFIG_ENV = "FSL_AUTOSCALER_CONFIG"
UNBOUNDED = -1  # a node type without a maximum (Ray's ClusterConfig writes -1)


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_count: int  # nodes of this type the cluster may run at once (the head's type: 1); UNBOUNDED for no limit
    head: bool = False  # the head node's type: always there, not counted against the cluster's max_workers


@dataclass(frozen=True)
class ClusterShape:
    """The node types an autoscaler may launch, and where that was read."""

    node_types: tuple[NodeType, ...]
    source: str
    max_workers: int | None = None  # worker nodes at most over all types (the launcher's global max_workers)


def describe(bundle: Bundle) -> str:
    """{'CPU': 4.0, 'GPU': 1.0} -> 'CPU 4, GPU 1' (the way `ray status` names resources)."""
    return ", ".join(f"{name} {amount:g}" for name, amount in sorted(bundle.items()) if amount)


def fits(bundle: Bundle, node: Bundle) -> bool:
    return all(node.get(name, 0.0) + 1e-9 >= amount for name, amount in bundle.items() if amount > 0)


def slots(bundle: Bundle, node: Bundle) -> int:
    """How many bundles of this shape one node holds at once."""
    asked = {name: amount for name, amount in bundle.items() if amount > 0}
    if not asked:
        return 0
    return min(math.floor(node.get(name, 0.0) / amount + 1e-9) for name, amount in asked.items())


def largest(node_types: Sequence[NodeType], bundle: Bundle) -> NodeType:
    """The node type with the most of what the bundle asks for most scarcely (GPUs before CPUs)."""
    key = "GPU" if bundle.get("GPU") else "CPU"
    return max(node_types, key=lambda t: (t.resources.get(key, 0.0), t.resources.get("CPU", 0.0)))


def unsatisfiable(
    worker: Bundle, workers: int, node_types: Sequence[NodeType], max_workers: int | None = None
) -> str | None:
    """Why no cluster these node types can make would ever run one trial of `workers` bundles of `worker`
    (each bundle on one node; a trial's bundles may spread over nodes), or None when one could."""
    if not node_types:
        return None
    if not any(fits(worker, t.resources) for t in node_types):
        big = largest(node_types, worker)
        what = "a trial" if workers == 1 else "each of a trial's workers"
        return (
            f"{what} asks for {describe(worker)}, more than any node of the cluster has (its largest node type, "
            f"{big.name}, has {describe(big.resources)})"
        )
    room = total_slots(worker, node_types, max_workers)
    if room is not None and room < workers:
        limit = f"; at most {max_workers} worker nodes" if max_workers is not None else ""
        return (
            f"a trial asks for {workers} workers of {describe(worker)}; the cluster holds at most {room} at its "
            f"largest ({', '.join(f'{t.max_count} x {t.name}' for t in node_types if t.max_count)}{limit})"
        )
    return None


def total_slots(worker: Bundle, node_types: Sequence[NodeType], max_workers: int | None = None) -> int | None:
    """Worker bundles the whole cluster holds at its largest; None when it has no bound. With a cap on the
    number of worker nodes, the nodes holding the most bundles are counted first (the best mix the autoscaler
    could reach)."""
    total = 0
    per_node: list[int] = []  # one entry per worker node the cluster may run
    for node_type in node_types:
        fit = slots(worker, node_type.resources)
        if fit == 0:
            continue
        if node_type.head:
            total += fit * max(node_type.max_count, 1)
            continue
        if node_type.max_count == UNBOUNDED:
            if max_workers is None:
                return None
            per_node += [fit] * max_workers
        else:
            per_node += [fit] * node_type.max_count
    per_node.sort(reverse=True)
    return total + sum(per_node if max_workers is None else per_node[:max_workers])


def growth_ceiling(
    worker: Bundle, workers: int, node_types: Sequence[NodeType], max_workers: int | None = None
) -> int | None:
    """Trials at once on the cluster at its largest (at least 1); None when it has no upper bound."""
    room = total_slots(worker, node_types, max_workers)
    return None if room is None else max(1, room // workers)


def launcher_node_types(config: Mapping[str, Any]) -> tuple[NodeType, ...]:
    """Node types of a cluster launcher config (`available_node_types`): the head type counts once, a worker
    type up to its own max_workers (else the config's global one)."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    global_max = config.get("max_workers")
    shapes = []
    for name, spec in types.items():
        resources = {str(k): float(v) for k, v in (spec.get("resources") or {}).items()}
        if name == head:
            shapes.append(NodeType(str(name), resources, 1, head=True))
            continue
        own = spec.get("max_workers", global_max if global_max is not None else 0)
        shapes.append(NodeType(str(name), resources, int(min(own, global_max) if global_max is not None else own)))
    return tuple(shapes)


def _from_launcher_file() -> ClusterShape | None:
    import yaml

    path = Path(os.environ.get(CONFIG_ENV) or LAUNCHER_CONFIG).expanduser()
    if not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: not a readable autoscaler config ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not an autoscaler config (expected a mapping with available_node_types)")
    types = launcher_node_types(config)
    max_workers = config.get("max_workers")
    return ClusterShape(types, str(path), int(max_workers) if max_workers is not None else None) if types else None


def cluster_shape() -> ClusterShape | None:
    """The autoscaler's node types of the cluster Ray is attached to, or None when none are known (a cluster
    without an autoscaler, or one whose config this driver cannot see)."""
    return _from_launcher_file()
