"""Which searched parameters mattered: Optuna's fANOVA importance over a study rebuilt from its MLflow runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fsl.tracking.study_reader import StudyRuns

LOG_SPAN = 100.0  # values spanning two decades or more are read on a log scale


def infer_distribution(values: Sequence[Any], log: bool = False) -> Any:
    """An Optuna distribution for the values a parameter took: numbers -> Int/FloatDistribution over the observed
    range (log scale when `log`, or when the values span two decades or more); strings and bools ->
    CategoricalDistribution. None when the parameter did not vary."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distinct = list(dict.fromkeys(v for v in values if v is not None))
    if len(distinct) < 2:
        return None
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct)
    if not numeric:
        return CategoricalDistribution(tuple(sorted(distinct, key=str)))
    low, high = min(distinct), max(distinct)
    log = (log or (low > 0 and high / low >= LOG_SPAN)) and low > 0
    if all(isinstance(v, int) for v in distinct):
        return IntDistribution(int(low), int(high), log=log and low >= 1)
    return FloatDistribution(float(low), float(high), log=log)


@dataclass
class Importance:
    importances: dict[str, float]  # best first; empty when they could not be computed
    distributions: dict[str, Any]
    n_trials: int
    evaluator: str
    note: str = ""  # why nothing was computed, or what to keep in mind


def importance_params(runs: StudyRuns) -> list[str]:
    """The searched parameters (search space and grid, as the parent records them; else those named in the child
    runs), and an ablation's cell key, that exist as params."""
    names = list(runs.space) or list(runs.shown)
    key = cell_key(runs)
    if key is not None and key not in names:
        names.insert(0, key)
    return [n for n in names if f"params.{n}" in runs.trials]


def cell_key(runs: StudyRuns) -> str | None:
    """The parameter that defines an ablation's cells (tag fsl.cell): the first one named in the child runs that
    is the same within every cell and differs between cells."""
    trials = runs.trials
    if "tags.fsl.cell" not in trials or trials["tags.fsl.cell"].nunique() < 2:
        return None
    for name in runs.shown:
        values = trials[f"params.{name}"].astype(str)
        if values.groupby(trials["tags.fsl.cell"]).nunique().eq(1).all() and values.nunique() > 1:
            return name
    return None


def param_importances(
    trials: pd.DataFrame, names: Sequence[str], value_key: str, space: dict[str, str] | None = None, seed: int = 0
) -> Importance:
    """Optuna's fANOVA importance (seeded) over an in-memory study rebuilt from the scored trials."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    evaluator = f"fANOVA (optuna {optuna.__version__}, seed {seed})"
    space = space or {}
    scored = trials[np.isfinite(trials[value_key].astype(float))] if not trials.empty else trials
    if len(scored) < 2:
        return Importance(
            {}, {}, len(scored), evaluator, f"needs at least 2 scored trials; this study has {len(scored)}"
        )
    distributions = {}
    for name in names:
        column = f"params.{name}"
        values = scored[column].tolist() if column in scored else []
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            continue  # a parameter some trials lack (a study resumed with other code) cannot be compared
        distribution = infer_distribution(values, log=space.get(name, "").endswith("(log)"))
        if distribution is not None:
            distributions[name] = distribution
    if not distributions:
        return Importance({}, {}, len(scored), evaluator, "no searched parameter took more than one value")
    values = scored[value_key].astype(float)
    if values.nunique() < 2:
        return Importance({}, distributions, len(scored), evaluator, "every scored trial has the same score")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" on every report
    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={name: _optuna_value(row[f"params.{name}"]) for name in distributions},
                distributions=distributions,
                value=float(row[value_key]),
            )
            for _, row in scored.iterrows()
        ]
    )
    try:
        result = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    except (RuntimeError, ValueError) as err:
        return Importance({}, distributions, len(scored), evaluator, f"Optuna could not compute it ({err})")
    return Importance({k: float(v) for k, v in result.items()}, distributions, len(scored), evaluator)


def _optuna_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def describe_distribution(distribution: Any) -> str:
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return "categorical {" + ", ".join(map(str, distribution.choices)) + "}"
    kind = "int" if type(distribution).__name__.startswith("Int") else "float"
    return f"{kind} [{distribution.low:g}, {distribution.high:g}]" + (" log" if distribution.log else "")
