"""One searched parameter of a method, as plain data: a method declares its default search space with these
(fsl.train.method), the study layer narrows them with --param and hands them to Ray Tune and Optuna."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: a log-uniform or uniform float range, an integer range, or choices."""

    name: str
    kind: str  # "loguniform" | "uniform" | "int" | "choice"
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "choice":
            if not self.choices:
                raise ValueError(f"{self.name}: empty list of choices")
        elif self.low is None or self.high is None or not self.low <= self.high:
            raise ValueError(f"{self.name}: empty range {self.low}..{self.high}")
        elif self.kind == "loguniform" and self.low <= 0:
            raise ValueError(f"{self.name}: a log-uniform range needs low > 0, got {self.low}")

    def values_to_check(self) -> list[Any]:
        """Values that must be valid for the whole dimension to be (the ends of a range, every choice)."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return self.low <= value <= self.high  # type: ignore[operator]

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "int":
            return tune.randint(int(self.low), int(self.high) + 1)  # randint's upper end is exclusive
        return tune.choice(list(self.choices))

    def to_optuna(self) -> Any:
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def describe(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        scale = " (log)" if self.kind == "loguniform" else ""
        return f"[{self.low:g}, {self.high:g}]{scale}"
