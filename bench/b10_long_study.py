"""b10: a long study's bookkeeping: 500 one-epoch trials through the whole stack against bare Ray Tune.

Anchor: Ray's own release test "bookkeeping overhead" runs 10,000 one-second trials on 16 CPUs in 800 s against
a 625 s minimum (1.28x). Here both sides run the same trial on the same CPUs, 2 at a time, in one process, bare
Tune first:

- ours: `plan_study` + `run_study` as the CLI runs them: Optuna's TPE over lr (the other dimensions fixed, so
  every trial does the same work) in its SQLite storage, ASHA, a checkpoint per report, the MLflow callback
  writing every epoch to a SQLite store, the progress lines (to a log), trial processes reused.
- baseline: `tune.Tuner` on the same entry and shared data, lr drawn at random by Tune, no scheduler, no
  checkpoints, no callbacks, trial processes reused.

Each trial is 1 epoch of 1 training episode (5-way 1-shot 15-query, Conv4, 16 px demo data) and 5 evaluation
episodes. Target: ours within 1.25x of bare Tune's wall time. Measured in the driver by wrapping three methods
for the run (bench-only instrumentation): `OptunaSearch.suggest` (the TPE suggestion, with its storage
round trips), `MLflowStudyCallback.on_trial_result` (an epoch's MLflow write) and `.on_trial_complete` (the
trial's end in MLflow, after which the driver's RSS is read); each reported as the median of the 10 calls up to
trials 50, 250 and 500 (quick: 2, 4, 6). A second row holds the driver's RSS growth from trial 50 to the last
against a 100 MB budget; the note says how many child runs MLflow holds FINISHED (every trial's, once).
BENCH_B10_TRIALS sets the number of trials (e.g. 2000), BENCH_B10_EPISODES the training episodes of the epoch
(1; 50 make a trial of about 1 s on a 2-core CPU, the anchor's length).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.b4_ray_overhead import ray_session, run_study_quietly, study_workspace
from bench.b7_memory import trial_results
from bench.common import Row, demo_data, make_row, median
from fsl.distributed.train_trial import TrialResources
from fsl.study.runner import StudyOptions
from fsl.train.config import ProtoNetConfig

MB = 1024**2
FIXED = ["augment=none", "head_depth=0", "distance=euclidean", "train_way=5"]
CONCURRENT = 2
RSS_BUDGET_MB = 100.0


@dataclasses.dataclass
class Calls:
    """Durations (s) of each call of a wrapped method, and the driver's RSS (MiB) after each."""

    seconds: list[float] = dataclasses.field(default_factory=list)
    rss_mb: list[float] = dataclasses.field(default_factory=list)


@contextmanager
def timed_methods(targets: dict[str, tuple[type, str]]) -> Iterator[dict[str, Calls]]:
    """Wrap cls.method for each name while the block runs, recording every call's duration and the process's
    RSS after it; the methods are put back after the block."""
    import psutil

    me = psutil.Process()
    calls = {name: Calls() for name in targets}
    originals = {name: getattr(cls, method) for name, (cls, method) in targets.items()}

    def wrapped(name: str, original: Any) -> Any:
        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                calls[name].seconds.append(time.perf_counter() - started)
                calls[name].rss_mb.append(me.memory_info().rss / MB)

        return call

    for name, (cls, method) in targets.items():
        setattr(cls, method, wrapped(name, originals[name]))
    try:
        yield calls
    finally:
        for name, (cls, method) in targets.items():
            setattr(cls, method, originals[name])


def at(values: list[float], k: int, window: int = 10) -> float:
    """The median of the `window` values up to the k-th (1-based; fewer at the start)."""
    k = min(k, len(values))
    return median(values[max(0, k - window) : k]) if k else float("nan")


def bare_trial(config: dict[str, Any], entry: Any, shared: Any) -> None:
    """The baseline's trainable: the same entry on the same shared data, reporting each epoch to Tune, nothing
    else (no checkpoint)."""
    import torch
    from ray import tune

    from fsl.train.parallel import Placement

    torch.set_num_threads(1)

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        tune.report({k: v for k, v in metrics.items() if isinstance(v, int | float)})

    entry(config, shared.get(), report, Placement(torch.device("cpu")), None, None)


def run_bare(plan: Any, trials: int, storage: Path) -> float:
    """Bare Tune on the plan's entry and data; its wall time."""
    from ray import tune

    from fsl.distributed.train_trial import SharedData

    shared = SharedData.put(plan.shared)
    trainable = tune.with_resources(tune.with_parameters(bare_trial, entry=plan.entry, shared=shared), {"CPU": 1.0})
    space = {**plan.base.to_dict(), "lr": tune.loguniform(1e-4, 3e-2)}
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=CONCURRENT, reuse_actors=True),
        run_config=tune.RunConfig(name="bare", storage_path=str(storage), verbose=0),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started
    if grid.num_errors or len(grid) != trials:
        raise RuntimeError(f"bare Tune ran {len(grid)} trials with {grid.num_errors} errors, expected {trials}")
    return wall


def finished_children(tracking_uri: str, experiment: str) -> int:
    from fsl.tracking.run_store import ROLE_TAG, RunStore

    store = RunStore.at(tracking_uri)
    experiment_id = store.client.get_experiment_by_name(experiment).experiment_id
    return len(store.runs([experiment_id], f"tags.`{ROLE_TAG}` = 'trial' and attributes.status = 'FINISHED'"))


def measure(quick: bool) -> list[Row]:
    with study_workspace("b10") as work:
        return measure_in(work, quick)


def measure_in(work: Path, quick: bool) -> list[Row]:
    import psutil  # noqa: F401  (the bench extra)
    from ray.tune.search.optuna import OptunaSearch

    from fsl.study.protonet_study import plan_study
    from fsl.tracking.mlflow_callback import MLflowStudyCallback

    trials = 6 if quick else int(os.environ.get("BENCH_B10_TRIALS", "500"))
    episodes = int(os.environ.get("BENCH_B10_EPISODES", "1"))
    marks = (2, 4, 6) if quick else (50, trials // 2, trials)
    ray_session()
    root = demo_data(16, n_train_classes=8, n_val_classes=5, images_per_class=20)
    base = ProtoNetConfig(epochs=1, episodes_per_epoch=episodes, eval_episodes=5, image_size=16, n_query=15)
    tracking = f"sqlite:///{work}/mlflow.db"
    options = StudyOptions(
        study_name="long", storage=str(work / "results"), tracking_uri=tracking, experiment="bench-b10",
        num_samples=trials, max_concurrent=CONCURRENT, resources=TrialResources(1, 1.0),
    )  # fmt: skip
    plan = plan_study(root, base, FIXED, options)
    if list(plan.space) != ["lr"]:
        raise RuntimeError(f"expected lr alone searched, got {list(plan.space)}")

    bare_wall = run_bare(plan, trials, work / "bare")
    targets = {
        "suggest": (OptunaSearch, "suggest"),
        "result": (MLflowStudyCallback, "on_trial_result"),
        "complete": (MLflowStudyCallback, "on_trial_complete"),
    }
    with timed_methods(targets) as calls:
        started = time.perf_counter()
        outcome = run_study_quietly(plan, work / "study.log")
        ours_wall = time.perf_counter() - started
    if len(outcome.table) != trials or (outcome.table["status"] != "TERMINATED").any():
        raise RuntimeError(f"the {trials}-trial study did not finish every trial; see {work / 'study.log'}")
    children = finished_children(tracking, "bench-b10")
    trial_s = median([trial[-1]["time_total_s"] for trial in trial_results(options.study_path) if trial])
    suggestions = calls["suggest"].seconds
    rss = calls["complete"].rss_mb
    growth = rss[-1] - rss[marks[0] - 1]

    def figures(name: str, values: list[float], scale: float, unit: str) -> str:
        return ", ".join(f"{at(values, k) * scale:.1f} {unit} at {k}" for k in marks) + f" ({name})"

    note = (
        f"{trials} trials of 1 epoch ({episodes} episode(s) + 5 evaluation episodes, Conv4 16 px; a trial's own "
        f"time {trial_s:.2f} s, median), {CONCURRENT} at a time, 1 CPU each; study wall time per trial "
        f"{ours_wall / trials:.2f} s (ours) and {bare_wall / trials:.2f} s (bare); TPE suggestion "
        f"{figures('OptunaSearch.suggest', suggestions, 1000, 'ms')}; MLflow per epoch "
        f"{figures('on_trial_result', calls['result'].seconds, 1000, 'ms')}, trial end "
        f"{figures('on_trial_complete', calls['complete'].seconds, 1000, 'ms')}; {children} of {trials} child "
        "runs FINISHED in MLflow; medians of the 10 calls up to each trial count"
    )
    wall_row = make_row(
        f"b10 {trials} one-epoch trials: the whole stack (TPE, ASHA, checkpoints, MLflow) vs bare Ray Tune",
        ours_wall,
        bare_wall,
        "s",
        1 / 1.25,
        note,
        higher_is_better=False,
        samples={"ours": [ours_wall], "baseline": [bare_wall]},
    )
    wall_row.target = ">= 0.80x (time <= 1.25x)"
    rss_row = make_row(
        f"b10 the driver's RSS growth from trial {marks[0]} to trial {trials} vs a {RSS_BUDGET_MB:.0f} MB budget",
        max(growth, 0.01),
        RSS_BUDGET_MB,
        "MiB",
        1.0,
        f"RSS after each trial's end in MLflow: {figures('driver RSS', rss, 1, 'MiB')}",
        higher_is_better=False,
    )
    rss_row.target = f">= 1x (growth <= {RSS_BUDGET_MB:.0f} MB)"
    return [wall_row, rss_row]


def run(quick: bool) -> list[Row]:
    return measure(quick)


if __name__ == "__main__":
    import sys

    from bench.run_all import markdown_table

    print(markdown_table(run("--quick" in sys.argv)))
