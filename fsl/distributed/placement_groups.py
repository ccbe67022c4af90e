"""Release the placement groups of Ray Train runs whose Tune trial has stopped.

A Train V2 run launched inside a Tune trial reserves its workers' resources in a placement group that lives
as long as the whole Ray job, not the trial. When Tune stops the trial (ASHA, or the last epoch reached),
the trial's process and with it the Train controller are killed before the controller can remove that group;
its CPUs and GPUs stay reserved and the next multi-worker trial waits for them forever (Ray issue #54305).
Train V1 had Tune remove such groups; Ray 2.60's detached clean-up actor depends on the dashboard's State API,
which a local Ray without the dashboard does not have. So the study's driver does it: the workers report
their group's id with their metrics, and this Tune callback removes the group as soon as the trial ends.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.tune import Callback
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

PLACEMENT_GROUP_METRIC = "train_placement_group"
logger = logging.getLogger(__name__)


def current_placement_group_id() -> str | None:
    """The id of the placement group this worker runs in (hex), or None outside one."""
    group = ray.util.get_current_placement_group()
    return group.id.hex() if group is not None else None


def remove_if_present(group_id: str) -> bool:
    """Remove a placement group unless it is already gone; True when this call removed it."""
    group = PlacementGroup(ray.PlacementGroupID.from_hex(group_id))
    try:
        if placement_group_table(group).get("state") in (None, "REMOVED"):
            return False
        remove_placement_group(group)
        return True
    except Exception as err:  # a group removed concurrently by Ray's own clean-up is not an error
        logger.debug("placement group %s: %s", group_id, err)
        return False


class ReleaseTrainPlacementGroups(Callback):
    """Removes a trial's Train placement groups when the trial completes, fails or is restarted."""

    def __init__(self) -> None:
        self._groups: dict[str, set[str]] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        group = result.get(PLACEMENT_GROUP_METRIC)
        if group:
            self._groups.setdefault(trial.trial_id, set()).add(group)

    def _release(self, trial: Any) -> None:
        for group in self._groups.pop(trial.trial_id, set()):
            if remove_if_present(group):
                logger.info("trial %s: released the placement group of its stopped Train run", trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(trial)  # the restarted trial starts a new Train run with a new group

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in trials:
            self._release(trial)
