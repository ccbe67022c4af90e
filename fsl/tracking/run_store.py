"""Where a study's runs live in MLflow: the tags that mark them and the searches that find them again.

One parent run per study (tag fsl.role=study, found by the study's storage path) and one child run per trial
(tag mlflow.parentRunId, found by the trial id). The study's callback, its replay (fsl.tracking.sync) and the
report all find runs here, so the tags and the paging through MLflow's search results are written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlflow import MlflowClient

from fsl.tracking.uri import artifact_location_for

ROLE_TAG, STUDY_TAG, STUDY_PATH_TAG, TRIAL_TAG = "fsl.role", "fsl.study", "fsl.study_path", "fsl.trial_id"
PARENT_TAG = "mlflow.parentRunId"
CELL_TAG = "fsl.cell"
NODES_TAG = "fsl.nodes"  # the Ray node ids a trial ran on, comma-separated, in the order it reached them
ORPHANED_TAG = "fsl.orphaned"  # a child run of a trial that Tune reran under another id after a crash
TERMINAL = ("FINISHED", "FAILED", "KILLED")
PAGE = 1000  # runs per search request; MLflow's own limit is larger, its default (100) is smaller


def quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def every_page(search: Callable[[str | None], Any]) -> list[Any]:
    """All results of a paged MLflow search; search(page_token) returns one page (a PagedList)."""
    found, token = [], None
    while True:
        page = search(token)
        found.extend(page)
        token = page.token
        if not token:
            return found


class RunStore:
    """An MLflow tracking store seen as studies and trials."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    @classmethod
    def at(cls, tracking_uri: str) -> RunStore:
        return cls(MlflowClient(tracking_uri))

    def experiments(self) -> list[Any]:
        return every_page(lambda token: self.client.search_experiments(max_results=PAGE, page_token=token))

    def experiment_id(self, name: str, tracking_uri: str) -> str:
        """The experiment's id, created (with its artifacts beside a SQLite store) when it does not exist."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location_for(tracking_uri, name))

    def runs(self, experiment_ids: list[str], filter_string: str = "", order_by: list[str] | None = None) -> list:
        """Every run that matches, across all pages."""
        return every_page(
            lambda token: self.client.search_runs(
                experiment_ids, filter_string, max_results=PAGE, order_by=order_by, page_token=token
            )
        )

    def study_run(self, experiment_id: str, study_path: str) -> Any | None:
        """The parent run of the study stored at study_path, if there is one."""
        found = self.client.search_runs(
            [experiment_id],
            f"tags.`{STUDY_PATH_TAG}` = {quote(study_path)} and tags.`{ROLE_TAG}` = 'study'",
            max_results=1,
        )
        return found[0] if found else None

    def studies(self, experiment_ids: list[str]) -> list[Any]:
        """Every study's parent run in these experiments, the newest first."""
        return self.runs(experiment_ids, f"tags.`{ROLE_TAG}` = 'study'", order_by=["attributes.start_time DESC"])

    def trial_run(self, experiment_id: str, parent_id: str, trial_id: str) -> Any | None:
        """The child run of one trial of the study, if there is one."""
        found = self.client.search_runs(
            [experiment_id],
            f"tags.`{PARENT_TAG}` = {quote(parent_id)} and tags.`{TRIAL_TAG}` = {quote(trial_id)}",
            max_results=1,
        )
        return found[0] if found else None

    def trial_runs(self, experiment_id: str, parent_id: str) -> list[Any]:
        """Every child run of the study (also those tagged orphaned)."""
        return self.runs([experiment_id], f"tags.`{PARENT_TAG}` = {quote(parent_id)}")
