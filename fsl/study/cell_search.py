"""A Tune searcher for tables of configurations ("cells"): one seeded Optuna TPE study per cell, the same
number of trials for every cell, handed out in turn so that all cells progress together.

Tune's grid search cannot be combined with OptunaSearch, and one Optuna study over cells and
hyperparameters together would give the promising cells more trials; an ablation needs the same budget
everywhere. Each cell's first trial is the known-good recipe when it lies in the space.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import optuna
from ray.tune.search import Searcher

from fsl.study.space import Dimension


class CellSearch(Searcher):
    def __init__(
        self,
        cell_key: str,
        cell_values: tuple[Any, ...],
        space: dict[str, Dimension],
        per_cell: int,
        metric: str,
        seed: int,
        initial_point: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(metric=metric, mode="max")
        self.cell_key = cell_key
        self.cell_values = tuple(cell_values)
        self.per_cell = per_cell
        self.distributions = {name: dim.to_optuna() for name, dim in space.items()}
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # Tune's progress lines already say what runs
        self.studies = []
        for index in range(len(self.cell_values)):
            sampler = optuna.samplers.TPESampler(
                seed=seed + index, n_startup_trials=max(3, min(10, per_cell // 3)), multivariate=True
            )
            study = optuna.create_study(direction="maximize", sampler=sampler)
            if initial_point and self.distributions:
                study.enqueue_trial(initial_point)
            self.studies.append(study)
        self.handed_out = [0] * len(self.cell_values)
        self.live: dict[str, tuple[int, int]] = {}  # Tune trial id -> (cell index, Optuna trial number)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        open_cells = [i for i, n in enumerate(self.handed_out) if n < self.per_cell]
        if not open_cells:
            return Searcher.FINISHED
        cell = min(open_cells, key=lambda i: self.handed_out[i])
        self.handed_out[cell] += 1
        config = {self.cell_key: self.cell_values[cell]}
        if self.distributions:
            trial = self.studies[cell].ask(self.distributions)
            self.live[trial_id] = (cell, trial.number)
            config.update(trial.params)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        cell, number = self.live.pop(trial_id)
        # A trial's best epoch is what the ablation keeps (no early stopping: every trial runs to the end).
        value = None if result is None else result.get(f"best_{self.metric}", result.get(self.metric))
        if error or value is None or not math.isfinite(value):
            self.studies[cell].tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            self.studies[cell].tell(number, float(value))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))
