"""Bad input to the BYOL and Office-Home studies: a one-line error naming the file, flag or checkpoint, exit
status 2, before Ray starts."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch
import torchvision
from conftest import TINY_CLASSIFIER_PARAMS, tiny_output_argv

from fsl.commands.byol_search import main as byol_search
from fsl.commands.office_settings import main as office_settings


def _office_argv(office: Path, tmp: Path, *extra: str) -> list[str]:
    params = [item for p in TINY_CLASSIFIER_PARAMS for item in ("--param", p)]
    return [
        *("--data", str(office), "--image-size", "16", "--arch", "resnet18"),
        *params,
        *tiny_output_argv(tmp, "errors", "bad"),
        *extra,
    ]


def _one_error(capsys, pattern: str) -> None:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and re.search(pattern, err[0]), err[0]
    assert not ray.is_initialized()


@pytest.fixture
def office(tiny_office: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_office, tmp_path / "office"))


def test_missing_checkpoint(office: Path, tmp_path: Path, capsys):
    argv = _office_argv(office, tmp_path, "--settings", "C", "--ssl-checkpoint", str(tmp_path / "nope.pt"))
    assert office_settings(argv) == 2
    _one_error(capsys, r"--ssl-checkpoint .*nope\.pt: checkpoint file not found")


def test_checkpoint_of_another_architecture(office: Path, tmp_path: Path, capsys):
    checkpoint = tmp_path / "resnet50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), checkpoint)
    argv = _office_argv(office, tmp_path, "--settings", "B", "--supervised-checkpoint", str(checkpoint))
    assert office_settings(argv) == 2
    _one_error(
        capsys,
        r"--supervised-checkpoint .*resnet50\.pt: the weights do not fit a resnet18 backbone; the weights fit resnet50",
    )


def test_unknown_label_in_office_val(office: Path, tmp_path: Path, capsys):
    val = pd.read_csv(office / "val.csv", dtype=str)
    val.loc[2, "label"] = "teapot"
    val.to_csv(office / "val.csv", index=False)
    assert office_settings(_office_argv(office, tmp_path, "--settings", "A")) == 2
    _one_error(capsys, r"val\.csv: label 'teapot' is not a class of the training split")


def test_unknown_setting(office: Path, tmp_path: Path, capsys):
    assert office_settings(_office_argv(office, tmp_path, "--settings", "A,F")) == 2
    _one_error(capsys, r"--settings A,F: expected some of A, B, C, D, E")


def test_pretraining_needs_data_when_a_real_office_folder_is_given(office: Path, tmp_path: Path, capsys):
    assert office_settings(_office_argv(office, tmp_path, "--settings", "A,E")) == 2
    _one_error(capsys, r"--pretrain-data is needed to pre-train the backbones not given by --byol-checkpoint")


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        (["lr=-1"], r"--param lr=-1\.0: must be > 0"),
        (["augment_strength=3"], r"augment_strength=3\.0: must be in \[0, 2\]"),
        (["batch_size=1000"], r"batch_size=1000: larger than the 160 training images"),
        (["momentum_typo=1"], r"unknown parameter 'momentum_typo'"),
    ],
)
def test_bad_byol_params(tiny_hw4_master: Path, tmp_path: Path, capsys, params: list[str], pattern: str):
    argv = ["--data", str(tiny_hw4_master), "--image-size", "16", "--arch", "resnet18"]
    argv += [item for p in params for item in ("--param", p)] + tiny_output_argv(tmp_path, "errors", "bad")
    assert byol_search(argv) == 2
    _one_error(capsys, pattern)


def test_resume_finds_a_settings_study_that_stopped_during_pre_training(tmp_path: Path):
    from fsl.commands.office_settings import latest_settings_study

    assert latest_settings_study(str(tmp_path / "none")) is None
    (tmp_path / "office-a-pretraining" / "office-a-byol").mkdir(parents=True)
    (tmp_path / "unrelated").mkdir()
    assert latest_settings_study(str(tmp_path)) == "office-a"
