"""Tracking writes that outlive a tracking store's outage: a queue of actions, run in order.

A SQLite store locked by another process (an `mlflow ui` on the same file) is waited out, one action at a time.
A store that does not answer (a stopped server) leaves the actions queued while the study goes on; they are
retried every RETRY_S seconds and once more, forced, at the study's end. Every action must be idempotent (find
what exists, add what is missing): one interrupted half-way is simply run again.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fsl.tracking.uri import failure_reason, sync_command, tracking_server_problem

RETRY_S = 15.0  # how often a study retries a tracking store that stopped answering
LOCK_WAIT_S = 300.0  # how long one action waits for a SQLite store locked by another process
# Set in the study's driver unless the user set them. MLflow's HTTP client retries a failed request 7 times
# over about 4 minutes; the driver would stall that long on the first request to a stopped server, so it
# retries the queue itself instead. MLflow also prints a "View run" link per finished run on a tracking
# server, dozens of lines that would bury the progress; the study prints the UI link once at its end.
DRIVER_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # The best trials' checkpoints are downloaded to log them as models: small files, no progress bars.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def set_driver_env_defaults() -> None:
    for key, value in DRIVER_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_locked(err: BaseException) -> bool:
    """SQLite's answer while another connection holds the write lock (e.g. an `mlflow ui` on the same file)."""
    return "database is locked" in str(err)


class _DropLockedErrors(logging.Filter):
    """MLflow logs each failed SQLite query with its traceback before raising it; a lock the study waits out
    would print a page per retry."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


logging.getLogger("mlflow.store.db.utils").addFilter(_DropLockedErrors())


class WriteQueue:
    """The study's tracking actions, done in order as soon as the store takes them.

    on_offline runs when an action fails for a reason other than a lock: what that action half wrote is
    unknown, so its owner forgets what it cached and reads it back on the next try.
    """

    def __init__(self, tracking_uri: str, study_path: str, on_offline: Callable[[], None]) -> None:
        self.tracking_uri = tracking_uri
        self.study_path = study_path
        self.on_offline = on_offline
        self._actions: deque[Callable[[], None]] = deque()
        self.offline_since: float | None = None
        self._last_attempt = 0.0
        self.lock_warned = False

    @property
    def pending(self) -> int:
        """Actions not yet done (the store did not answer)."""
        return len(self._actions)

    @property
    def offline(self) -> bool:
        return self.offline_since is not None

    def submit(self, action: Callable[[], None], force: bool = False) -> None:
        self._actions.append(action)
        self.drain(force)

    def drain(self, force: bool = False) -> bool:
        """Run the queued actions in order; True when none is left. While the store is away, tries again
        only every RETRY_S seconds (or when forced, at the study's end)."""
        if not self._actions:
            return True
        if self.offline_since is not None:
            if not force and time.monotonic() - self._last_attempt < RETRY_S:
                return False
            self._last_attempt = time.monotonic()
            # A quick look first: MLflow's own request retries are slow.
            if tracking_server_problem(self.tracking_uri, timeout_s=3) is not None:
                return False
        while self._actions:
            try:
                self.with_lock_retry(self._actions[0])
            except Exception as err:  # MLflow raises many types for a store that is away
                self._went_offline(err)
                return False
            self._actions.popleft()
        if self.offline_since is not None:
            away = time.monotonic() - self.offline_since
            print(f"MLflow at {self.tracking_uri} answers again after {away:.0f} s: caught up", flush=True)
            self.offline_since = None
        return True

    def with_lock_retry(self, action: Callable[[], Any]) -> Any:
        """Run one action; while SQLite says the database is locked, wait and run it again."""
        deadline, delay = time.monotonic() + LOCK_WAIT_S, 0.2
        while True:
            try:
                return action()
            except Exception as err:
                if not is_locked(err) or time.monotonic() > deadline:
                    raise
                if not self.lock_warned:
                    self.lock_warned = True
                    print(
                        f"warning: MLflow store {self.tracking_uri} is locked by another process; "
                        f"retrying for up to {LOCK_WAIT_S:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(delay)
                delay = min(2 * delay, 5.0)

    def _went_offline(self, err: BaseException) -> None:
        self._last_attempt = time.monotonic()
        self.on_offline()
        if self.offline_since is None:
            self.offline_since = time.monotonic()
            print(
                f"warning: MLflow at {self.tracking_uri} failed ({failure_reason(err)}); the study goes on and keeps "
                f"every result in {self.study_path}; tracking retries every {RETRY_S:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def warn_if_left(self) -> None:
        """At the study's end: what is still queued, and the command that replays it once MLflow answers."""
        if self._actions:
            print(
                f"warning: MLflow at {self.tracking_uri} did not answer; {len(self._actions)} tracking actions are "
                f"not done. Every result is kept in {self.study_path}; once MLflow answers, run: "
                f"{sync_command(self.study_path, self.tracking_uri)}",
                file=sys.stderr,
                flush=True,
            )
