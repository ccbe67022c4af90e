"""The typed, validated configuration of one ProtoNet training run (one trial of a study)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fsl.data.augment import parse_policy
from fsl.models.distances import DISTANCES

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("step", "cosine", "none")


@dataclass(frozen=True)
class ProtoNetConfig:
    """Hyperparameters and episode shapes. Every field is a possible study parameter."""

    # The study's default search dimensions.
    lr: float = 1e-3
    augment: str = "none"
    head_depth: int = 0
    distance: str = "euclidean"
    train_way: int = 20
    # Fixed unless set with --param.
    head_width: int = 256
    temperature: float = 10.0
    learn_temperature: bool = True
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"
    lr_step_epochs: int = 0  # StepLR period; 0 = half the epochs
    lr_gamma: float = 0.5
    # The run's shape.
    epochs: int = 10
    episodes_per_epoch: int = 100
    n_way: int = 5  # evaluation way (training uses train_way)
    k_shot: int = 1
    n_query: int = 15
    eval_episodes: int = 600
    image_size: int = 84
    seed: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = {"float": (int, float), "int": (int,), "str": (str,), "bool": (bool,)}[str(field.type)]
            if isinstance(value, bool) and field.type != "bool" or not isinstance(value, expected):
                raise ValueError(f"{field.name}: expected a {field.type}, got {value!r}")
        checks = [
            ("lr", self.lr > 0, "must be > 0"),
            ("head_depth", 0 <= self.head_depth <= 3, "must be 0..3"),
            ("distance", self.distance in DISTANCES, f"must be one of {', '.join(DISTANCES)}"),
            ("train_way", self.train_way >= 2, "must be >= 2"),
            ("head_width", self.head_width >= 1, "must be >= 1"),
            ("temperature", self.temperature > 0, "must be > 0"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}"),
            ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}"),
            ("lr_step_epochs", self.lr_step_epochs >= 0, "must be >= 0"),
            ("lr_gamma", 0 < self.lr_gamma <= 1, "must be in (0, 1]"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("episodes_per_epoch", self.episodes_per_epoch >= 1, "must be >= 1"),
            ("n_way", self.n_way >= 2, "must be >= 2"),
            ("k_shot", self.k_shot >= 1, "must be >= 1"),
            ("n_query", self.n_query >= 1, "must be >= 1"),
            ("eval_episodes", self.eval_episodes >= 1, "must be >= 1"),
            ("image_size", self.image_size >= 16, "must be >= 16 (Conv4 pools four times)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: {rule}")
        parse_policy(self.augment)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ProtoNetConfig:
        """Build from a flat dict (a Tune trial's config); keys that are not fields are ignored."""
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in types:
                continue
            if hasattr(value, "item") and not isinstance(value, str | bool):
                value = value.item()  # numpy scalars from a search space
            if types[key] == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ProtoNetConfig:
        return dataclasses.replace(self, **changes)

    @property
    def step_epochs(self) -> int:
        return self.lr_step_epochs or max(1, self.epochs // 2)
