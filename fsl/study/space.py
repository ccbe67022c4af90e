"""Search spaces of the studies, and `--param` overrides that fix or narrow their dimensions.

Dimensions are plain data here; `to_tune()` turns them into Ray Tune domains, which OptunaSearch converts
to Optuna distributions. `--param NAME=VALUE` fixes a dimension (or sets any other config field);
`NAME=LOW..HIGH` narrows a numeric range; `NAME=A,B,C` searches a list of choices.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fsl.train.config import ProtoNetConfig, TrainConfig
from fsl.train.dimension import Dimension
from fsl.train.registry import method_named

C = TypeVar("C", bound=TrainConfig)


def default_space(max_train_way: int = 30) -> dict[str, Dimension]:
    """lr, augment, head_depth, distance, train_way: the ProtoNet study's default search dimensions."""
    return method_named("protonet").search_space(max_train_way)


def byol_space() -> dict[str, Dimension]:
    """lr, augment_strength, head_depth, tau, batch_size: the BYOL study's default search dimensions."""
    return method_named("byol").search_space(0)


def parse_scalar(kind: str, name: str, text: str, flag: str) -> Any:
    text = text.strip()
    try:
        if kind == "float":
            return float(text)
        if kind == "int":
            return int(text)
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
    except ValueError:
        raise ValueError(f"{flag}: {name} expects a {kind}, got {text!r}") from None
    return text


def parse_param(text: str, config: type[TrainConfig] = ProtoNetConfig) -> tuple[str, Any]:
    """'lr=0.001' -> ('lr', 0.001); 'lr=1e-4..1e-2' and 'distance=euclidean,cosine' -> ('lr', Dimension)."""
    flag = f"--param {text}"
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not value.strip():
        raise ValueError(f"{flag}: expected NAME=VALUE, NAME=LOW..HIGH or NAME=A,B,...")
    types = config.field_types()
    if name not in types or name in config.RUN_SHAPE:
        known = ", ".join(n for n in types if n not in config.RUN_SHAPE)
        hint = f" (use --{name.replace('_', '-')})" if name in config.RUN_SHAPE else ""
        raise ValueError(f"{flag}: unknown parameter {name!r}{hint}; known parameters: {known}")
    kind = types[name]
    if ".." in value and kind in ("float", "int"):
        low_text, _, high_text = value.partition("..")
        low, high = parse_scalar(kind, name, low_text, flag), parse_scalar(kind, name, high_text, flag)
        dim_kind = "int" if kind == "int" else ("loguniform" if name == "lr" else "uniform")
        try:
            return name, Dimension(name, dim_kind, low, high)
        except ValueError as err:
            raise ValueError(f"{flag}: {err}") from None
    if "," in value:
        choices = tuple(dict.fromkeys(parse_scalar(kind, name, part, flag) for part in value.split(",")))
        return name, Dimension(name, "choice", choices=choices)
    return name, parse_scalar(kind, name, value, flag)


def apply_params(base: C, space: dict[str, Dimension], params: list[str]) -> tuple[C, dict[str, Dimension]]:
    """Apply --param overrides: a fixed value leaves the space and goes into the base config.

    Every value a trial could receive is validated here, before anything starts.
    """
    space = dict(space)
    fixed: dict[str, Any] = {}
    for text in params:
        name, value = parse_param(text, type(base))
        if isinstance(value, Dimension):
            space[name] = value
            fixed.pop(name, None)
        else:
            fixed[name] = value
            space.pop(name, None)
    try:
        base = base.replace(**fixed)
    except ValueError as err:
        raise ValueError(f"--param {err}") from None
    for dim in space.values():
        for value in dim.values_to_check():
            try:
                base.replace(**{dim.name: value})
            except ValueError as err:
                raise ValueError(f"--param {dim.name}: {err}") from None
    return base, space
