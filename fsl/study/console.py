"""A study's console: by default only its own lines; the libraries' start-up chatter and INFO logs with -v.

Warnings and errors that need the user stay: the libraries' loggers go to WARNING, not off, and only notices
that ask nothing of the user (Ray's token-auth notice on every local start) are raised further.
"""

from __future__ import annotations

import logging
import os

# Their INFO lines (MLflow's database set-up, Optuna's "A new study created", Alembic's migrations) say how
# the libraries start, not how the study goes.
LIBRARY_LOGGERS = ("mlflow", "optuna", "alembic")
# WARNING-level notices that ask nothing of the user.
NOTICES = ("ray._private.authentication.authentication_token_setup",)


def ray_logging_level(verbose: bool) -> int:
    """ray.init's logging_level: it sets Ray's loggers (Tune's and Train's too) in the driver and workers."""
    return logging.INFO if verbose else logging.WARNING


def tune_output_env(verbose: bool) -> dict[str, str]:
    """Tune's newer console output prints a configuration box, the results folder and a TensorBoard hint
    even at verbose=0; its older one is silent there, and the study prints its own progress lines."""
    return {} if verbose else {"RAY_AIR_NEW_OUTPUT": "0"}


def quiet_libraries(verbose: bool) -> None:
    """Lower the libraries' loggers for this process (the study's own lines stay); nothing with -v."""
    if verbose:
        return
    # MLflow sets its logger's level from this when it is first imported (later in some processes).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import mlflow  # noqa: F401  (configures its logger on import; set the level after that)
    import optuna

    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in NOTICES:
        logging.getLogger(name).setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
