"""--param parsing and the search space."""

import pytest

from fsl.study.space import Dimension, apply_params, default_space, parse_param
from fsl.train.config import ProtoNetConfig


def test_parse_fixed_values_ranges_and_choices():
    assert parse_param("lr=0.001") == ("lr", 0.001)
    assert parse_param("head_depth=2") == ("head_depth", 2)
    assert parse_param("learn_temperature=false") == ("learn_temperature", False)
    assert parse_param("distance=cosine") == ("distance", "cosine")
    assert parse_param("lr=1e-4..1e-2") == ("lr", Dimension("lr", "loguniform", 1e-4, 1e-2))
    assert parse_param("train_way=5..20") == ("train_way", Dimension("train_way", "int", 5, 20))
    assert parse_param("weight_decay=0..0.001")[1].kind == "uniform"
    assert parse_param("augment=none,flip") == ("augment", Dimension("augment", "choice", choices=("none", "flip")))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("depth=2", r"--param depth=2: unknown parameter 'depth'; known parameters: lr, augment"),
        ("epochs=3", r"unknown parameter 'epochs' \(use --epochs\)"),
        ("lr", r"--param lr: expected NAME=VALUE"),
        ("head_depth=two", r"--param head_depth=two: head_depth expects a int, got 'two'"),
        ("lr=1e-2..1e-4", r"--param lr=1e-2..1e-4: lr: empty range"),
        ("lr=0..1", r"log-uniform range needs low > 0"),
    ],
)
def test_parse_errors_name_the_flag(text, message):
    with pytest.raises(ValueError, match=message):
        parse_param(text)


def test_fixing_a_dimension_removes_it_from_the_space():
    base, space = apply_params(ProtoNetConfig(), default_space(), ["lr=0.002", "distance=euclidean"])
    assert base.lr == 0.002 and base.distance == "euclidean"
    assert set(space) == {"augment", "head_depth", "train_way"}


def test_narrowing_keeps_a_dimension_searched():
    base, space = apply_params(ProtoNetConfig(), default_space(), ["head_depth=1..2", "weight_decay=0.0001"])
    assert space["head_depth"] == Dimension("head_depth", "int", 1, 2)
    assert base.weight_decay == 0.0001


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("lr=-1", r"--param lr=-1.0: must be > 0"),
        ("augment=blur", r"unknown augmentation 'blur'"),
        ("distance=manhattan", r"distance='manhattan': must be one of"),
        ("distance=euclidean,manhattan", r"--param distance: distance='manhattan'"),
        ("head_depth=0..5", r"--param head_depth: head_depth=5: must be 0..3"),
    ],
)
def test_values_a_trial_could_receive_are_validated_up_front(param, message):
    with pytest.raises(ValueError, match=message):
        apply_params(ProtoNetConfig(), default_space(), [param])


def test_default_space_caps_train_way():
    assert default_space(12)["train_way"] == Dimension("train_way", "int", 5, 12)
    assert default_space()["train_way"].high == 30
    assert set(default_space()) == {"lr", "augment", "head_depth", "distance", "train_way"}
