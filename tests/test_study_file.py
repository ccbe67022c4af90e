"""study.yaml (fsl.study.study_file): a study's flags written once and read back by --config, flags beside it
winning; bad files get one line naming the file and the key."""

from pathlib import Path

import pytest

from fsl.commands.protonet_search import build_parser
from fsl.study.study_file import parse_study_args, saved_flags, study_file_text

COMMAND = "fsl-protonet-search"


def _write(tmp_path: Path, argv: list[str]) -> Path:
    args = parse_study_args(build_parser(), argv, COMMAND)
    path = tmp_path / "study.yaml"
    path.write_text(study_file_text(COMMAND, saved_flags(args), {"search_space": {"lr": "[0.0001, 0.03] (log)"}}))
    return path


def test_a_study_file_gives_back_the_flags_it_was_written_from(tmp_path: Path):
    argv = ["--data", str(tmp_path / "mini"), "--num-samples", "7", "--k-shot", "5", "--seed", "3"]
    argv += ["--param", "lr=0.001", "--param", "distance=cosine,euclidean", "--register-model", "m"]
    original = parse_study_args(build_parser(), argv, COMMAND)
    path = _write(tmp_path, argv)
    text = path.read_text()
    assert text.startswith(f"# Rerun this study: {COMMAND} --config study.yaml")
    assert "study-name" not in text and "resume" not in text  # a rerun is a new study
    again = parse_study_args(build_parser(), ["--config", str(path)], COMMAND)
    for key in ("data", "num_samples", "k_shot", "seed", "param", "register_model", "storage", "n_way", "epochs"):
        assert getattr(again, key) == getattr(original, key), key
    assert again.data == tmp_path / "mini"  # typed as the flag types it


def test_flags_beside_the_file_override_it_and_a_param_given_again_wins(tmp_path: Path):
    path = _write(tmp_path, ["--num-samples", "7", "--param", "lr=0.001"])
    args = parse_study_args(
        build_parser(), ["--config", str(path), "--num-samples", "3", "--param", "lr=0.01"], COMMAND
    )
    assert args.num_samples == 3
    assert args.param == ["lr=0.001", "lr=0.01"]  # applied in order: the command line's last
    from fsl.study.space import apply_params, default_space
    from fsl.train.config import ProtoNetConfig

    base, _ = apply_params(ProtoNetConfig(), default_space(), args.param)
    assert base.lr == 0.01


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flags:\n  num_sampels: 3\n", "unknown flag 'num_sampels' under 'flags'; expected one of: "),
        ("flagz:\n  seed: 3\n", "unknown key 'flagz'; expected command, flags, resolved"),
        ("command: fsl-byol-search\nflags: {}\n", "a study file of fsl-byol-search, not of fsl-protonet-search"),
        ("flags:\n  param: lr=0.001\n", "flags.param must be a list of strings, e.g. [lr=0.001]"),
        ("flags:\n  seed: [1, 2]\n", "flags.seed must be a single value, not list"),
        ("flags: [\n", "line 2 not valid YAML"),
        ("- 1\n", "expected a mapping with a 'flags' mapping"),
    ],
)
def test_a_bad_study_file_is_one_line_naming_the_file_and_key(tmp_path: Path, capsys, text: str, message: str):
    from fsl.commands.protonet_search import main

    path = tmp_path / "study.yaml"
    path.write_text(text)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: --config {path}") and message in err, err
    if "unknown flag" in message:
        assert "num-samples" in err and "param" in err  # the allowed ones are named


def test_a_missing_study_file_is_one_line(tmp_path: Path, capsys):
    from fsl.commands.protonet_search import main

    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --config {tmp_path / 'nope.yaml'}: file not found"
