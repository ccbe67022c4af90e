"""Run a study: Ray Tune with a seeded Optuna TPE sampler and ASHA early stopping (or a grid of settings
run on the same budget), every trial one run of a training loop, tracked in MLflow from the driver.

A study's planner (fsl.study.protonet_study, byol_study, office_study) does everything that can fail on bad
input before Ray starts and returns a `StudyPlan`; `run_study` starts or attaches to Ray, shares the decoded
data through the object store, runs or resumes the Tuner, and summarises.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from fsl.distributed.train_trial import TrialResources
from fsl.study.optuna_store import WarmStart
from fsl.study.space import Dimension
from fsl.tracking.summary import RESULTS_CSV, best_row
from fsl.tracking.uri import check_tracking_server
from fsl.train.config import TrainConfig
from fsl.train.entries import Entry

SAMPLERS = ("tpe", "random")
DRIVER_CPU = 0.01  # a Ray Train trial's own process only launches workers; Ray refuses a zero-CPU bundle


@dataclass(frozen=True)
class StudyOptions:
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
    # Seconds the study waits, with trials pending and none running, for the cluster to add nodes before it stops
    # (saved: --resume continues it). None waits for ever.
    wait_timeout_s: float | None = 1800.0
    # A single-worker trial's process runs the next trial (Tune's reuse_actors); False starts one per trial.
    reuse_trial_processes: bool = True
    warm_start: str | None = None  # an earlier study under the same storage whose finished trials seed the sampler
    verbose: bool = False  # the libraries' INFO logs and Tune's own output too (fsl.study.console)
    ui_port: int = 5000  # the port of the printed `mlflow ui` command
    register_model: str | None = None  # a registered model name the best trials become versions of
    command: str = ""  # the command that started it (fsl-protonet-search), for its study.yaml
    flags: dict[str, Any] = field(default_factory=dict)  # its flags as study.yaml keeps them (fsl.study.study_file)

    @property
    def study_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.study_name}"

    @property
    def storage_is_local(self) -> bool:
        return not urlparse(self.storage).scheme


@dataclass(frozen=True)
class Cells:
    """The rows of an ablation table: one config field set to each value, every cell searched on the same budget."""

    key: str  # the config field that differs between cells, e.g. "distance"
    values: tuple[Any, ...]
    label: str  # a cell's name from its trial config, e.g. "{k_shot}-shot"

    def name(self, config: dict[str, Any]) -> str:
        return self.label.format(**config)


@dataclass(frozen=True)
class StudyPlan:
    """Everything run_study needs, checked before Ray starts."""

    options: StudyOptions
    base: TrainConfig
    space: dict[str, Dimension]  # searched by Optuna (or sampled at random beside a grid)
    entry: Entry  # the training loop every trial runs (fsl.train.entries)
    shared: dict[str, Any]  # what every trial reads: put in the object store once
    metric: str  # reported every epoch and maximised: val_acc, probe_acc
    evaluation: str  # what the metric is measured on, for people: "5-way 1-shot, 600 fixed episodes"
    data_root: Path
    baseline: tuple[float, float] | None = None  # the untrained model's metric and ci95, on the same data
    baseline_name: str = "untrained model"
    initial_points: tuple[dict[str, Any], ...] = ()  # evaluated first (the published recipe)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # run for every value, num_samples each
    cells: Cells | None = None  # an ablation: num_samples trials per cell, each cell its own Optuna search
    derived: dict[str, Callable[[dict[str, Any]], Any]] = field(default_factory=dict)  # from other entries
    early_stopping: bool = True
    sampler: str = "tpe"  # Optuna's sampler over the space: "tpe", or "random" (a baseline to compare TPE with)
    study_params: dict[str, Any] = field(default_factory=dict)  # logged on the MLflow parent run
    tags: dict[str, str] = field(default_factory=dict)  # on the parent and every child run
    trial_tags: tuple[str, ...] = ()  # trial config entries that also become child tags fsl.<name>

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r}: expected one of {', '.join(SAMPLERS)}")

    @property
    def results_dir(self) -> Path:
        if self.options.storage_is_local:
            return Path(self.options.study_path)
        return Path.cwd() / "fsl-summaries" / self.options.study_name

    @property
    def shown(self) -> list[str]:
        """The trial config entries that tell trials apart: in run names, tables and progress lines."""
        return [*self.grid, *([self.cells.key] if self.cells else []), *self.derived, *self.space]

    @property
    def total_trials(self) -> int:
        cells = len(self.cells.values) if self.cells else 1
        return self.options.num_samples * cells * math.prod(len(values) for values in self.grid.values())


@dataclass(frozen=True)
class StudyOutcome:
    table: pd.DataFrame
    best: dict[str, Any] | None
    results_csv: Path
    parent_run_id: str | None
    experiment_id: str | None
    tracking_error: str | None = None  # why MLflow could not be read at the end (the study went on without it)
    model_uri: str | None = None  # the best trial's MLflow Model: models:/NAME@champion when registered


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
    candidates = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix) and restorable(str(p))]
    return max(candidates, key=lambda p: p.stat().st_mtime).name if candidates else None


def restorable(path: str) -> bool:
    from ray.tune import Tuner

    return Tuner.can_restore(path)


RAY_CONNECT_TIMEOUT_S = 10.0  # a cluster that does not accept a TCP connection in this time is not there


def check_ray_address(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail in seconds, with one line, when nothing answers at --address: ray.init would retry for ever.

    `auto` is $RAY_ADDRESS when set; otherwise ray.init looks for a cluster started on this machine and says
    at once when there is none (start_ray turns that into one line). `host:port` is the head's GCS address,
    `ray://host[:10001]` a Ray Client server. Only a TCP connection is tried; what answers is Ray's to check."""
    import socket

    target = (os.environ.get("RAY_ADDRESS") or "") if address == "auto" else address
    if address == "local" or not target:
        return
    if "://" in target and not target.startswith("ray://"):
        return  # another client module: ray.init reports its own errors
    parsed = urlparse(target if "://" in target else f"//{target}")
    try:
        host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else None)
    except ValueError as err:
        raise ValueError(f"--address {address}: not an address ({err})") from None
    if not host or port is None:
        raise ValueError(f"--address {address}: expected HOST:PORT, the head node's address (e.g. 10.0.0.5:6379)")
    where = f"{host}:{port}" + (f" (from {target})" if target != address else "")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise ValueError(
            f"--address {address}: no Ray cluster answers at {where} ({reason} within {timeout_s:g} s); "
            "check the address, or start the cluster (ray start --head)"
        ) from None


def check_options(options: StudyOptions) -> None:
    """The checks every study makes on its flags, storage and name (before loading any data)."""
    if options.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {options.num_samples}")
    if options.max_concurrent is not None and options.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1, got {options.max_concurrent}")
    if options.address and options.num_cpus is not None:
        raise ValueError("--num-cpus sizes a local Ray; a cluster given by --address has its own resources")
    if options.wait_timeout_s is not None and options.wait_timeout_s <= 0:
        raise ValueError(f"--wait-timeout must be > 0 seconds, got {options.wait_timeout_s:g}")
    if options.warm_start and options.resume:
        raise ValueError("--warm-start seeds a new study; a resumed study continues its own sampler history")
    if options.warm_start and not options.storage_is_local:
        raise ValueError(
            f"--warm-start needs a folder as --storage (the earlier study's Optuna storage is read there), "
            f"not {options.storage}"
        )
    if options.reduction_factor < 2:
        raise ValueError(f"ASHA reduction factor must be >= 2, got {options.reduction_factor}")
    if options.address:
        check_ray_address(options.address)
    check_tracking_server(options.tracking_uri)
    check_storage_writable(options.storage)
    exists = restorable(options.study_path)
    if options.resume and not exists:
        raise ValueError(f"--resume: no study to resume at {options.study_path}")
    if not options.resume and (exists or (options.storage_is_local and Path(options.study_path).exists())):
        raise ValueError(
            f"--study-name {options.study_name}: a study already exists at {options.study_path}; "
            "add --resume to continue it, or choose another --study-name"
        )


def start_ray(options: StudyOptions) -> None:
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(**ray_init_args(options))
    except ConnectionError as err:  # --address auto with no cluster on this machine, said at once
        raise ValueError(f"--address {options.address}: {str(err).strip().splitlines()[0]}") from None


def ray_init_args(options: StudyOptions) -> dict[str, Any]:
    """ray.init's arguments for a study: the cluster at --address, or a local Ray of --num-cpus (with the
    dashboard, which gives users the Ray UI and Ray Train its State API); either way every process of the
    study's job (trials, Ray Train workers) starts with the training allocator settings."""
    from fsl.distributed.worker_env import worker_runtime_env
    from fsl.study.console import ray_logging_level

    common = {"runtime_env": worker_runtime_env(), "logging_level": ray_logging_level(options.verbose)}
    if options.address:
        return {"address": options.address, **common}
    return {"num_cpus": options.num_cpus, **common}


def study_trial(
    config: dict[str, Any], entry: Entry, shared: Any, resources: TrialResources, study_path: str, metric: str
) -> None:
    """The Tune trainable: one trial = one Ray Train run (or the same loop in-process for one worker)."""
    from ray import tune

    from fsl.distributed.train_trial import run_in_process, run_train_trial

    if resources.workers > 1:
        run_name = f"train-{tune.get_context().get_trial_id()}"  # fixed per trial: a restart resumes
        run_train_trial(entry, config, shared, resources, study_path, run_name, metric)
    else:
        run_in_process(entry, config, shared, resources, metric)


def build_callback(plan: StudyPlan, cluster_resources: dict[str, float], data_hash: str, study_file: str = "") -> Any:
    from fsl.tracking.datasets import study_datasets
    from fsl.tracking.mlflow_callback import MLflowStudyCallback
    from fsl.tracking.provenance import code_version, hardware, source_tags

    s, base = plan.options, plan.base
    searched = "; ".join(f"{n}={d.describe()}" for n, d in plan.space.items())
    gridded = "; ".join(f"{n}={{{', '.join(map(str, v))}}}" for n, v in plan.grid.items())
    study_params = {
        "data": str(plan.data_root),
        "evaluation": plan.evaluation,
        "num_samples": s.num_samples,
        "workers_per_trial": s.resources.workers,
        "gpus_per_worker": s.resources.gpus_per_worker,
        "seed": s.seed,
        "search_space": searched or "none (fixed)",
        **({"grid": gridded} if gridded else {}),
        **plan.study_params,
        **{k: v for k, v in base.to_dict().items() if k not in plan.shown},  # what every trial shares
    }
    episodes_file = plan.study_params.get("episodes_file")
    episodes_file = Path(episodes_file) if episodes_file else None
    baseline = {}
    if plan.baseline is not None:
        baseline = {f"untrained_{plan.metric}": plan.baseline[0], f"untrained_{plan.metric}_ci95": plan.baseline[1]}
    return MLflowStudyCallback(
        tracking_uri=s.tracking_uri,
        experiment=s.experiment,
        study_name=s.study_name,
        study_path=s.study_path,
        searched=plan.shown,
        study_params=study_params,
        study_metrics=baseline,
        results_dir=str(plan.results_dir),
        metric=plan.metric,
        tags={
            "fsl.dataset": plan.data_root.name,
            "fsl.dataset_hash": data_hash,
            "fsl.code_version": code_version(),
            "fsl.hardware": hardware(cluster_resources),
            **source_tags(),
            **plan.tags,
        },
        trial_tags=plan.trial_tags,
        cell_label=plan.cells.label if plan.cells else None,
        datasets=study_datasets(plan.shared, plan.data_root, episodes_file),
        model_groups=(*plan.grid, *([plan.cells.key] if plan.cells else [])),
        register_model=s.register_model,
        study_file=study_file,
    )


def _param_space(plan: StudyPlan) -> dict[str, Any]:
    from ray import tune

    fixed = {k: v for k, v in plan.base.to_dict().items() if k not in plan.space and k not in plan.grid}
    if plan.cells:
        return fixed  # CellSearch suggests the cell and the searched values
    return {
        **fixed,
        **{name: dim.to_tune() for name, dim in plan.space.items()},
        **{name: tune.grid_search(list(values)) for name, values in plan.grid.items()},
        **{name: tune.sample_from(fn) for name, fn in plan.derived.items()},  # fn(config) -> value
    }


def uses_optuna(plan: StudyPlan) -> bool:
    """Whether the study's trials are suggested by an Optuna sampler (not a grid, ablation cells or nothing)."""
    return bool(plan.space) and not plan.grid and plan.cells is None


def optuna_storage_url(plan: StudyPlan) -> str | None:
    """The study's Optuna storage next to it (fsl.study.optuna_store), for a folder --storage; None keeps the
    sampler in memory (saved by Tune with the study)."""
    from fsl.study.optuna_store import storage_url

    return storage_url(plan.results_dir) if plan.options.storage_is_local and uses_optuna(plan) else None


def _searcher(plan: StudyPlan, data_hash: str = "", warm: WarmStart | None = None) -> Any:
    """Optuna's seeded TPE (or random sampler) over the space (TPE per cell for an ablation), its trials in the
    study's Optuna storage, warm-started when asked; with a grid (or nothing searched), Tune's own variant
    generator."""
    s = plan.options
    if plan.cells:
        from fsl.study.cell_search import CellSearch

        initial = plan.initial_points[0] if plan.initial_points else None
        return CellSearch(plan.cells.key, plan.cells.values, plan.space, s.num_samples, plan.metric, s.seed, initial)
    if not plan.space or plan.grid:
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from fsl.study.optuna_store import prepare_study, quiet_optuna

    if plan.sampler == "random":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=s.seed)
    else:
        # Explicit and seeded: Optuna 5 changed TPE's defaults, and a study must be reproducible.
        sampler = optuna.samplers.TPESampler(
            seed=s.seed, n_startup_trials=max(3, min(10, s.num_samples // 3)), multivariate=True
        )
    storage, url = None, optuna_storage_url(plan)
    if url is not None:
        Path(plan.results_dir).mkdir(parents=True, exist_ok=True)
        prepare_study(url, s.study_name, plan.space, data_hash, warm)
        storage = optuna.storages.RDBStorage(url)
    with quiet_optuna():  # it opens (or creates) its Optuna study here
        return OptunaSearch(
            metric=plan.metric,
            mode="max",
            sampler=sampler,
            points_to_evaluate=list(plan.initial_points) or None,
            storage=storage,
            study_name=s.study_name if storage is not None else None,
        )


def _scheduler(plan: StudyPlan) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    from fsl.study.divergence import DivergenceAwareASHA

    if not plan.early_stopping:
        return FIFOScheduler()  # every trial gets the same budget (a fair comparison of settings)
    return DivergenceAwareASHA(
        time_attr="training_iteration",
        metric=plan.metric,
        mode="max",
        max_t=plan.base.epochs,
        grace_period=plan.options.grace_period or max(1, plan.base.epochs // 4),
        reduction_factor=plan.options.reduction_factor,
    )


def run_study(plan: StudyPlan) -> StudyOutcome:
    import ray
    from ray import tune

    from fsl.distributed.cluster_shape import describe
    from fsl.distributed.placement_groups import ReleaseTrainPlacementGroups
    from fsl.distributed.train_trial import SharedData
    from fsl.study.capacity import check_storage_on_every_node, concurrency
    from fsl.study.console import quiet_libraries
    from fsl.study.divergence import NoRetryAfterDivergence
    from fsl.study.optuna_store import quiet_optuna, read_warm_start
    from fsl.study.progress import ProgressPrinter
    from fsl.study.study_file import write_study_file
    from fsl.study.tune_state import KEEP_CHECKPOINTS, study_tune_env, trial_loggers
    from fsl.study.waiting import (
        StudyWaitedTooLong,
        WaitForResources,
        resuming_with,
        take_expired,
    )
    from fsl.tracking.provenance import dataset_hash

    s = plan.options
    quiet_libraries(s.verbose)
    data_hash = dataset_hash(plan.shared)
    warm = None
    if s.warm_start:  # read and checked before Ray starts
        if not uses_optuna(plan):
            raise ValueError(
                "--warm-start: this study has no Optuna sampler to seed (a grid, ablation cells or nothing searched)"
            )
        warm = read_warm_start(s.storage, s.warm_start, plan.space, data_hash)
        skipped = f"; {warm.skipped} outside this search space skipped" if warm.skipped else ""
        print(f"Warm start: {len(warm.trials)} finished trials of study {s.warm_start!r} seed the sampler{skipped}")
        plan = dataclasses.replace(
            plan,
            study_params={**plan.study_params, "warm_start": s.warm_start, "warm_start_trials": len(warm.trials)},
        )
    start_ray(s)
    max_concurrent, why = concurrency(s, plan.total_trials)
    check_storage_on_every_node(s)
    if s.address:  # a local Ray's share is plain; a cluster's is worth a line
        print(f"Trials at once: up to {max_concurrent} ({why})")
    # Only once the checks against the cluster passed: a refused study leaves no folder behind.
    study_file = write_study_file(plan)
    shared = SharedData.put(plan.shared)
    res = s.resources
    trial_resources = {"CPU": DRIVER_CPU} if res.workers > 1 else res.per_worker
    trainable = tune.with_resources(
        tune.with_parameters(
            study_trial, entry=plan.entry, shared=shared, resources=res, study_path=s.study_path, metric=plan.metric
        ),
        trial_resources,
    )
    asks = describe(res.per_worker) if res.workers == 1 else f"{res.workers} workers of {describe(res.per_worker)}"
    wait = WaitForResources(asks, s.wait_timeout_s)
    if s.resume:
        resuming_with(s.wait_timeout_s)
        tuner = tune.Tuner.restore(s.study_path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(plan),
            tune_config=tune.TuneConfig(
                search_alg=_searcher(plan, data_hash, warm),
                scheduler=_scheduler(plan),
                # A searcher of cells hands out every trial itself; Tune multiplies a grid by num_samples.
                num_samples=plan.total_trials if plan.cells else s.num_samples,
                max_concurrent_trials=max_concurrent,
                trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}",
                # A single-worker trial runs in its Tune actor: the next trial reuses that process instead of
                # starting one (bench b4: 2.4 s per short trial instead of 6.4 s on 2 cores). Not for
                # DDP trials: Tune gives a finished trial 2 s to end before reuse, and a Train worker group
                # takes longer to shut down, which would fail the next trial.
                reuse_actors=res.workers == 1 and s.reuse_trial_processes,
            ),
            run_config=tune.RunConfig(
                name=s.study_name,
                storage_path=s.storage,
                callbacks=[
                    build_callback(plan, ray.cluster_resources(), data_hash, study_file),
                    ProgressPrinter(plan.shown, plan.base.epochs, plan.total_trials, plan.metric),
                    ReleaseTrainPlacementGroups(),
                    NoRetryAfterDivergence(),  # a diverged trial would diverge again
                    wait,
                    *trial_loggers(),
                ],
                failure_config=tune.FailureConfig(max_failures=s.trial_max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
                verbose=0,  # ProgressPrinter writes one line per event instead of Tune's large tables
            ),
        )
    take_expired()
    # Optuna's INFO line on reopening the study's storage; the study prints its own lines
    with quiet_optuna(), study_tune_env(plan.total_trials, s.resume, s.verbose):
        tuner.fit()
    if (expired := take_expired()) is not None:
        raise StudyWaitedTooLong(
            f"no trial could run for {expired.waited_s:.0f} s (--wait-timeout {expired.timeout_s:g}): "
            f"{expired.pending} trial{'s' if expired.pending != 1 else ''} pending, each asking for {asks}, which "
            "the cluster did not provide; the "
            f"study is saved in {s.study_path}: add --resume to continue it once the cluster has the resources"
        )
    return study_outcome(plan)


def study_outcome(plan: StudyPlan) -> StudyOutcome:
    from fsl.tracking.models import CHAMPION
    from fsl.tracking.run_store import RunStore
    from fsl.tracking.uri import failure_reason

    results_csv = plan.results_dir / RESULTS_CSV
    table = pd.read_csv(results_csv) if results_csv.is_file() else pd.DataFrame()
    best = best_row(table, plan.metric)
    store = RunStore.at(plan.options.tracking_uri)
    try:
        experiment = store.client.get_experiment_by_name(plan.options.experiment)
        found = store.study_run(experiment.experiment_id, plan.options.study_path) if experiment else None
        parent = found.info.run_id if found else None
    except Exception as err:  # the store is away: the study's results are in its folder all the same
        return StudyOutcome(table, best, results_csv, None, None, tracking_error=failure_reason(err))
    model_uri = None
    if found is not None:
        registered = found.data.tags.get("fsl.registered_model")  # models:/NAME/<version>
        name = registered.removeprefix("models:/").rsplit("/", 1)[0] if registered else None
        model_uri = f"models:/{name}@{CHAMPION}" if name else found.data.tags.get("fsl.model_uri")
    experiment_id = experiment.experiment_id if experiment else None
    return StudyOutcome(table, best, results_csv, parent, experiment_id, model_uri=model_uri)
