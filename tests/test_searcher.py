"""The study's searcher: seeded TPE by default, Optuna's random sampler on request (b5's baseline), and an
unknown sampler refused when the plan is made."""

import dataclasses
from pathlib import Path

import optuna
import pytest

from fsl.study.protonet_study import plan_study
from fsl.study.runner import StudyOptions, _param_space, _searcher
from fsl.train.config import ProtoNetConfig


@pytest.fixture(scope="module")
def plan(tiny_hw4_master: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("searcher")
    options = StudyOptions("s", str(tmp / "results"), f"sqlite:///{tmp}/mlflow.db", num_samples=12, seed=3)
    base = ProtoNetConfig(n_way=5, k_shot=1, n_query=5, eval_episodes=30, image_size=16)
    return plan_study(tiny_hw4_master, base, [], options)


def test_tpe_is_the_default_and_starts_with_the_recipe(plan):
    searcher = _searcher(plan)
    assert isinstance(searcher._sampler, optuna.samplers.TPESampler)
    assert plan.initial_points and searcher._points_to_evaluate == list(plan.initial_points)


def test_random_sampler_is_seeded_like_the_study(plan):
    random_plan = dataclasses.replace(plan, sampler="random", initial_points=())
    first, second = _searcher(random_plan), _searcher(random_plan)
    for searcher in (first, second):  # as the Tuner does
        assert searcher.set_search_properties(None, None, _param_space(random_plan))
    assert isinstance(first._sampler, optuna.samplers.RandomSampler)
    assert not first._points_to_evaluate
    # The same seed gives the same suggestions: a paired comparison with TPE's seeded start-up trials.
    assert [first.suggest(f"t{i}") for i in range(3)] == [second.suggest(f"t{i}") for i in range(3)]


def test_an_unknown_sampler_is_refused(plan):
    with pytest.raises(ValueError, match="sampler 'grid': expected one of tpe, random"):
        dataclasses.replace(plan, sampler="grid")
