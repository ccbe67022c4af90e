"""A study's Optuna sampler keeps its trials in a real Optuna storage next to the study, and a new study can
warm-start from an earlier one's finished trials (fsl.study.optuna_store): real studies on a real local Ray."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import tiny_study_argv

from fsl.commands.protonet_search import main

pytestmark = pytest.mark.ray

# lr, augment and distance searched; 3 one-epoch trials.
SHAPE = [*"--num-samples 3 --epochs 1 --episodes-per-epoch 2 --param train_way=5 --param head_depth=0".split()]
COMPLETE = (optuna.trial.TrialState.COMPLETE,)


def _optuna_study(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'results' / name / 'optuna.db'}")


def _parent(root: Path, experiment: str) -> dict:
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=[experiment])
    (parent,) = [row for _, row in runs.iterrows() if row["tags.fsl.role"] == "study"]
    return parent.to_dict()


@pytest.fixture(scope="module")
def first(local_ray, tiny_hw4_master: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("optuna")
    assert main([*tiny_study_argv(tiny_hw4_master, root, "optuna-first", "first"), *SHAPE]) == 0
    return root


def test_a_study_s_trials_are_in_an_optuna_storage_next_to_it(first: Path):
    study = _optuna_study(first, "first")
    trials = study.get_trials(states=COMPLETE)
    assert len(trials) == 3 and all(set(t.params) == {"lr", "augment", "distance"} for t in trials)
    assert all(0.0 <= t.value <= 1.0 for t in trials)
    # The data it ran on, the same hash MLflow shows on the study's runs.
    assert study.user_attrs["fsl.dataset_hash"] == _parent(first, "optuna-first")["tags.fsl.dataset_hash"]


def test_a_warm_started_study_begins_with_the_earlier_trials(first: Path, tiny_hw4_master: Path, capsys):
    argv = tiny_study_argv(tiny_hw4_master, first, "optuna-second", "second")
    assert main([*argv, *SHAPE, "--warm-start", "first"]) == 0
    assert "Warm start: 3 finished trials of study 'first' seed the sampler\n" in capsys.readouterr().out
    earlier = {(tuple(sorted(t.params.items())), t.value) for t in _optuna_study(first, "first").get_trials()}
    second = _optuna_study(first, "second").get_trials(states=COMPLETE)
    seeded = [t for t in second if t.user_attrs.get("fsl.warm_start") == "first"]
    assert {(tuple(sorted(t.params.items())), t.value) for t in seeded} == earlier
    assert len(second) == 3 + 3  # the earlier three, then its own three trials
    params = _parent(first, "optuna-second")
    assert params["params.warm_start"] == "first" and params["params.warm_start_trials"] == "3"


def test_a_warm_start_outside_the_search_space_or_on_other_data_is_refused(
    first: Path, tiny_hw4_master: Path, tmp_path: Path, capsys
):
    argv = tiny_study_argv(tiny_hw4_master, first, "optuna-refused", "refused")
    # distance fixed: the earlier trials searched it, so none has exactly this space's dimensions.
    assert main([*argv, *SHAPE, "--param", "distance=cosine", "--warm-start", "first"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --warm-start first: none of its 3 finished trials lies in this study's search space "
        "(lr=[0.0001, 0.03] (log); augment={none, flip, crop, color, flip+crop, flip+crop+color})"
    ]
    # The same images decoded at 20 px are other data.
    assert main([*argv, *SHAPE, "--image-size", "20", "--warm-start", "first"]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert error.startswith("error: --warm-start first: that study ran on other data (dataset hash ")
    assert not (first / "results" / "refused").exists()  # refused before the study began
