"""A loss that becomes NaN or infinite stops a training loop at that step, with the epoch, step, loss and lr in
the error: the guard itself, and each of the three loops with a NaN injected at a known training step."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from fsl.data.decoded import decode_split
from fsl.data.sources import read_split
from fsl.data.study_data import EpisodeShape, load_study_data
from fsl.train.byol_method import train_byol
from fsl.train.classifier_method import train_classifier
from fsl.train.config import BYOLConfig, ClassifierConfig, ProtoNetConfig
from fsl.train.parallel import Placement
from fsl.train.protonet_method import train_protonet
from fsl.train.run_state import DivergenceGuard, Report, TrainingDiverged

CPU = Placement(torch.device("cpu"))


# --- the guard -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_guard_raises_at_the_first_bad_step_on_the_cpu(bad: float):
    guard = DivergenceGuard("train_loss", 10.0, CPU)
    guard.start_epoch(2)
    guard.step(1, torch.tensor(1.5))
    guard.step(2, torch.tensor(0.7))
    with pytest.raises(TrainingDiverged) as caught:
        guard.step(3, torch.tensor(bad))
    assert str(caught.value) == f"train_loss became {bad} at epoch 3 step 3 (lr=10.0)"


def test_guard_reading_every_few_steps_still_names_the_first_bad_step():
    """What a GPU does (reading the losses every few steps): the read comes later, the step named is exact."""
    guard = DivergenceGuard("byol_loss", 0.5, CPU, check_every=4)
    guard.start_epoch(0)
    guard.step(1, torch.tensor(1.0))
    guard.step(2, torch.tensor(math.inf))
    guard.step(3, torch.tensor(math.nan))  # not read yet
    with pytest.raises(TrainingDiverged, match=r"^byol_loss became inf at epoch 1 step 2 \(lr=0.5\)$"):
        guard.step(4, torch.tensor(math.nan))


def test_guard_flush_reads_what_is_left_at_the_end_of_an_epoch():
    guard = DivergenceGuard("train_loss", 1.0, CPU, check_every=8)
    guard.start_epoch(0)
    for step in range(1, 6):
        guard.step(step, torch.tensor(float(step)))
    guard.flush()  # all finite: nothing happens
    guard.start_epoch(1)
    guard.step(1, torch.tensor(math.nan))
    with pytest.raises(TrainingDiverged, match="at epoch 2 step 1 "):
        guard.flush()


def test_guard_on_a_gpu_reads_every_few_steps():
    assert DivergenceGuard("l", 1.0, CPU).check_every == 1
    assert DivergenceGuard("l", 1.0, Placement(torch.device("cuda"))).check_every > 1


# --- the loops -------------------------------------------------------------------------------------------


class PoisonOnStep:
    """A `prepare_model` for the loops: adds NaN to the trained module's output in its n-th training forward
    pass (counted over the whole run), and counts the optimizer steps taken."""

    def __init__(self, poisoned_forward: int) -> None:
        self.poisoned_forward = poisoned_forward
        self.forwards = 0
        self.optimizer_steps = 0

    def __call__(self, module: nn.Module) -> nn.Module:
        def poison(mod: nn.Module, inputs: tuple, output: object) -> object:
            if not mod.training:
                return None  # evaluation passes are not training steps
            self.forwards += 1
            if self.forwards != self.poisoned_forward:
                return None
            if isinstance(output, tuple):  # BYOL returns (loss, z_std)
                return (output[0] + math.nan, *output[1:])
            return output + math.nan

        module.register_forward_hook(poison)
        return module

    def count_steps(self, *args: object) -> None:
        self.optimizer_steps += 1


Loop = Callable[[Report, "PoisonOnStep"], None]


def run_poisoned(poison: PoisonOnStep, train_loop: Loop) -> tuple[list[dict], TrainingDiverged]:
    """Run `train_loop(report, prepare_model)`; returns the epochs reported and the error."""
    reports: list[dict] = []
    hook = register_optimizer_step_post_hook(poison.count_steps)
    try:
        with pytest.raises(TrainingDiverged) as caught:
            train_loop(lambda metrics, state: reports.append(metrics), poison)
    finally:
        hook.remove()
    return reports, caught.value


@pytest.fixture(scope="module")
def tiny_data(tiny_hw4_master: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_study_data(
        tiny_hw4_master, 16, EpisodeShape(5, 1, 5), 5, 30, seed=0, cache_dir=tmp_path_factory.mktemp("cache")
    )


def test_protonet_loop_stops_at_the_first_bad_episode(tiny_data):
    torch.set_num_threads(1)
    cfg = ProtoNetConfig(epochs=3, episodes_per_epoch=4, train_way=5, n_query=5, image_size=16, eval_episodes=30)
    poison = PoisonOnStep(4 + 3)  # epoch 2, step 3

    def loop(report: Report, prepare_model: PoisonOnStep) -> None:
        train_protonet(cfg, tiny_data.train, tiny_data.val, tiny_data.val_episodes, report, prepare_model=prepare_model)

    reports, error = run_poisoned(poison, loop)
    assert str(error) == f"train_loss became nan at epoch 2 step 3 (lr={cfg.lr})"
    assert [m["epoch"] for m in reports] == [1]  # the diverged epoch is never reported
    assert poison.forwards == 4 + 3 and poison.optimizer_steps == 4 + 3  # no step after the bad one


def test_protonet_loop_stops_a_real_divergence(tiny_data):
    """No injection: Adam at lr 1e30 blows the weights up in its first step, the second episode's loss is NaN."""
    torch.set_num_threads(1)
    cfg = ProtoNetConfig(
        epochs=2, episodes_per_epoch=4, train_way=5, n_query=5, image_size=16, eval_episodes=30, lr=1e30
    )
    with pytest.raises(TrainingDiverged, match=r"^train_loss became nan at epoch 1 step 2 \(lr=1e\+30\)$"):
        train_protonet(cfg, tiny_data.train, tiny_data.val, tiny_data.val_episodes, lambda m, s: None)


def test_byol_loop_stops_at_the_first_bad_step(tiny_hw4_master: Path, tmp_path: Path):
    torch.set_num_threads(1)
    train = decode_split(read_split(tiny_hw4_master, "train"), 16, tmp_path)
    probe = decode_split(read_split(tiny_hw4_master, "val"), 16, tmp_path)
    cfg = BYOLConfig(
        arch="resnet18", head_width=32, projection_dim=16, batch_size=8, epochs=2, steps_per_epoch=5, image_size=16
    )
    poison = PoisonOnStep(2)

    def loop(report: Report, prepare_model: PoisonOnStep) -> None:
        train_byol(cfg, train, probe, report, prepare_model=prepare_model)

    reports, error = run_poisoned(poison, loop)
    assert str(error) == f"byol_loss became nan at epoch 1 step 2 (lr={cfg.lr})"
    assert reports == [] and poison.forwards == 2 and poison.optimizer_steps == 2


def test_classifier_loop_stops_at_the_first_bad_batch(tiny_hw4_master: Path, tmp_path: Path):
    torch.set_num_threads(1)
    train = decode_split(read_split(tiny_hw4_master, "train"), 16, tmp_path)
    cfg = ClassifierConfig(arch="resnet18", head_width=16, batch_size=32, epochs=2, image_size=16)
    n_steps = len(train) // cfg.batch_size
    poison = PoisonOnStep(n_steps + 1)  # the first batch of epoch 2

    def loop(report: Report, prepare_model: PoisonOnStep) -> None:
        train_classifier(cfg, train, report, val=train, prepare_model=prepare_model)

    reports, error = run_poisoned(poison, loop)
    assert str(error) == f"train_loss became nan at epoch 2 step 1 (lr={cfg.lr})"
    assert [m["epoch"] for m in reports] == [1]
    assert poison.forwards == n_steps + 1 and poison.optimizer_steps == n_steps + 1


# --- what the study makes of a failed trial --------------------------------------------------------------


def _trial(trial_id: str, status: str, best: float | None, error_file: Path | None = None) -> SimpleNamespace:
    result = {} if best is None else {"best_val_acc": best, "best_val_acc_ci95": 0.01, "best_epoch": 1, "epoch": 1}
    return SimpleNamespace(
        trial_id=trial_id,
        status=status,
        config={"lr": 0.1, "epochs": 2},
        last_result=result,
        error_file=str(error_file) if error_file else None,
        get_error=lambda: None,
    )


class _Runs:
    searched = ["lr"]
    metric = "val_acc"

    def metric_history(self, trial_id: str, key: str | None = None) -> list:
        return []

    def child_run_id(self, trial_id: str) -> str:
        return f"run-{trial_id}"


def test_a_failed_trial_is_ranked_last_with_its_reason_and_never_the_best(tmp_path: Path):
    from fsl.tracking.summary import best_row, error_line, results_table

    error_file = tmp_path / "error.txt"
    error_file.write_text(
        "Failure # 1 (occurred at 2026-01-01)\nTraceback ...\n  raise TrainingDiverged(\n"
        "fsl.train.run_state.TrainingDiverged: train_loss became nan at epoch 2 step 3 (lr=0.1)\n"
    )
    trials = [
        _trial("ok", "TERMINATED", 0.5),
        _trial("diverged", "ERROR", 0.9, error_file),  # scored well before it failed
        _trial("never", "TERMINATED", None),
        _trial("nan", "TERMINATED", math.nan),
    ]
    assert error_line(trials[1]) == "TrainingDiverged: train_loss became nan at epoch 2 step 3 (lr=0.1)"
    table = results_table(trials, _Runs())
    assert list(table["trial_id"]) == ["ok", "never", "nan", "diverged"]
    assert table["error"].iloc[-1] == error_line(trials[1]) and table["error"].iloc[:3].isna().all()
    assert best_row(table, "val_acc")["trial_id"] == "ok"
    assert best_row(table[table["trial_id"] != "ok"], "val_acc") is None


def test_the_outcome_says_how_many_trials_failed_and_why(capsys: pytest.CaptureFixture):
    import pandas as pd

    from fsl.study.cli import print_failures

    reason = "TrainingDiverged: train_loss became nan at epoch 1 step 2 (lr=1e+30)"
    table = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "status": ["TERMINATED", "ERROR", "ERROR", "ERROR"],
            "error": [None, reason, reason, None],
        }
    )
    print_failures(table)
    assert capsys.readouterr().out.splitlines() == [
        "Failed: 3 trials (not counted for the best)",
        f"  b, c: {reason}",
        "  d: unknown error (see the trial's error.txt)",
    ]
    print_failures(table.iloc[:1])
    assert capsys.readouterr().out == ""


def test_the_divergence_notice_turns_off_the_retry_and_is_no_epoch_for_asha():
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from fsl.study.divergence import DivergenceAwareASHA, NoRetryAfterDivergence
    from fsl.train.run_state import DIVERGED

    trial = SimpleNamespace(trial_id="t1", max_failures=2)
    notice = {"training_iteration": 2, "val_acc": 0.4, "epoch": 1, DIVERGED: "TrainingDiverged: ..."}
    NoRetryAfterDivergence().on_trial_result(0, [trial], trial, {"training_iteration": 1, "val_acc": 0.4})
    assert trial.max_failures == 2  # an epoch changes nothing
    NoRetryAfterDivergence().on_trial_result(0, [trial], trial, notice)
    assert trial.max_failures == 0

    # At max_t plain ASHA would stop the trial, which Tune would then end as TERMINATED, not as failed.
    for scheduler, action in ((ASHAScheduler, TrialScheduler.STOP), (DivergenceAwareASHA, TrialScheduler.CONTINUE)):
        asha = scheduler(time_attr="training_iteration", metric="val_acc", mode="max", max_t=2, grace_period=1)
        asha.on_trial_add(None, trial)
        assert asha.on_trial_result(None, trial, notice) == action, scheduler
