"""How often Tune saves a study's state, and the Tune variables a study sets for its run only."""

import os

import pytest

from fsl.study.tune_state import snapshot_period_s, study_tune_env


@pytest.mark.parametrize(("trials", "seconds"), [(1, 1), (12, 1), (100, 1), (101, 2), (500, 5), (2000, 20)])
def test_the_period_is_a_second_per_hundred_planned_trials_and_at_least_one(trials: int, seconds: int):
    assert snapshot_period_s(trials) == seconds


def test_the_study_s_tune_variables_hold_for_its_run_only_and_never_replace_the_user_s(monkeypatch):
    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S", raising=False)
    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    with study_tune_env(500, resume=False):
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "5"
        assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"
    assert "TUNE_GLOBAL_CHECKPOINT_S" not in os.environ
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ
    # A resumed study keeps Tune's default loggers (one saved by an earlier version has no JSON logger of its own).
    with study_tune_env(12, resume=True):
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "1"
        assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "30")
    with study_tune_env(12, resume=False):
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"


def test_tune_s_own_console_output_is_off_unless_verbose(monkeypatch):
    """Tune's newer output prints a configuration box, the results folder and a TensorBoard hint even at
    verbose=0; a study runs it with the older, silent one unless -v."""
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    with study_tune_env(12, resume=False):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    with study_tune_env(12, resume=False, verbose=True):
        assert "RAY_AIR_NEW_OUTPUT" not in os.environ
