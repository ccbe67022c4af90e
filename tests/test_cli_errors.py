"""Bad input stops the study script with a one-line error naming the file, row or flag, exit status 2,
before Ray starts."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
from conftest import tiny_study_argv

from studies.protonet_search import main

ROOT = Path(__file__).resolve().parent.parent


def _rewrite(path: Path, change) -> None:
    change(pd.read_csv(path, dtype=str)).to_csv(path, index=False)


def _first_filename(root: Path, split: str, row: int = 0) -> str:
    return pd.read_csv(root / f"{split}.csv")["filename"][row]


CASES = [
    ("missing data folder", lambda root: root.rename(root.with_name("gone")), [], r"hw4: data folder not found"),
    (
        "missing train.csv column",
        lambda root: _rewrite(root / "train.csv", lambda t: t.drop(columns=["label"])),
        [],
        r"train\.csv: missing column\(s\) label; expected id,filename,label",
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
    ("resume with nothing to resume", None, ["--resume", "--study-name", "nothing"], r"--resume: no study to resume"),
    ("no trials", None, ["--num-samples", "0"], r"--num-samples must be >= 1"),
]


@pytest.mark.parametrize(("damage", "args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_ray(tiny_hw4: Path, tmp_path: Path, capsys, damage, args, message):
    if damage:
        damage(tiny_hw4)
    argv = tiny_study_argv(tiny_hw4, tmp_path, "errors") + args
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    assert __import__("re").search(message, err[0]), err[0]
    assert not ray.is_initialized()


def test_existing_study_is_not_overwritten(tiny_hw4: Path, tmp_path: Path, capsys):
    (tmp_path / "results" / "mine").mkdir(parents=True)
    assert main(tiny_study_argv(tiny_hw4, tmp_path, "errors", "mine")) == 2
    assert "a study already exists at" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_unwritable_storage(tiny_hw4: Path, tmp_path: Path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert main([*tiny_study_argv(tiny_hw4, tmp_path, "errors"), "--storage", str(blocker / "results")]) == 2
    assert f"--storage {blocker / 'results'}: cannot write there" in capsys.readouterr().err


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
