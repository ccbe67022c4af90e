"""A ProtoNet hyperparameter study: Ray Tune with a seeded Optuna TPE sampler and ASHA early stopping.

`plan_study` does everything that can fail on bad input (reading and decoding the data, checking episode
shapes, parameters, paths and the tracking URI) before Ray starts; `run_study` starts or attaches to Ray,
shares the decoded data through the object store, runs or resumes the Tuner, and summarises.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import torch

from fsl.data.episodes import check_episode_fits
from fsl.data.study_data import EpisodeShape, StudyData, load_study_data
from fsl.distributed.protonet_train import TrialResources
from fsl.study.space import Dimension, apply_params, default_space
from fsl.tracking.summary import RESULTS_CSV
from fsl.train.config import ProtoNetConfig
from fsl.train.evaluate import evaluate_episodes
from fsl.train.protonet_loop import build_model

# The ProtoNet paper's recipe, evaluated first so every study measures the known-good baseline.
PAPER_RECIPE = {"lr": 1e-3, "augment": "none", "head_depth": 0, "distance": "euclidean", "train_way": 30}
DRIVER_CPU = 0.01  # a Ray Train trial's own process only launches workers; Ray refuses a zero-CPU bundle


@dataclass(frozen=True)
class StudySettings:
    study_name: str
    storage: str  # a local folder (absolute) or a URI such as s3://bucket/path
    tracking_uri: str
    experiment: str = "protonet"
    num_samples: int = 12
    max_concurrent: int | None = None
    resources: TrialResources = field(default_factory=TrialResources)
    address: str | None = None
    num_cpus: int | None = None  # for a local Ray only; None = all cores
    resume: bool = False
    seed: int = 0
    grace_period: int | None = None  # ASHA: epochs before the first cut; None = a quarter of the epochs
    reduction_factor: int = 2
    trial_max_failures: int = 1

    @property
    def study_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.study_name}"

    @property
    def storage_is_local(self) -> bool:
        return not urlparse(self.storage).scheme


@dataclass(frozen=True)
class StudyPlan:
    settings: StudySettings
    base: ProtoNetConfig
    space: dict[str, Dimension]
    data: StudyData
    untrained: tuple[float, float]

    @property
    def results_dir(self) -> Path:
        if self.settings.storage_is_local:
            return Path(self.settings.study_path)
        return Path.cwd() / "fsl-summaries" / self.settings.study_name


@dataclass(frozen=True)
class StudyOutcome:
    table: pd.DataFrame
    best: dict[str, Any] | None
    results_csv: Path
    parent_run_id: str | None
    experiment_id: str | None


def normalise_storage(storage: str) -> str:
    """Local folders become absolute (trials run in other working folders); URIs stay as they are."""
    if urlparse(storage).scheme:
        return storage
    return str(Path(storage).expanduser().resolve())


def check_storage_writable(storage: str) -> None:
    if urlparse(storage).scheme:
        return  # remote storage is checked by Ray when the study starts
    path = Path(storage)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".fsl-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--storage {storage}: cannot write there ({err.strerror or err})") from None


def latest_study(storage: str, prefix: str) -> str | None:
    """The most recently changed study folder under a local storage path (for --resume without a name)."""
    root = Path(storage)
    if not root.is_dir():
        return None
    candidates = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix) and _restorable(str(p))]
    return max(candidates, key=lambda p: p.stat().st_mtime).name if candidates else None


def _restorable(path: str) -> bool:
    from ray.tune import Tuner

    return Tuner.can_restore(path)


def max_value(base: ProtoNetConfig, space: dict[str, Dimension], name: str) -> Any:
    if name in space:
        return max(space[name].values_to_check())
    return getattr(base, name)


def untrained_accuracy(base: ProtoNetConfig, data: StudyData) -> tuple[float, float]:
    """An untrained Conv4 (no head, Euclidean) on the same fixed episodes: the floor a study must beat."""
    torch.manual_seed(base.seed)
    model = build_model(base.replace(head_depth=0, distance="euclidean"))
    result = evaluate_episodes(model, torch.from_numpy(data.val.images), data.val_episodes)
    return result.mean, result.ci95


def plan_study(
    data_root: Path,
    base: ProtoNetConfig,
    params: list[str],
    settings: StudySettings,
    cache_dir: Path | None = None,
) -> StudyPlan:
    """Validate everything and load the data; raises ValueError / FileNotFoundError with a one-line message."""
    if settings.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {settings.num_samples}")
    if settings.max_concurrent is not None and settings.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1, got {settings.max_concurrent}")
    if settings.address and settings.num_cpus is not None:
        raise ValueError("--num-cpus sizes a local Ray; a cluster given by --address has its own resources")
    if settings.reduction_factor < 2:
        raise ValueError(f"ASHA reduction factor must be >= 2, got {settings.reduction_factor}")
    base, space = apply_params(base, default_space(), params)
    check_storage_writable(settings.storage)
    exists = _restorable(settings.study_path)
    if settings.resume and not exists:
        raise ValueError(f"--resume: no study to resume at {settings.study_path}")
    if not settings.resume and (exists or (settings.storage_is_local and Path(settings.study_path).exists())):
        raise ValueError(
            f"--study-name {settings.study_name}: a study already exists at {settings.study_path}; "
            "add --resume to continue it, or choose another --study-name"
        )
    data = load_study_data(
        data_root,
        base.image_size,
        EpisodeShape(base.n_way, base.k_shot, base.n_query),
        max_train_way=base.n_way,
        n_eval_episodes=base.eval_episodes,
        seed=base.seed,
        cache_dir=cache_dir,
    )
    n_train_classes = len(data.train.class_names)
    if "train_way" in space and space["train_way"].kind == "int" and space["train_way"].high > n_train_classes:
        # The default range ends at 30-way; smaller data sets search up to their number of classes.
        space["train_way"] = Dimension(
            "train_way", "int", min(space["train_way"].low, n_train_classes), n_train_classes
        )
    way = int(max_value(base, space, "train_way"))
    try:
        check_episode_fits(
            data.train.labels, data.train.class_names, way, base.k_shot, base.n_query, str(data.root / "train")
        )
    except ValueError as err:
        raise ValueError(f"train_way={way}: {err}") from None
    return StudyPlan(settings, base, space, data, untrained_accuracy(base, data))


def start_ray(settings: StudySettings) -> None:
    import ray

    if ray.is_initialized():
        return
    # Keeping one checkpoint per trial forces a (cheap, milliseconds) experiment snapshot after each one,
    # which is what makes --resume exact; Tune would warn about it on every epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune snapshots the study every 10 s or more by default; a trial started after the last snapshot is
    # unknown to --resume, which then reruns it under a new id. A snapshot takes milliseconds on local storage.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if settings.address:
        ray.init(address=settings.address)
    else:
        # The dashboard (ray[default]) gives users the Ray UI and Ray Train its State API.
        ray.init(num_cpus=settings.num_cpus)


def concurrency(settings: StudySettings) -> int:
    """How many trials fit at once; fails with a clear message when not even one does."""
    import ray

    total = ray.cluster_resources()
    res = settings.resources
    cpus_needed = res.workers * res.cpus_per_worker + (DRIVER_CPU if res.workers > 1 else 0)
    gpus_needed = res.workers * res.gpus_per_worker
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if gpus_needed and gpus == 0:
        raise ValueError(f"--gpus-per-worker {res.gpus_per_worker}: the Ray cluster has no GPUs")
    if gpus_needed > gpus:
        raise ValueError(
            f"a trial needs {gpus_needed:g} GPUs ({res.workers} workers x {res.gpus_per_worker:g}), "
            f"the Ray cluster has {gpus:g}"
        )
    if cpus_needed > cpus + 1e-9:
        driver = f" + {DRIVER_CPU:g} for its driver" if res.workers > 1 else ""
        raise ValueError(
            f"a trial needs {cpus_needed:g} CPUs ({res.workers} workers x {res.cpus_per_worker:g}{driver}), the Ray "
            f"cluster has {cpus:g}; lower --cpus-per-worker or --workers-per-trial"
        )
    fit = math.floor(cpus / cpus_needed + 1e-9)
    if gpus_needed:
        fit = min(fit, math.floor(gpus / gpus_needed + 1e-9))
    fit = max(1, fit)
    return min(fit, settings.max_concurrent) if settings.max_concurrent else fit


def protonet_trial(config: dict[str, Any], shared: Any, resources: TrialResources, study_path: str) -> None:
    """The Tune trainable: one trial = one Ray Train run (or the same loop in-process for one worker)."""
    from ray import tune

    from fsl.distributed.protonet_train import run_in_process, run_train_trial

    if resources.workers > 1:
        run_name = f"train-{tune.get_context().get_trial_id()}"  # fixed per trial: a restart resumes
        run_train_trial(config, shared, resources, study_path, run_name)
    else:
        run_in_process(config, shared, resources)


def _initial_points(base: ProtoNetConfig, space: dict[str, Dimension]) -> list[dict[str, Any]]:
    if not space:
        return []
    point = {}
    for name, dim in space.items():
        value = PAPER_RECIPE.get(name, getattr(base, name))
        if name == "train_way" and dim.kind == "int":
            value = int(np.clip(value, dim.low, dim.high))
        if not dim.contains(value):
            return []
        point[name] = value
    return [point]


def build_callback(plan: StudyPlan) -> Any:
    from fsl.tracking.mlflow_callback import MLflowStudyCallback

    s, base = plan.settings, plan.base
    study_params = {
        "data": str(plan.data.root),
        "episodes_file": str(plan.data.episodes_file),
        "num_samples": s.num_samples,
        "workers_per_trial": s.resources.workers,
        "gpus_per_worker": s.resources.gpus_per_worker,
        "seed": s.seed,
        "search_space": "; ".join(f"{n}={d.describe()}" for n, d in plan.space.items()) or "none (fixed)",
        **{k: v for k, v in base.to_dict().items() if k not in plan.space},
    }
    return MLflowStudyCallback(
        tracking_uri=s.tracking_uri,
        experiment=s.experiment,
        study_name=s.study_name,
        study_path=s.study_path,
        searched=list(plan.space),
        study_params=study_params,
        study_metrics={"untrained_val_acc": plan.untrained[0], "untrained_val_acc_ci95": plan.untrained[1]},
        results_dir=str(plan.results_dir),
        tags={"fsl.dataset": plan.data.root.name},
    )


def run_study(plan: StudyPlan) -> StudyOutcome:
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from fsl.distributed.placement import ReleaseTrainPlacementGroups
    from fsl.distributed.protonet_train import SharedData
    from fsl.study.progress import ProgressPrinter

    s, base = plan.settings, plan.base
    start_ray(s)
    max_concurrent = concurrency(s)
    shared = SharedData.put(plan.data.train, plan.data.val, plan.data.val_episodes)
    res = s.resources
    trial_resources = {"CPU": DRIVER_CPU} if res.workers > 1 else res.per_worker
    trainable = tune.with_resources(
        tune.with_parameters(protonet_trial, shared=shared, resources=res, study_path=s.study_path),
        trial_resources,
    )
    if s.resume:
        tuner = tune.Tuner.restore(s.study_path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        fixed = {k: v for k, v in base.to_dict().items() if k not in plan.space}
        param_space = {**fixed, **{name: dim.to_tune() for name, dim in plan.space.items()}}
        # With every dimension fixed there is nothing to search: the trials are plain training runs.
        searcher = (
            OptunaSearch(
                metric="val_acc",
                mode="max",
                # Explicit and seeded: Optuna 5 changed TPE's defaults, and a study must be reproducible.
                sampler=optuna.samplers.TPESampler(
                    seed=s.seed, n_startup_trials=max(3, min(10, s.num_samples // 3)), multivariate=True
                ),
                points_to_evaluate=_initial_points(base, plan.space) or None,
            )
            if plan.space
            else None
        )
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric="val_acc",
            mode="max",
            max_t=base.epochs,
            grace_period=s.grace_period or max(1, base.epochs // 4),
            reduction_factor=s.reduction_factor,
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=s.num_samples,
                max_concurrent_trials=max_concurrent,
                trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=s.study_name,
                storage_path=s.storage,
                callbacks=[
                    build_callback(plan),
                    ProgressPrinter(list(plan.space), base.epochs, s.num_samples),
                    ReleaseTrainPlacementGroups(),
                ],
                failure_config=tune.FailureConfig(max_failures=s.trial_max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=0,  # ProgressPrinter writes one line per event instead of Tune's large tables
            ),
        )
    tuner.fit()
    return _outcome(plan)


def _outcome(plan: StudyPlan) -> StudyOutcome:
    from mlflow import MlflowClient

    from fsl.tracking.mlflow_callback import find_study_run

    results_csv = plan.results_dir / RESULTS_CSV
    table = pd.read_csv(results_csv) if results_csv.is_file() else pd.DataFrame()
    finished = table.dropna(subset=["best_val_acc"]) if not table.empty else table
    best = finished.iloc[0].to_dict() if not finished.empty else None
    client = MlflowClient(plan.settings.tracking_uri)
    experiment = client.get_experiment_by_name(plan.settings.experiment)
    parent = find_study_run(client, experiment.experiment_id, plan.settings.study_path) if experiment else None
    return StudyOutcome(table, best, results_csv, parent, experiment.experiment_id if experiment else None)
