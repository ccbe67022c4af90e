"""A study whose trials wait for nodes: say so on the console, and stop waiting after a timeout.

On an autoscaling cluster a study's pending trials are what makes the autoscaler add nodes, so waiting is normal
for minutes (a GPU node takes 5-10 minutes to boot). The study says what it waits for while no trial runs, and
after `timeout_s` without a trial running it ends the way Ctrl-C ends a Tune run: Tune saves the study's state
with the waiting trials still pending (stopping them instead would mark them done), so `--resume` runs them
once the cluster can.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

# Tune's own warning for the same situation is a generic paragraph every minute; this module says it in one line.
QUIET_TUNE_WAIT_WARNING = {
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S": "1000000000",
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S_AUTOSCALER": "1000000000",
}


class StudyWaitedTooLong(RuntimeError):
    """No trial could start within the timeout; the study is saved and can be resumed."""


# The wait that ended this process's last study, for run_study to report: a resumed study runs the callback
# Tune restored with its state, not the one run_study built, so the callback leaves word here.
_expired: list[WaitForResources] = []


# The --wait-timeout of the study being resumed in this process: Tune restores the interrupted study's callback.
_resumed_timeout: list[float | None] = []


def resuming_with(timeout_s: float | None) -> None:
    """Set the wait timeout that a callback restored from now on takes (run_study calls it before a restore)."""
    _resumed_timeout[:] = [timeout_s]


def take_expired() -> WaitForResources | None:
    """The wait that ended the last tuner.fit() of this process, if one did (and forget it). Tune's interrupt
    lines, silenced for that ending, are heard again."""
    if _silenced:
        _TUNE_LOG.setLevel(_silenced.pop())
    return _expired.pop() if _expired else None


_TUNE_LOG = logging.getLogger("ray.tune.tune")
_silenced: list[int] = []  # the level of Tune's logger before an interrupt silenced it


class WaitForResources(Callback):
    """Prints what the study waits for while trials are pending and none runs; ends the study after timeout_s."""

    def __init__(self, asks: str, timeout_s: float | None, every_s: float = 60.0, first_after_s: float = 30.0) -> None:
        self.asks = asks  # each trial's request, for people: "CPU 4, GPU 1"
        self.timeout_s = timeout_s
        self.every_s = every_s
        # Starting a trial process takes seconds, more on a loaded machine: only a wait that lasts is news.
        self.first_after_s = first_after_s
        self.expired = False
        self.waited_s = 0.0
        self.pending = 0
        self._since: float | None = None
        self._next_say = 0.0
        self._told = False  # a waiting line was printed since the wait began

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.expired, self._since = False, None  # a resumed study waits afresh...
        if _resumed_timeout:  # ...as long as its own command line says, not the interrupted one's
            self.timeout_s = _resumed_timeout[0]

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.expired:
            return
        pending = sum(t.status == Trial.PENDING for t in trials)
        running = any(t.status == Trial.RUNNING for t in trials)
        now = time.monotonic()
        if running or not pending:
            if self._since is not None and running and self._told:
                print(f"Resources arrived: a trial started after {now - self._since:.0f} s of waiting", flush=True)
            self._since = None
            return
        if self._since is None:
            # The first line comes before the study gives up, however short its timeout.
            first = min(self.first_after_s, self.timeout_s / 2) if self.timeout_s else self.first_after_s
            self._since, self._next_say, self._told = now, now + first, False
        self.waited_s, self.pending = now - self._since, pending
        if now >= self._next_say:
            self._next_say, self._told = now + self.every_s, True
            limit = f"; the study gives up after {self.timeout_s:.0f} s" if self.timeout_s else ""
            print(
                f"Waiting for resources: no trial has run for {self.waited_s:.0f} s; {pending} "
                f"trial{'s' if pending > 1 else ''} pending, each asking for {self.asks} (an autoscaling cluster "
                f"adds nodes for them{limit})",
                flush=True,
            )
        if self.timeout_s is not None and self.waited_s >= self.timeout_s:
            self.expired = True
            _expired[:] = [self]
            _interrupt_tune()


def _interrupt_tune() -> None:
    """End tuner.fit() the way Ctrl-C does: Tune registers SIGUSR1 as its interrupt signal, saves the study's
    state with the pending trials still pending and returns. Only the main thread can take a signal handler;
    where fit() runs elsewhere Tune registered none, and the process would die, so the study fails instead."""
    handler = signal.getsignal(signal.SIGUSR1)
    if threading.current_thread() is not threading.main_thread() or handler in (signal.SIG_DFL, signal.SIG_IGN, None):
        raise StudyWaitedTooLong("no trial could start before the timeout")
    # Tune's own lines on an interrupt speak of Ctrl-C and Tuner.restore; the study prints its own.
    _silenced[:] = [_TUNE_LOG.level]
    _TUNE_LOG.setLevel(logging.CRITICAL)
    os.kill(os.getpid(), signal.SIGUSR1)
