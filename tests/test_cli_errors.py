"""Bad input stops the study script with a one-line error naming the file, row or flag, exit status 2,
before Ray starts."""

import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from conftest import own_stderr, tiny_study_argv
from PIL import Image

from fsl.commands.protonet_search import main

ROOT = Path(__file__).resolve().parent.parent


def _rewrite(path: Path, change) -> None:
    change(pd.read_csv(path, dtype=str)).to_csv(path, index=False)


def _first_filename(root: Path, split: str, row: int = 0) -> str:
    return pd.read_csv(root / f"{split}.csv")["filename"][row]


def _truncate(path: Path) -> None:
    """Keep the first half of a real image file, as an interrupted copy or download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_jpeg(root: Path) -> None:
    """Row 6 of train.csv becomes a real 84 px JPEG, cut in half."""
    name = _first_filename(root, "train", 4)
    noise = np.random.default_rng(0).integers(0, 256, (84, 84, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "train" / name, format="JPEG", quality=90)
    _truncate(root / "train" / name)


def _shrink_a_val_class(root: Path) -> None:
    """Keep 3 of the 20 images of val.csv's first label (and drop the fixed episodes that used the others)."""
    table = pd.read_csv(root / "val.csv", dtype=str)
    short = table["label"][0]
    keep = (table["label"] != short) | (table.groupby("label").cumcount() < 3)
    table[keep].to_csv(root / "val.csv", index=False)


def _free_port() -> int:
    """A local TCP port nothing listens on (bound and released by the OS)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _blocked_storage(root: Path) -> list[str]:
    blocker = root.parent / "a-file"
    blocker.write_text("a file, not a folder")
    return ["--storage", str(blocker / "results")]


def _one_error(capsys, pattern: str) -> str:
    """stderr is exactly one line, `error: ...`, matching pattern; Ray was never started."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    assert re.search(pattern, err[0]), err[0]
    assert not ray.is_initialized()
    return err[0]


# (name, damage to the data copy, extra flags or a function of the data folder giving them, expected message)
CASES = [
    ("missing data folder", lambda root: root.rename(root.with_name("gone")), [], r"hw4: data folder not found"),
    (
        "val.csv missing",
        lambda root: (root / "val.csv").unlink(),
        [],
        r"hw4/val\.csv: split file not found \(expected columns id,filename,label\)$",
    ),
    (
        "train.csv missing",
        lambda root: (root / "train.csv").unlink(),
        [],
        r"hw4: expected the HW4 layout \(train\.csv, val\.csv, train/, val/\) or an ImageFolder tree",
    ),
    (
        "missing train.csv column",
        lambda root: _rewrite(root / "train.csv", lambda t: t.drop(columns=["label"])),
        [],
        r"train\.csv: missing column\(s\) label; expected id,filename,label",
    ),
    (
        "renamed val.csv column",
        lambda root: _rewrite(root / "val.csv", lambda t: t.rename(columns={"filename": "file"})),
        [],
        r"val\.csv: missing column\(s\) filename; expected id,filename,label, found id,file,label$",
    ),
    (
        "duplicate id",
        lambda root: _rewrite(root / "val.csv", lambda t: t.assign(id=t["id"].where(t.index != 10, t["id"][9]))),
        [],
        r"val\.csv: row 12: duplicate id '9'$",
    ),
    (
        "empty split",
        lambda root: _rewrite(root / "val.csv", lambda t: t.iloc[:0]),
        [],
        r"val\.csv: the split is empty \(no rows after the header\)$",
    ),
    (
        "missing image file",
        lambda root: (root / "val" / _first_filename(root, "val", 3)).unlink(),
        [],
        r"val\.csv: row 5: image file .* not found",
    ),
    (
        "unreadable image",
        lambda root: (root / "train" / _first_filename(root, "train", 2)).write_bytes(b"garbage"),
        [],
        r"train\.csv: row 4: image .* cannot be read",
    ),
    (
        "truncated PNG",
        lambda root: _truncate(root / "val" / _first_filename(root, "val", 7)),
        [],
        r"val\.csv: row 9: image .*\.png cannot be read \(image file is truncated",
    ),
    (
        "truncated JPEG",
        _truncated_jpeg,
        [],
        r"train\.csv: row 6: image .* cannot be read \(image file is truncated",
    ),
    (
        "N-way larger than the classes",
        None,
        ["--n-way", "6"],
        r"val\.csv: 6-way episodes need 6 classes, the split has 5",
    ),
    (
        "K+Q larger than a class",
        None,
        ["--k-shot", "10", "--n-query", "15"],
        r"class '.*' has 20 images, fewer than k_shot \+ n_query = 10 \+ 15",
    ),
    (
        "val class with fewer than K+Q images",
        _shrink_a_val_class,
        [],
        r"val\.csv: class '[^']+' has 3 images, fewer than k_shot \+ n_query = 1 \+ 5$",
    ),
    (
        "train_way larger than the train classes",
        None,
        ["--param", "train_way=9"],
        r"train_way=9: .*9-way episodes need 9 classes, the split has 8",
    ),
    ("unknown augmentation", None, ["--param", "augment=blur"], r"unknown augmentation 'blur'"),
    ("unknown distance", None, ["--param", "distance=manhattan"], r"distance='manhattan': must be one of"),
    ("unknown --param dimension", None, ["--param", "depth=2"], r"--param depth=2: unknown parameter 'depth'"),
    ("--param of the wrong type", None, ["--param", "head_depth=two"], r"head_depth expects a int, got 'two'"),
    ("--param out of range", None, ["--param", "lr=-1"], r"--param lr=-1.0: must be > 0"),
    ("file tracking store", None, ["--tracking-uri", "./mlruns"], r"--tracking-uri='./mlruns': expected a URI"),
    (
        "tracking server not answering",
        None,
        ["--tracking-uri", "http://127.0.0.1:9"],
        r"--tracking-uri http://127\.0\.0\.1:9: no MLflow server answers \(Connection refused\)",
    ),
    (
        "fractional GPUs with DDP",
        None,
        ["--workers-per-trial", "2", "--gpus-per-worker", "0.5"],
        r"--gpus-per-worker 0.5 with --workers-per-trial 2: DDP workers need whole GPUs",
    ),
    (
        "val_testcase id not in val.csv",
        lambda root: _rewrite(root / "val_testcase.csv", lambda t: t.assign(query3="12345")),
        [],
        r"val_testcase\.csv: row 2, column 'query3': id '12345' is not in the split",
    ),
    (
        "ground truth with other episodes",
        lambda root: _rewrite(root / "val_testcase_gt.csv", lambda t: t.iloc[1:]),
        [],
        r"val_testcase_gt\.csv: episodes do not match the test-case file",
    ),
    (
        "ground truth with another number of queries",
        lambda root: _rewrite(root / "val_testcase_gt.csv", lambda t: t.drop(columns=["query24"])),
        [],
        r"val_testcase_gt\.csv: 24 query columns, the test-case file has 25$",
    ),
    (
        "--address where nothing answers",
        None,
        lambda root: ["--address", f"127.0.0.1:{_free_port()}"],
        r"--address 127\.0\.0\.1:\d+: no Ray cluster answers at \S+:\d+ \(Connection refused within 10 s\)",
    ),
    (
        "--address that is not an address",
        None,
        ["--address", "cluster-head"],
        r"--address cluster-head: expected HOST:PORT, the head node's address \(e\.g\. 10\.0\.0\.5:6379\)$",
    ),
    ("unwritable storage", None, _blocked_storage, r"--storage .*a-file/results: cannot write there \("),
    ("resume with nothing to resume", None, ["--resume", "--study-name", "nothing"], r"--resume: no study to resume"),
    ("no trials", None, ["--num-samples", "0"], r"--num-samples must be >= 1"),
]


@pytest.mark.parametrize(("damage", "args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_ray(tiny_hw4: Path, tmp_path: Path, capsys, damage, args, message):
    if damage:
        damage(tiny_hw4)
    argv = tiny_study_argv(tiny_hw4, tmp_path, "errors") + (args(tiny_hw4) if callable(args) else args)
    assert main(argv) == 2
    assert not ray.is_initialized()  # it stopped before starting Ray (or attaching to a cluster)
    _one_error(capsys, message)


def test_existing_study_is_not_overwritten(tiny_hw4: Path, tmp_path: Path, capsys):
    (tmp_path / "results" / "mine").mkdir(parents=True)
    assert main(tiny_study_argv(tiny_hw4, tmp_path, "errors", "mine")) == 2
    _one_error(capsys, r"--study-name mine: a study already exists at .*results/mine; add --resume")


def test_images_of_other_modes_and_sizes_are_converted_not_rejected(tiny_hw4: Path, tmp_path: Path):
    """Grayscale, RGBA, palette and larger or non-square images pass the whole pre-Ray planning (reading,
    decoding, the episode checks and the untrained baseline) as RGB at --image-size."""
    from fsl.study.protonet_study import plan_study
    from fsl.study.runner import StudyOptions
    from fsl.train.config import ProtoNetConfig

    names = pd.read_csv(tiny_hw4 / "val.csv")["filename"]
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    replaced = {
        0: (Image.new("L", (16, 16), 77), (77, 77, 77)),
        1: (Image.new("RGBA", (16, 16), (250, 20, 10, 90)), (250, 20, 10)),
        2: (palette, (10, 200, 30)),
        3: (Image.new("RGB", (120, 45), (5, 6, 240)), (5, 6, 240)),
        4: (Image.new("LA", (30, 30), (140, 255)), (140, 140, 140)),
    }
    for row, (image, _) in replaced.items():
        image.save(tiny_hw4 / "val" / names[row], format="PNG")
    options = StudyOptions("modes", str(tmp_path / "results"), f"sqlite:///{tmp_path}/mlflow.db")
    base = ProtoNetConfig(n_way=5, k_shot=1, n_query=5, eval_episodes=30, image_size=16)
    plan = plan_study(tiny_hw4, base, [], options)
    images = plan.shared["val"].images
    assert images.shape == (100, 16, 16, 3) and images.dtype == np.uint8
    for row, (_, rgb) in replaced.items():
        assert (images[row] == np.array(rgb, dtype=np.uint8)).all(), (row, images[row, 0, 0])
    assert plan.baseline is not None and 0 < plan.baseline[0] <= 1
    assert not ray.is_initialized()


def test_gpus_on_a_cluster_without_gpus_fails_before_any_trial(tiny_hw4: Path, tmp_path: Path, capsys):
    """The GPU check needs the cluster's resources, so Ray is started (here a real local Ray with no GPUs,
    whatever the machine has): the study stops with one line and exit status 2 before any trial is launched,
    instead of trials pending for ever."""
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=100 * 1024**2)
    try:
        from fsl.study.runner import check_ray_address

        check_ray_address(ray.get_runtime_context().gcs_address)  # a live cluster passes the --address check
        capsys.readouterr()
        code = main([*tiny_study_argv(tiny_hw4, tmp_path, "errors", "gpu"), "--gpus-per-worker", "1"])
        err = own_stderr(capsys.readouterr().err).strip().splitlines()  # without what this Ray's raylet forwards
    finally:
        ray.shutdown()
    assert code == 2
    assert err == [
        "error: --gpus-per-worker 1: the Ray cluster has no GPUs (its resources: 2 CPUs, 0 GPUs); "
        "use --gpus-per-worker 0 or attach to a cluster with GPUs"
    ]
    assert not (tmp_path / "results" / "gpu").exists()  # Tune never created the study, let alone a trial


def _protonet_state(**config_changes) -> dict:
    from fsl.train.config import ProtoNetConfig
    from fsl.train.protonet_method import build_model

    return build_model(ProtoNetConfig(image_size=16, **config_changes)).state_dict()


def _resnet18_state() -> dict:
    from fsl.models.resnet import build_backbone

    return build_backbone("resnet18").state_dict()


PREDICT_CHECKPOINTS = [
    (
        "BYOL backbone",
        lambda: {"format": "fsl.backbone/1", "config": {"arch": "resnet18"}, "model": _resnet18_state()},
        r"not a ProtoNet best_model\.pt written by this project$",
    ),
    (
        "classifier",
        lambda: {"format": "fsl.classifier/1", "config": {"arch": "resnet18"}, "model": _resnet18_state()},
        r"not a ProtoNet best_model\.pt written by this project$",
    ),
    ("plain ResNet state dict", _resnet18_state, r"not a ProtoNet best_model\.pt written by this project$"),
    (
        "ProtoNet weights of another shape",
        lambda: {
            "format": "fsl.protonet/1",
            "config": {"image_size": 16, "head_depth": 1, "head_width": 32},
            "model": _protonet_state(head_depth=2, head_width=64),
        },
        r"weights do not fit the architecture in its config \(Error\(s\) in loading state_dict for ProtoNet",
    ),
]


@pytest.mark.parametrize(
    ("saved", "message"), [c[1:] for c in PREDICT_CHECKPOINTS], ids=[c[0] for c in PREDICT_CHECKPOINTS]
)
def test_predict_refuses_a_checkpoint_of_another_architecture(tiny_hw4: Path, tmp_path: Path, capsys, saved, message):
    from fsl.commands.protonet_predict import main as predict

    checkpoint = tmp_path / "other.pt"
    torch.save(saved(), checkpoint)
    code = predict(["--checkpoint", str(checkpoint), "--data", str(tiny_hw4), "--out", str(tmp_path / "pred.csv")])
    assert code == 2
    _one_error(capsys, re.escape(f"error: {checkpoint}: ") + message)
    assert not (tmp_path / "pred.csv").exists()


def test_the_real_command_exits_2_with_one_line(tmp_path: Path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "protonet_search.py"), "--data", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {tmp_path / 'nowhere'}: data folder not found"
    assert "Ray" not in run.stdout


def test_help_documents_every_flag():
    run = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "protonet_search.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0
    for flag in (
        "--data",
        "--num-samples",
        "--epochs",
        "--episodes-per-epoch",
        "--eval-episodes",
        "--image-size",
        "--n-way",
        "--k-shot",
        "--n-query",
        "--param",
        "--workers-per-trial",
        "--gpus-per-worker",
        "--max-concurrent",
        "--address",
        "--storage",
        "--tracking-uri",
        "--experiment",
        "--study-name",
        "--resume",
        "--seed",
    ):
        assert flag in run.stdout


def _console_scripts() -> dict[str, str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_study_is_an_installed_command_and_a_checkout_script():
    """Each module under fsl/commands is a console entry point (pip install -e . puts it on PATH) and a thin
    studies/<module>.py; each entry names a real main()."""
    import importlib

    scripts = _console_scripts()
    modules = {target.split(":")[0].rsplit(".", 1)[1] for target in scripts.values()}
    commands = {p.stem for p in (ROOT / "fsl" / "commands").glob("[a-z]*.py")}
    assert modules == commands
    assert {p.stem for p in (ROOT / "studies").glob("[a-z]*.py")} == commands
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_the_installed_command_runs_where_the_package_is_installed(tmp_path: Path):
    """fsl-protonet-search, run from a folder outside the checkout, is the same study command."""
    command = Path(sys.executable).parent / "fsl-protonet-search"
    if not command.is_file():
        pytest.skip(f"{command} is not installed (pip install -e . installs it)")
    run = subprocess.run(
        [str(command), "--data", str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {tmp_path / 'nowhere'}: data folder not found"
    help_text = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120).stdout
    assert help_text.startswith("usage: fsl-protonet-search ")


def test_mlflow_experiment_name_is_honoured_and_a_flag_overrides_it(monkeypatch):
    from fsl.commands.protonet_search import build_parser

    assert build_parser().parse_args([]).experiment == "protonet"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "my-lab")
    assert build_parser().parse_args([]).experiment == "my-lab"
    assert build_parser().parse_args(["--experiment", "other"]).experiment == "other"
    args = build_parser().parse_args(["--ui-port", "5077", "-v"])
    assert (args.ui_port, args.verbose) == (5077, True)
