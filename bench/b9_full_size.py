"""b9: what the ProtoNet study costs at full data size, on the Mini-ImageNet stand-in (fsl.data.standins: 64 / 16
/ 20 classes x 600 JPEG images at 84 px, made on first use in about a minute) and the Office-Home stand-in
(65 classes, about 15,500 JPEGs of 200-420 px, decoded at 128 px as the settings study does).

- Decode: train + val decoded cold (a fresh cache folder) by the project's decoder (`fsl.data.decoded`: the
  split's checks, a thread pool, one uint8 array) against the bare library work on the same files and threads
  (PIL open + convert + resize in a thread pool of the same size, nothing kept): images/s, and the process's CPU
  seconds per wall second (2.0 = both cores of a 2-core machine busy).
- Object store: the bytes the study's one `ray.put` of the decoded data adds to Ray's shared memory (/dev/shm,
  where the object store keeps its objects on Linux), against the arrays' raw uint8 size. Target: one copy, at
  most 1.2x the raw size.
- Driver: the growth of the driver's resident memory (RSS, sampled every 50 ms) from before planning to the end
  of the study, and at its peak, against the raw size (in the note).
- A trial's private memory (USS, as b7 measures it, with its data in hand before training) on the full-size data
  against the same trial on the demo data at the same image size (80 classes x 60 images): target, independent
  of the data's size (the full-size trial holds at most 10% more).
- Time from the start of planning (cached decode, checks, the untrained baseline on the 600 fixed episodes, the
  study's start) to the start of the first trial's first epoch, against the same on the demo data, Ray already
  up: target within 2x (the untrained baseline embeds every val image, 9,600 against 960, the rest should
  not grow with the data).
- The Office-Home settings study (setting A, ResNet50 at 128 px, one trial) on the Office stand-in against the
  Office demo data made at 128 px (40 classes x 40 images): the same shared-memory, driver and trial-memory
  figures and the time to the first epoch. Its budget is small: the trial holds (and reads) the whole data, then
  trains and evaluates on OFFICE_BUDGET images of each split, since a full ResNet50 epoch on 12,000 images takes
  tens of minutes on a CPU.

quick=True runs the same steps on small stand-ins (a smoke test of this file).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.b4_ray_overhead import ray_session, run_study_quietly, study_workspace
from bench.b7_memory import measuring, shared_entry, trial_results
from bench.common import Row, bench_cache_dir, demo_data, make_row
from fsl.data.decoded import DecodedSplit
from fsl.data.demo import ensure_office_demo_dataset
from fsl.distributed.train_trial import TrialResources
from fsl.study.runner import StudyOptions, StudyPlan
from fsl.train.config import ProtoNetConfig

MB = 1024**2
FIXED = ["lr=0.001", "augment=none", "head_depth=0", "distance=euclidean", "train_way=5"]
OFFICE_BUDGET = 256  # images of each split the Office trial trains and evaluates on
SHM = Path("/dev/shm")


@dataclasses.dataclass(frozen=True)
class Sizes:
    quick: bool

    @property
    def image_size(self) -> int:
        return 16 if self.quick else 84

    @property
    def office_size(self) -> int:
        return 16 if self.quick else 128

    @property
    def eval_episodes(self) -> int:
        return 10 if self.quick else 600


def mini_root(work: Path, sizes: Sizes) -> Path:
    from fsl.data.standins import ensure_standin, write_mini_standin

    if not sizes.quick:
        return ensure_standin("mini")
    root = work / "mini"
    episodes = {"n_way": 5, "k_shot": 1, "n_query": 15, "n_episodes": sizes.eval_episodes}
    write_mini_standin(root, splits={"train": 5, "val": 5, "test": 1}, per_class=20, image_size=16, episodes=episodes)
    return root


def office_root(work: Path, sizes: Sizes) -> Path:
    from fsl.data.standins import ensure_standin, write_office_standin

    if not sizes.quick:
        return ensure_standin("office")
    root = work / "office"
    write_office_standin(root, n_classes=4, n_images=60, sides=(20, 40))
    return root


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode_figures(root: Path, image_size: int, cache: Path) -> dict[str, float]:
    """Cold decode of train + val by the project's decoder and by bare PIL on the same threads."""
    from PIL import Image

    from fsl.data.decoded import decode_split
    from fsl.data.sources import read_split

    sources = [read_split(root, split) for split in ("train", "val")]
    images = sum(len(s) for s in sources)
    threads = min(8, os.cpu_count() or 1)  # what decode_split uses

    def bare(path: Path) -> None:
        with Image.open(path) as image:
            image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR).tobytes()

    figures: dict[str, float] = {"images": images, "threads": threads}
    for side in ("baseline", "ours"):  # the files are in the page cache for both: b9 runs on made data
        shutil.rmtree(cache, ignore_errors=True)
        started, cpu = time.perf_counter(), _cpu_s()
        if side == "ours":
            raw = sum(decode_split(source, image_size, cache).images.nbytes for source in sources)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(bare, [p for s in sources for p in s.paths]))
        wall = time.perf_counter() - started
        figures[f"{side}_s"], figures[f"{side}_cores"] = wall, (_cpu_s() - cpu) / wall
    figures["raw_mb"] = raw / MB
    started = time.perf_counter()
    for source in sources:
        decode_split(source, image_size, cache)
    figures["cached_s"] = time.perf_counter() - started
    return figures


@contextmanager
def sampled(read: Any, every_s: float = 0.05) -> Any:
    """Sample read() every `every_s` seconds in a thread while the block runs; yields the list of samples."""
    samples: list[float] = [read()]
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            samples.append(read())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()
        samples.append(read())


def _shm_used() -> float:
    return shutil.disk_usage(SHM).used / MB if SHM.is_dir() else float("nan")


def warm_cache(root: Path, image_size: int, cache: Path) -> Path:
    """Decode train and val into `cache` (if not there yet), so that a study's planning reads them from it."""
    from fsl.data.decoded import decode_split
    from fsl.data.sources import read_split

    for split in ("train", "val"):
        decode_split(read_split(root, split), image_size, cache)
    return cache


def protonet_plan(root: Path, sizes: Sizes, cache: Path) -> Callable[[StudyOptions], StudyPlan]:
    """The ProtoNet study (one epoch of 2 episodes) with the trial measuring itself, its data decoded in `cache`."""
    from fsl.study.protonet_study import plan_study

    base = ProtoNetConfig(
        epochs=1, episodes_per_epoch=2, eval_episodes=sizes.eval_episodes, image_size=sizes.image_size, n_query=15
    )
    warm_cache(root, sizes.image_size, cache)
    return lambda options: dataclasses.replace(plan_study(root, base, FIXED, options, cache), entry=shared_entry)


def office_plan(root: Path, sizes: Sizes, cache: Path) -> Callable[[StudyOptions], StudyPlan]:
    """The Office-Home settings study, setting A alone (no backbone to pre-train), one epoch on a small budget."""
    from fsl.study.office_study import plan_office_study
    from fsl.train.config import ClassifierConfig

    base = ClassifierConfig(epochs=1, image_size=sizes.office_size, arch="resnet18" if sizes.quick else "resnet50")
    if sizes.quick:  # the quick stand-in has about 50 train images
        base = dataclasses.replace(base, batch_size=16)
    warm_cache(root, sizes.office_size, cache)
    return lambda options: dataclasses.replace(
        plan_office_study(root, base, [], options, chosen=("A",), cache_dir=cache), entry=office_budget_entry
    )


def budget(split: DecodedSplit, n: int) -> DecodedSplit:
    """n images spread over the split (every class kept in view), as a small copy."""
    rows = np.linspace(0, len(split) - 1, min(n, len(split))).astype(int)
    return dataclasses.replace(
        split, images=split.images[rows], labels=split.labels[rows], ids=tuple(split.ids[i] for i in rows)
    )


def office_budget_entry(config, data, report, placement, resume_state, prepare_model) -> None:  # noqa: ANN001
    """The settings study's trial holding the whole data (and measuring itself with every page read), then
    training and evaluating on OFFICE_BUDGET images of each split."""
    from fsl.train.entries import run_classifier

    measured = measuring(report, data)
    small = {**data, "train": budget(data["train"], OFFICE_BUDGET), "val": budget(data["val"], OFFICE_BUDGET)}
    run_classifier(config, small, measured, placement, resume_state, prepare_model)


def study_figures(plan_for: Callable[[StudyOptions], StudyPlan], work: Path, name: str) -> dict[str, float]:
    """One 1-trial study: the driver's RSS growth, the shared memory it adds, the trial's USS holding its data,
    and the stages up to the first epoch."""
    import psutil

    ray_session()
    me = psutil.Process()
    options = StudyOptions(
        study_name=name, storage=str(work / "results"), tracking_uri=f"sqlite:///{work}/mlflow.db",
        experiment="bench-b9", num_samples=1, resources=TrialResources(1, 1.0),
    )  # fmt: skip
    shm_before = _shm_used()
    with sampled(lambda: me.memory_info().rss / MB) as rss, sampled(_shm_used) as shm:
        started = time.time()
        plan = plan_for(options)
        planned = time.time()
        outcome = run_study_quietly(plan, work / "studies.log")
    (result,) = [trial for trial in trial_results(options.study_path)]
    if outcome.best is None or len(result) != 1:
        raise RuntimeError(f"the {name} study did not finish its trial; see {work / 'studies.log'}")
    epoch = result[0]
    raw = sum(plan.shared[split].images.nbytes for split in ("train", "val")) / MB
    return {
        "raw_mb": raw,
        "images": sum(len(plan.shared[split]) for split in ("train", "val")),
        "val_images": len(plan.shared["val"]),
        "driver_peak_mb": max(rss) - rss[0],
        "driver_end_mb": rss[-1] - rss[0],
        "shm_mb": max(shm) - shm_before,
        "trial_uss_mb": epoch["mem_start_uss_mb"],
        "plan_s": planned - started,
        "first_epoch_s": epoch["timestamp"] - epoch["time_total_s"] - started,
        "epoch_s": epoch["time_total_s"],
    }


def measure(quick: bool) -> list[Row]:
    with study_workspace("b9") as work:
        return measure_in(work, Sizes(quick))


def measure_in(work: Path, sizes: Sizes) -> list[Row]:
    made = time.perf_counter()
    mini, office = mini_root(work, sizes), office_root(work, sizes)
    made_s = time.perf_counter() - made
    decode = {
        "mini": decode_figures(mini, sizes.image_size, work / "cache-mini"),
        "office": decode_figures(office, sizes.office_size, work / "cache-office"),
    }
    if sizes.quick:
        demo = demo_data(sizes.image_size, n_train_classes=8, n_val_classes=5, images_per_class=20)
    else:
        demo = demo_data(84)
    # Every study plans from a decoded cache already made (the decode rows time the cold decode).
    full = study_figures(protonet_plan(mini, sizes, work / "cache-mini"), work, "full")
    small = study_figures(protonet_plan(demo, sizes, work / "cache-demo"), work, "demo")
    office_demo = ensure_office_demo_dataset(image_size=sizes.office_size, cache_dir=bench_cache_dir(), **(
        {"n_classes": 4, "train_per_class": 10, "val_per_class": 5} if sizes.quick else {}
    ))  # fmt: skip
    office_full = study_figures(office_plan(office, sizes, work / "cache-office"), work, "office-full")
    office_small = study_figures(office_plan(office_demo, sizes, work / "cache-office-demo"), work, "office-demo")

    rows = []
    for kind, what in (("mini", "Mini-ImageNet"), ("office", "Office-Home")):
        d = decode[kind]
        size = sizes.image_size if kind == "mini" else sizes.office_size
        rows.append(
            make_row(
                f"b9 decode the {what} stand-in (train + val, {d['images']:,.0f} JPEGs) to {size} px: ours vs bare "
                "PIL on the same threads",
                d["images"] / d["ours_s"],
                d["images"] / d["baseline_s"],
                "img/s",
                0.9,
                f"{d['ours_s']:.1f} s against {d['baseline_s']:.1f} s, {d['threads']:.0f} threads; CPU seconds per "
                f"wall second {d['ours_cores']:.2f} (ours) and {d['baseline_cores']:.2f} (bare) of "
                f"{os.cpu_count()} cores; decoded {d['raw_mb']:.0f} MiB of uint8; a second start reads the cache "
                f"in {d['cached_s']:.1f} s",
                samples={"ours": [d["ours_s"]], "baseline": [d["baseline_s"]]},
            )
        )
    rows.append(
        make_row(
            "b9 shared memory the study adds for the full-size Mini data vs its raw uint8 size",
            full["shm_mb"],
            full["raw_mb"],
            "MiB",
            1 / 1.2,
            f"/dev/shm grew by {full['shm_mb']:.0f} MiB during the study for {full['raw_mb']:.0f} MiB of train + val "
            f"pixels; the driver's RSS grew by {full['driver_end_mb']:.0f} MiB "
            f"({full['driver_end_mb'] / full['raw_mb']:.2f}x the raw size) from before planning to the study's end, "
            f"{full['driver_peak_mb']:.0f} MiB ({full['driver_peak_mb'] / full['raw_mb']:.2f}x) at its peak",
            higher_is_better=False,
        )
    )
    rows[-1].target = ">= 0.83x (at most 1.2x the raw size)"
    rows.append(
        make_row(
            f"b9 a trial's private memory holding its data: full-size Mini ({full['raw_mb']:.0f} MiB) vs the demo "
            f"({small['raw_mb']:.0f} MiB), both {sizes.image_size} px",
            full["trial_uss_mb"],
            small["trial_uss_mb"],
            "MiB USS",
            0.9,
            "psutil USS of the trial's process with every byte of its data read, before training (b7's measure); "
            "the data is read zero-copy from the object store, so it should not count",
            higher_is_better=False,
        )
    )
    rows.append(
        make_row(
            "b9 time from planning to the start of the first trial's first epoch: full-size Mini vs the demo",
            full["first_epoch_s"],
            small["first_epoch_s"],
            "s",
            0.5,
            f"planning (decoded cache read, checks, the untrained baseline on {sizes.eval_episodes} episodes, which "
            f"embeds every val image: {full['val_images']:,} against {small['val_images']:,}) took "
            f"{full['plan_s']:.1f} s against {small['plan_s']:.1f} s, the rest is the study's start (one put of the "
            f"data, Tune, the trial's process); the first epoch itself took {full['epoch_s']:.1f} s and "
            f"{small['epoch_s']:.1f} s (2 episodes and the {sizes.eval_episodes} evaluation episodes); Ray already "
            f"up; the stand-ins were made or found in {made_s:.0f} s",
            higher_is_better=False,
        )
    )
    rows.extend(office_rows(office_full, office_small, sizes))
    return rows


def office_rows(full: dict[str, float], small: dict[str, float], sizes: Sizes) -> list[Row]:
    """The Office-Home settings study's rows: memory against the raw size, the trial's memory and the time to its
    first epoch against the Office demo data at the same image size."""
    shm = make_row(
        "b9 shared memory the Office-Home settings study adds for the full-size Office data vs its raw uint8 size",
        full["shm_mb"],
        full["raw_mb"],
        "MiB",
        1 / 1.2,
        f"/dev/shm grew by {full['shm_mb']:.0f} MiB for {full['raw_mb']:.0f} MiB of train + val pixels "
        f"({full['images']:,.0f} images at {sizes.office_size} px); the driver's RSS grew by "
        f"{full['driver_end_mb']:.0f} MiB ({full['driver_end_mb'] / full['raw_mb']:.2f}x the raw size) to the "
        f"study's end, {full['driver_peak_mb']:.0f} MiB ({full['driver_peak_mb'] / full['raw_mb']:.2f}x) at its peak",
        higher_is_better=False,
    )
    shm.target = ">= 0.83x (at most 1.2x the raw size)"
    uss = make_row(
        f"b9 an Office-Home settings trial's private memory holding its data: the stand-in ({full['raw_mb']:.0f} "
        f"MiB) vs the Office demo at {sizes.office_size} px ({small['raw_mb']:.0f} MiB)",
        full["trial_uss_mb"],
        small["trial_uss_mb"],
        "MiB USS",
        0.9,
        "psutil USS of the setting-A trial's process with every byte of its data read, before training",
        higher_is_better=False,
    )
    first = make_row(
        "b9 time from planning to the start of the first Office-Home settings trial's first epoch: the stand-in vs "
        "the Office demo",
        full["first_epoch_s"],
        small["first_epoch_s"],
        "s",
        0.5,
        f"planning (decoded cache read, checks) took {full['plan_s']:.1f} s against {small['plan_s']:.1f} s; the "
        f"first epoch ({OFFICE_BUDGET} train and {OFFICE_BUDGET} val images, "
        f"{'ResNet18' if sizes.quick else 'ResNet50'}) took {full['epoch_s']:.1f} s and {small['epoch_s']:.1f} s; "
        "Ray already up",
        higher_is_better=False,
    )
    return [shm, uss, first]


def run(quick: bool) -> list[Row]:
    return measure(quick)


if __name__ == "__main__":
    import sys

    from bench.run_all import markdown_table

    print(markdown_table(run("--quick" in sys.argv)))
