"""A compact progress log for the terminal: one line per trial start, epoch and end."""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from fsl.tracking.summary import error_line
from fsl.train.registry import progress_keys
from fsl.train.run_state import DIVERGED

# The training numbers the registered methods report, shown in this order.
LOSSES = progress_keys()


class ProgressPrinter(Callback):
    def __init__(self, searched: list[str], epochs: int, num_samples: int, metric: str = "val_acc") -> None:
        self.searched = searched
        self.epochs = epochs
        self.num_samples = num_samples
        self.metric = metric
        self._started = time.monotonic()
        self._finished = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._started = time.monotonic()  # a resumed study counts its own time

    def _say(self, trial: Any, text: str) -> None:
        elapsed = time.monotonic() - self._started
        print(f"[{elapsed:6.0f}s] trial {trial.trial_id}: {text}", flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = " ".join(
            f"{n}={trial.config[n]:.2e}" if isinstance(trial.config.get(n), float) else f"{n}={trial.config.get(n)}"
            for n in self.searched
        )
        self._say(trial, f"started ({params or 'fixed configuration'})")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if DIVERGED in result:
            self._say(trial, f"{result[DIVERGED]}; the trial fails (a retry would diverge again)")
            return
        m, nan = self.metric, float("nan")
        losses = "  ".join(f"{key} {result[key]:.3f}" for key in LOSSES if key in result)
        self._say(
            trial,
            f"epoch {result.get('epoch')}/{self.epochs}  {losses}  "
            f"{m} {result.get(m, nan):.4f} ± {result.get(f'{m}_ci95', nan):.4f}  "
            f"(best {result.get(f'best_{m}', nan):.4f})",
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished += 1
        epochs = (trial.last_result or {}).get("epoch", 0)
        how = "finished" if epochs >= self.epochs else f"stopped early by ASHA after {epochs} epochs"
        self._say(trial, f"{how} ({self._finished}/{self.num_samples} trials done)")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished += 1
        reason = error_line(trial) or "see the error file"
        self._say(trial, f"FAILED: {reason} ({self._finished}/{self.num_samples} trials done; {trial.path})")
