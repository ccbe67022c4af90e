"""Hold a study's trials at chosen epoch reports, so that a test acts (stops a server, kills a process, takes a lock)
while the study provably still has work to do, instead of guessing how long its trials take.

The study's training loop (its `Entry`) is wrapped: before every report of rank 0, the wrapper counts the report
(1, 2, ... over the whole study, in every process, through a locked counter file) and, when the count is one of
the held ones, writes `held-N` (its process id) into the holds folder and waits until the test writes `release-N`.
The study's driver is not held: it goes on processing events, logging to MLflow and saving its state.

Reports are counted in the order they are made, so a test that holds report N of a study of one trial at a time
knows which trial and epoch that is (with --grace-period = --epochs, report N of E-epoch trials is trial
(N-1)//E + 1, epoch (N-1)%E + 1).

In a test's own process: `holds.run(argv)` runs studies/protonet_search.py's study with held trials. As a script,
for a study in its own process (a driver the test kills): `python tests/trial_holds.py FOLDER N[,N...] -- ARGV`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ray.cloudpickle

# The wrapper travels to Ray's workers with the trial; they do not have tests/ on their path, so it goes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# How long a test waits for anything (a held report, a study's end, a server) before it calls it a hang: a guard
# only, far longer than any of those takes on a slow or loaded machine.
GUARD_S = 900.0
# How long a held trial waits for its release: longer than the test's own guard, so that a test that failed (and
# released nothing) never leaves a trial waiting for ever.
HELD_GUARD_S = 2 * GUARD_S


class HeldEntry:
    """A training loop (fsl.train.entries.Entry) whose rank-0 reports wait at the held counts."""

    def __init__(self, entry: Any, folder: Path, held: Iterable[int]) -> None:
        self.entry, self.folder, self.held = entry, str(folder), frozenset(held)

    def __call__(self, config, data, report, placement, resume_state, prepare_model) -> None:  # noqa: ANN001
        def held_report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
            if placement.rank == 0:
                self._wait_if_held(self._count())
            report(metrics, state)

        self.entry(config, data, held_report, placement, resume_state, prepare_model)

    def _count(self) -> int:
        """This report's number in the study: one byte appended per report, under an exclusive lock."""
        with open(Path(self.folder) / "reports", "ab") as counter:
            fcntl.flock(counter, fcntl.LOCK_EX)
            counter.write(b".")
            counter.flush()
            return os.fstat(counter.fileno()).st_size

    def _wait_if_held(self, number: int) -> None:
        if number not in self.held:
            return
        folder = Path(self.folder)
        _write_atomically(folder / f"held-{number}", f"{os.getpid()}\n")
        deadline = time.monotonic() + HELD_GUARD_S
        while not (folder / f"release-{number}").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"report {number} was held {HELD_GUARD_S:.0f} s and never released")
            time.sleep(0.05)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.rename(path)


class TrialHolds:
    """The test's side: which reports are held, waiting for one to be held, releasing it."""

    def __init__(self, folder: Path, held: Iterable[int]) -> None:
        self.folder, self.held = Path(folder), tuple(sorted(held))
        self.folder.mkdir(parents=True, exist_ok=True)

    def wrap(self, entry: Any) -> HeldEntry:
        return HeldEntry(entry, self.folder, self.held)

    def argv(self) -> list[str]:
        """The command line that runs a protonet_search.py study with these holds in a process of its own."""
        return [sys.executable, __file__, str(self.folder), ",".join(map(str, self.held)), "--"]

    def wait(self, number: int, guard_s: float = GUARD_S, failed: Callable[[], str | None] = lambda: None) -> int:
        """Wait until report `number` is held; its process id. `failed` says why waiting is pointless (the
        study ended), or None."""
        path = self.folder / f"held-{number}"
        deadline = time.monotonic() + guard_s
        while not path.exists():
            reason = failed()
            if reason is not None:
                raise AssertionError(f"report {number} was never held: {reason}")
            if time.monotonic() > deadline:
                raise AssertionError(f"report {number} was not held within {guard_s:.0f} s (guard)")
            time.sleep(0.05)
        return int(path.read_text())

    def is_held(self, number: int) -> bool:
        return (self.folder / f"held-{number}").exists() and not (self.folder / f"release-{number}").exists()

    def release(self, number: int) -> None:
        (self.folder / f"release-{number}").touch()

    def release_all(self) -> None:
        for number in self.held:
            self.release(number)

    def run(self, argv: list[str]) -> int:
        """studies/protonet_search.py's study of these flags, in this process, with held trials; its exit status.
        Every hold is released when it ends, also by an error, so that no trial waits for ever."""
        from fsl.commands.protonet_search import build_parser, plan_from_args, run_plan

        plan = plan_from_args(build_parser().parse_args(argv))
        try:
            return run_plan(dataclasses.replace(plan, entry=self.wrap(plan.entry)))
        finally:
            self.release_all()


if __name__ == "__main__":
    # python tests/trial_holds.py FOLDER N[,N...] -- protonet_search.py flags
    folder, numbers, separator, *study_argv = sys.argv[1:]
    assert separator == "--", "usage: trial_holds.py FOLDER N[,N...] -- protonet_search.py flags"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(TrialHolds(Path(folder), map(int, numbers.split(","))).run(study_argv))
