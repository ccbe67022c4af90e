"""A trial whose loss diverged fails once: Tune records the error and does not run it again.

Tune retries every failed trial up to FailureConfig(max_failures) times, whatever the error, and has no
per-error policy. A retry is right for a lost worker or node, but a diverged trial resumes from its last
checkpoint and diverges again at the same step. So the Ray layer (fsl.distributed.train_trial) reports a
last result carrying the reason under DIVERGED just before it raises TrainingDiverged. Tune hands a trial's
results to the callbacks before it handles the error that follows them, so `NoRetryAfterDivergence` can set
that trial's max_failures to 0 (what `Trial.should_recover()` compares its failures with) in time, and
`DivergenceAwareASHA` keeps the scheduler from acting on that result (it could otherwise stop the trial,
which would end it as TERMINATED instead of ERROR). The scores in that result are the last finished epoch's.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from fsl.train.run_state import DIVERGED


def diverged(result: dict[str, Any] | None) -> bool:
    """Whether a trial result is the divergence notice rather than an epoch's scores."""
    return bool(result) and DIVERGED in result  # type: ignore[operator]


class NoRetryAfterDivergence(Callback):
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if diverged(result):
            trial.max_failures = 0


class DivergenceAwareASHA(ASHAScheduler):
    """ASHA that lets a divergence notice through untouched: it is no epoch, and must not stop the trial."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if diverged(result):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)
