"""How often Tune saves a study's state, and what it keeps per trial: chosen so that --resume loses at most about
a second of work on a small study while the saving stays a small share of the driver's time on a long one.

Each save of Tune's experiment state writes every trial's state (about 24 KB per trial) and copies every trial's
driver-side files from Ray's session folder to the study's storage; both grow with the number of trials, so
saving at a fixed rate costs the driver time that grows with the square of the study's length (bench b10: 500
one-epoch trials took 4.5x bare Tune's time, 2,000 took 12.7x). Three choices keep it in proportion:

- the period grows with the planned number of trials (`snapshot_period_s`), as Tune's own "auto" period grows
  with the save's cost, but from one second instead of ten;
- two checkpoints kept per trial: with one, Tune saves the whole study after every checkpoint of every trial
  (the saved state must never name a deleted checkpoint); with two, only when one trial checkpoints twice
  between saves, which a one-epoch trial never does;
- Tune's trial loggers cut to its JSON logger (`result.json`, which `studies/sync_mlflow.py` replays into
  MLflow): the CSV and TensorBoard copies of the same results are two of the five files per trial copied with
  every save, and MLflow is where a study's results are read.

A user's own value of any of these Tune variables is kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

KEEP_CHECKPOINTS = 2
# Trials per second of period: a save costs about 0.5 ms per trial on a 2-core machine (b10: 0.28 s at 600
# trials, mostly the copy of the trials' files), so one every trials/100 s keeps it near 5% of the driver's time,
# the share Tune's "auto" period aims at.
TRIALS_PER_PERIOD_S = 100


def snapshot_period_s(planned_trials: int) -> int:
    """Seconds between Tune's saves of the study's state: 1 up to 100 trials, then one more per 100 trials."""
    return max(1, -(-planned_trials // TRIALS_PER_PERIOD_S))


def tune_env(planned_trials: int, resume: bool, verbose: bool = False) -> dict[str, str]:
    from fsl.study.console import tune_output_env
    from fsl.study.waiting import QUIET_TUNE_WAIT_WARNING

    env = {
        "TUNE_GLOBAL_CHECKPOINT_S": str(snapshot_period_s(planned_trials)),
        # A trial that checkpoints twice within one period forces a save; Tune would warn each time.
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
        **QUIET_TUNE_WAIT_WARNING,
        **tune_output_env(verbose),
    }
    # A new study passes Tune's JsonLoggerCallback itself (trial_loggers); without this, Tune adds its CSV and
    # TensorBoard loggers too. A resumed study runs with the callbacks it was saved with, and one saved by an
    # earlier version has no JSON logger of its own: Tune's defaults keep its result.json going.
    if not resume:
        env["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    return env


@contextmanager
def study_tune_env(planned_trials: int, resume: bool, verbose: bool = False) -> Iterator[None]:
    """Tune's variables for one study's run, each unless the user set it; put back afterwards, so the next study in
    the same process (a test, a notebook) gets its own period."""
    ours = {key: value for key, value in tune_env(planned_trials, resume, verbose).items() if key not in os.environ}
    os.environ.update(ours)
    try:
        yield
    finally:
        for key in ours:
            os.environ.pop(key, None)


def trial_loggers() -> list:
    """The loggers each trial's results go through on the driver: Tune's JSON logger alone."""
    from ray.tune.logger import JsonLoggerCallback

    return [JsonLoggerCallback()]
