"""What an autoscaling cluster can grow to (fsl.distributed.cluster_shape), checked by hand on the node types of
cluster.yaml and on small made-up ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fsl.distributed.cluster_shape import (
    CONFIG_ENV,
    UNBOUNDED,
    NodeType,
    cluster_shape,
    describe,
    growth_ceiling,
    launcher_node_types,
    slots,
    unsatisfiable,
)

ROOT = Path(__file__).resolve().parents[1]
HEAD = NodeType("head", {"CPU": 8.0}, 1, head=True)
GPU1 = NodeType("gpu-1x", {"CPU": 4.0, "GPU": 1.0}, 4)
GPU4 = NodeType("gpu-4x", {"CPU": 48.0, "GPU": 4.0}, 2)


def test_slots_are_limited_by_the_scarcest_resource():
    assert slots({"CPU": 1.0, "GPU": 0.25}, {"CPU": 4.0, "GPU": 1.0}) == 4
    assert slots({"CPU": 2.0, "GPU": 0.25}, {"CPU": 4.0, "GPU": 1.0}) == 2  # CPUs run out first
    assert slots({"CPU": 1.0, "GPU": 1.0}, {"CPU": 8.0}) == 0
    assert slots({"CPU": 0.1}, {"CPU": 1.0}) == 10  # no float rounding down to 9


def test_growth_ceiling_counts_every_node_type_at_its_maximum():
    # One GPU per trial: 4 x gpu-1x hold 4, 2 x gpu-4x hold 8; the head has no GPU.
    assert growth_ceiling({"CPU": 4.0, "GPU": 1.0}, 1, [HEAD, GPU1, GPU4]) == 12
    # Quarter GPUs with 1 CPU: a gpu-1x holds 4 (4 CPUs, 1 GPU), a gpu-4x 16 (its 4 GPUs); 4*4 + 2*16 = 48.
    assert growth_ceiling({"CPU": 1.0, "GPU": 0.25}, 1, [HEAD, GPU1, GPU4]) == 48
    # DDP, 4 workers of 1 GPU: 12 GPU slots in all make 3 trials.
    assert growth_ceiling({"CPU": 4.0, "GPU": 1.0}, 4, [HEAD, GPU1, GPU4]) == 3
    # CPU-only trials of 2 CPUs also use the head: 8/2 + 4*4/2 + 2*48/2 = 4 + 8 + 48.
    assert growth_ceiling({"CPU": 2.0}, 1, [HEAD, GPU1, GPU4]) == 60


def test_a_cap_on_worker_nodes_counts_the_nodes_that_hold_most_first():
    # 4 worker nodes at most: two gpu-4x (4 each) and two gpu-1x (1 each).
    assert growth_ceiling({"CPU": 4.0, "GPU": 1.0}, 1, [HEAD, GPU1, GPU4], max_workers=4) == 10
    # The head is not a worker node: CPU trials of 8 CPUs fit it and the two gpu-4x (6 each) within a cap of 2.
    assert growth_ceiling({"CPU": 8.0}, 1, [HEAD, GPU1, GPU4], max_workers=2) == 1 + 6 + 6


def test_a_node_type_without_a_maximum_has_no_ceiling():
    unbounded = NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, UNBOUNDED)
    assert growth_ceiling({"CPU": 1.0, "GPU": 1.0}, 1, [HEAD, unbounded]) is None
    assert growth_ceiling({"CPU": 1.0, "GPU": 1.0}, 1, [HEAD, unbounded], max_workers=3) == 3  # bound by the cap
    # ...unless it cannot hold the trial at all.
    assert growth_ceiling({"CPU": 1.0, "GPU": 1.0}, 1, [HEAD, GPU1, NodeType("cpu", {"CPU": 4.0}, UNBOUNDED)]) == 4


def test_a_request_no_node_type_holds_is_named_with_the_largest_node_type():
    reason = unsatisfiable({"CPU": 1.0, "GPU": 8.0}, 1, [HEAD, GPU1, GPU4])
    assert reason == (
        "a trial asks for CPU 1, GPU 8, more than any node of the cluster has (its largest node type, gpu-4x, "
        "has CPU 48, GPU 4)"
    )
    reason = unsatisfiable({"CPU": 64.0}, 2, [HEAD, GPU4])
    assert reason == (
        "each of a trial's workers asks for CPU 64, more than any node of the cluster has (its largest node type, "
        "gpu-4x, has CPU 48, GPU 4)"
    )


def test_a_ddp_trial_larger_than_the_whole_cluster_is_refused():
    # 8 workers of 4 GPUs: one per gpu-4x, of which there are at most 2.
    reason = unsatisfiable({"CPU": 4.0, "GPU": 4.0}, 8, [HEAD, GPU1, GPU4])
    assert reason == (
        "a trial asks for 8 workers of CPU 4, GPU 4; the cluster holds at most 2 at its largest "
        "(1 x head, 4 x gpu-1x, 2 x gpu-4x)"
    )
    # 8 workers of 1 GPU fit on two 4-GPU nodes (a trial's workers may spread over nodes).
    assert unsatisfiable({"CPU": 4.0, "GPU": 1.0}, 8, [HEAD, GPU1, GPU4]) is None


def test_describe_names_resources_as_ray_status_does():
    assert describe({"GPU": 0.25, "CPU": 1.0}) == "CPU 1, GPU 0.25"
    assert describe({"CPU": 2.0, "GPU": 0.0}) == "CPU 2"


def test_node_types_of_the_projects_cluster_yaml():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = {t.name: t for t in launcher_node_types(config)}
    assert types[config["head_node_type"]].max_count == 1
    assert "GPU" not in types[config["head_node_type"]].resources  # the head only drives the study
    for name, spec in config["available_node_types"].items():
        if name != config["head_node_type"]:
            assert spec.get("min_workers", 0) == 0, f"{name}: GPU workers start from zero"
            assert types[name].max_count == min(spec["max_workers"], config["max_workers"])
            assert types[name].resources == {k: float(v) for k, v in spec["resources"].items()}


def test_the_guide_example_on_cluster_yaml_keeps_four_trials_going():
    """4 workers of 1 GPU on cluster.yaml: at most 4 worker nodes, whose best mix (one gpu-8x, two gpu-4x, one
    gpu-1x) has 17 GPUs, which hold 4 such trials. The cluster guide (docs/cluster.md) says so."""
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = launcher_node_types(config)
    assert growth_ceiling({"CPU": 1.0, "GPU": 1.0}, 4, types, config["max_workers"]) == 4
    assert "keeps 4 trials going at once" in (ROOT / "docs" / "cluster.md").read_text()


def test_the_global_max_workers_caps_each_worker_type():
    config = {
        "max_workers": 2,
        "head_node_type": "h",
        "available_node_types": {
            "h": {"resources": {"CPU": 1}},
            "gpu": {"resources": {"CPU": 1, "GPU": 1}, "max_workers": 5},
            "small": {"resources": {"CPU": 1}},  # no max_workers of its own: the global one
        },
    }
    assert launcher_node_types(config) == (
        NodeType("h", {"CPU": 1.0}, 1, head=True),
        NodeType("gpu", {"CPU": 1.0, "GPU": 1.0}, 2),
        NodeType("small", {"CPU": 1.0}, 2),
    )


def test_the_launcher_config_is_read_from_the_file_named_by_the_environment(tmp_path: Path, monkeypatch):
    config = tmp_path / "autoscaler.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "max_workers": 3,
                "head_node_type": "head",
                "available_node_types": {
                    "head": {"resources": {"CPU": 1}, "max_workers": 0},
                    "gpu-node": {"resources": {"CPU": 1, "GPU": 1}, "min_workers": 0, "max_workers": 2},
                },
            }
        )
    )
    monkeypatch.setenv(CONFIG_ENV, str(config))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/ray_bootstrap_config.yaml of this machine's user
    shape = cluster_shape()
    assert shape is not None and shape.source == str(config) and shape.max_workers == 3
    assert sorted(shape.node_types, key=lambda t: t.name) == [
        NodeType("gpu-node", {"CPU": 1.0, "GPU": 1.0}, 2),
        NodeType("head", {"CPU": 1.0}, 1, head=True),
    ]

    config.write_text("available_node_types: [\n")
    with pytest.raises(ValueError, match=r"autoscaler\.yaml: not a readable autoscaler config"):
        cluster_shape()
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "absent.yaml"))
    assert cluster_shape() is None


def test_what_fits_now_is_counted_per_node_not_on_the_cluster_s_sum():
    from fsl.distributed.train_trial import TrialResources
    from fsl.study.capacity import fitting_now

    two_one_gpu_nodes = [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert fitting_now(TrialResources(1, 1.0, 2.0), two_one_gpu_nodes) == 0  # 2 GPUs in all, but on no one node
    assert fitting_now(TrialResources(1, 1.0, 1.0), two_one_gpu_nodes) == 2
    assert fitting_now(TrialResources(2, 1.0, 1.0), two_one_gpu_nodes) == 0  # no CPU left for the DDP driver
    # DDP: 2 workers of 1 CPU and the driver's 0.01 CPU; 4 CPUs hold one such trial, 4.02 would hold two.
    assert fitting_now(TrialResources(2, 1.0), [{"CPU": 4.0}]) == 1
    assert fitting_now(TrialResources(2, 1.0), [{"CPU": 3.0}, {"CPU": 1.02}]) == 2
