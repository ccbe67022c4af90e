"""b7: memory of concurrent trials on one node: the study puts the decoded data set in Ray's object store once and
every trial reads it zero-copy, against trials that each load their own copy.

Both sides run the same 4-trial ProtoNet study (`fsl.study.protonet_study.plan_study` +
`fsl.study.runner.run_study`, every dimension fixed, 4 trials at once on a local Ray of 4 logical CPUs, 1 thread
each; 2 trials with quick=True) on the demo data set decoded at 84 px (the HW4 image size; 64 train + 16 val
classes of 60 images, about 100 MB of uint8 pixels). Each trial runs 3 short epochs (2 episodes of 5-way 1-shot
15-query, 1 evaluation episode). It measures its own process with psutil's `memory_full_info()` twice: when it
has its data, before training (after reading every byte of it, so that all of it is resident), and at the end
of every epoch; it reports the figures with its metrics:

- USS (unique set size): the pages only this process maps, i.e. what the machine frees when the trial ends and
  what one more trial adds. This is the figure compared.
- PSS (proportional set size): every shared page divided among the processes mapping it; and RSS, which
  counts every mapped page in full, so shared data appears in every trial's RSS (RSS is not summed).

- ours: the project's trial (`fsl.train.entries.run_protonet` given the study's shared data, read with
  `ray.get` from the object store: the arrays are read-only views of shared memory).
- baseline: the same trial, but its entry first loads the train and val splits itself from the decoded cache
  on disk (`np.load` of the project's .npz cache, the cheapest way a trial could get its own copy).

The row compares each side's median USS of a trial holding its data, before training: the target says the data
is held once, i.e. the own-copy trial's USS exceeds ours by at least 90% of the data set's size (then ours holds
at most a tenth of it privately). The note gives the data set's size, PSS and RSS, how many trials overlapped
in time, and the USS during training (medians over trials and epochs): the extra resident memory per
additional trial. That one is dominated by the training step's activations, which the study's allocator
settings (`fsl.distributed.worker_env`) keep for the next step rather than hand back to the kernel, so it is
about a trial's peak and says nothing of the data. One study per side (memory does not depend on load the way
time does).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

from bench.b4_ray_overhead import ray_session, run_study_quietly, study_workspace
from bench.common import Row, decoded_split, demo_data, make_row, median
from fsl.distributed.train_trial import TrialResources
from fsl.study.runner import StudyOptions
from fsl.train.config import ProtoNetConfig

MB = 1024**2
FIXED = ["lr=0.001", "augment=none", "head_depth=0", "distance=euclidean", "train_way=5"]


def _memory(prefix: str) -> dict[str, float]:
    """This process's USS, PSS and RSS in MiB, as metrics named mem_<prefix>uss_mb and so on."""
    import psutil

    info = psutil.Process().memory_full_info()
    return {f"mem_{prefix}{key}_mb": getattr(info, key) / MB for key in ("uss", "pss", "rss")}


def measuring(report: Any, data: dict[str, Any]) -> Any:
    """A report() that adds this process's memory (MiB) to every epoch's metrics, and the memory it had when
    it held its data, before training (every page of the data read first, so all of it is resident)."""
    for name in ("train", "val"):
        int(data[name].images.sum(dtype="uint64"))
    at_start = _memory("start_")

    def measured(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        report({**metrics, **at_start, **_memory("")}, state)

    return measured


def shared_entry(config, data, report, placement, resume_state, prepare_model) -> None:  # noqa: ANN001
    """The project's trial, measuring itself."""
    from fsl.train.entries import run_protonet

    run_protonet(config, data, measuring(report, data), placement, resume_state, prepare_model)


def own_copy_entry(config, data, report, placement, resume_state, prepare_model, root: str, image_size: int) -> None:  # noqa: ANN001
    """The same trial after loading its own train and val splits from the decoded cache on disk."""
    from fsl.train.entries import run_protonet

    own = {
        **data,
        "train": decoded_split(Path(root), "train", image_size),
        "val": decoded_split(Path(root), "val", image_size),
    }
    run_protonet(config, own, measuring(report, own), placement, resume_state, prepare_model)


def trial_results(study_path: str) -> list[list[dict[str, Any]]]:
    """Every trial's result lines (one per epoch)."""
    out = []
    for path in sorted(Path(study_path).glob("trial-*/result.json")):
        out.append([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    return out


def max_overlap(trials: list[list[dict[str, Any]]]) -> int:
    """How many trials ran at the same time, at most (from their start and end times, 1 s resolution)."""
    spans = [(t[-1]["timestamp"] - t[-1]["time_total_s"], t[-1]["timestamp"]) for t in trials if t]
    return max((sum(1 for s, e in spans if s <= start <= e) for start, _ in spans), default=0)


def measure(quick: bool) -> list[Row]:
    with study_workspace("b7") as work:
        return measure_in(work, quick)


def measure_in(work: Path, quick: bool) -> list[Row]:
    import psutil  # noqa: F401  (the bench extra: fail here, as one row, when it is missing)

    from fsl.study.protonet_study import plan_study

    image_size = 16 if quick else 84
    trials = 2 if quick else 4
    root = (
        demo_data(image_size, n_train_classes=8, n_val_classes=5, images_per_class=20)
        if quick
        else demo_data(image_size)
    )
    ray_session()
    base = ProtoNetConfig(
        epochs=2 if quick else 3,
        episodes_per_epoch=1 if quick else 2,
        eval_episodes=1,
        image_size=image_size,
        n_query=15,
    )
    options = StudyOptions(
        study_name="plan", storage=str(work / "results"), tracking_uri=f"sqlite:///{work}/mlflow.db",
        experiment="bench-b7", num_samples=trials, max_concurrent=trials, resources=TrialResources(1, 1.0),
    )  # fmt: skip
    plan = plan_study(root, base, FIXED, options)
    data_mb = sum(plan.shared[name].images.nbytes for name in ("train", "val")) / MB
    entries = {
        "ours": shared_entry,
        "baseline": functools.partial(own_copy_entry, root=str(root), image_size=image_size),
    }
    figures: dict[str, dict[str, list[float]]] = {}
    overlap: dict[str, int] = {}
    for side, entry in entries.items():
        s = dataclasses.replace(options, study_name=side)
        one = dataclasses.replace(plan, options=s, entry=entry)
        outcome = run_study_quietly(one, work / "studies.log")
        results = trial_results(s.study_path)
        if len(results) != trials or outcome.table.empty or (outcome.table["status"] != "TERMINATED").any():
            raise RuntimeError(f"the {side} study did not finish its {trials} trials; see {work / 'studies.log'}")
        lines = [line for trial in results for line in trial]
        keys = ("uss", "pss", "rss", "start_uss", "start_pss", "start_rss")
        figures[side] = {key: [line[f"mem_{key}_mb"] for line in lines] for key in keys}
        overlap[side] = max_overlap(results)

    def summary(side: str) -> str:
        f = figures[side]
        return (
            f"holding the data USS {median(f['start_uss']):.0f}, PSS {median(f['start_pss']):.0f}, RSS "
            f"{median(f['start_rss']):.0f} MiB; training USS {median(f['uss']):.0f}, PSS {median(f['pss']):.0f}, "
            f"RSS {median(f['rss']):.0f} MiB per trial; {overlap[side]} of {trials} trials overlapping"
        )

    ours, own = median(figures["ours"]["start_uss"]), median(figures["baseline"]["start_uss"])
    extra = own - ours
    # Held once: a trial with its own copy must hold at least 90% of the data set more than ours does.
    target = (ours + 0.9 * data_mb) / ours
    row = make_row(
        f"b7 private memory of a trial holding the data ({trials} concurrent, {image_size} px data)",
        ours,
        own,
        "MiB USS",
        target,
        f"decoded data set {data_mb:.0f} MiB (train + val uint8); a trial that loads its own copy holds "
        f"{extra:.0f} MiB more private memory, so ours holds about {max(0.0, data_mb - extra):.0f} MiB of the data "
        f"privately; ours: {summary('ours')}; own copy: {summary('baseline')}; medians over trials (and epochs) of "
        "psutil memory_full_info (USS compared; RSS counts the shared data in every trial; the training USS is "
        "the extra resident memory per additional trial, mostly the step's activations kept by the allocator)",
        higher_is_better=False,
        samples={"ours": figures["ours"]["start_uss"], "baseline": figures["baseline"]["start_uss"]},
    )
    row.target = f">= {target:.2f}x (own copy holds >= 0.9 x the data set more)"
    return [row]


def run(quick: bool) -> list[Row]:
    return measure(quick)


if __name__ == "__main__":
    import sys

    from bench.run_all import markdown_table

    print(markdown_table(run("--quick" in sys.argv)))
