"""What every benchmark module shares: the result row, interleaved median-of-N timing, thread pinning, the
generated demo data set on disk (HW4 layout) and decoded in memory, and a description of the machine.

A benchmark module `bench/bN_<name>.py` exposes `run(quick: bool) -> list[Row]` (see bench/README.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Run from a checkout without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from fsl.data.decoded import DecodedSplit, decode_split, default_cache_dir  # noqa: E402
from fsl.data.demo import write_demo_dataset  # noqa: E402
from fsl.data.episodes import FixedEpisodes, read_fixed_episodes  # noqa: E402
from fsl.data.sources import read_hw4_split  # noqa: E402

# The default number of threads both sides of every comparison run with (BENCH_THREADS overrides it).
DEFAULT_THREADS = 1


@dataclass
class Row:
    """One line of the results table: `ours` against `baseline`, both in `unit`, measured in the same run.

    ratio is ours / baseline when higher is better (throughputs), baseline / ours when lower is better
    (times); either way a ratio above 1 means ours is better. `target` is the text of the goal (">= 2x") and
    `met` whether the ratio reaches it. `samples` keeps every repetition's raw figure of both sides.
    """

    name: str
    ours: float
    baseline: float
    unit: str
    ratio: float
    target: str
    met: bool
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_row(
    name: str,
    ours: float,
    baseline: float,
    unit: str,
    target_ratio: float,
    note: str = "",
    higher_is_better: bool = True,
    samples: dict[str, list[float]] | None = None,
) -> Row:
    """A Row whose ratio and `met` are computed: target_ratio 2.0 means ">= 2x" (ours at least twice as good)."""
    if higher_is_better:
        ratio = ours / baseline if baseline > 0 else math.nan
    else:
        ratio = baseline / ours if ours > 0 else math.nan
    met = math.isfinite(ratio) and ratio >= target_ratio
    return Row(name, ours, baseline, unit, ratio, f">= {target_ratio:g}x", met, note, samples or {})


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def time_interleaved(
    sides: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall-clock seconds of each side's callable, `repeats` times each, alternating the sides every
    repetition (a, b, a, b, ...) so that a change in machine load hits both alike. `warmup` untimed calls of
    each side come first. Returns {side: [seconds per repetition]}; take the median of each.

    Pass a dict as `cpu_times` to also get each call's CPU time of this process (time.process_time: every
    thread of the process, child processes excluded). On a shared machine it is far less noisy than wall
    time, since waiting for a core is not counted; for one-thread, worker-less sides it is the work done."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    if cpu_times is not None:
        cpu_times.update({name: [] for name in sides})
    for rep in range(repeats):
        # Alternate which side goes first, so neither always runs right after the other.
        order = list(sides.items()) if rep % 2 == 0 else list(reversed(sides.items()))
        for name, fn in order:
            cpu_started = time.process_time()
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
            if cpu_times is not None:
                cpu_times[name].append(time.process_time() - cpu_started)
    return times


def bench_device() -> torch.device:
    """Where the benchmarks that can use an accelerator (b1, b6) train both sides: $BENCH_DEVICE, else the CPU.

    On "cuda" both sides' models and batches live on the GPU; each side's data path stays what it is (easyfsl's
    PIL loading runs on the CPU, as it would for a user of it)."""
    device = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"BENCH_DEVICE={device}: CUDA is not available here")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock timing covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_threads() -> int:
    """Threads both sides use: $BENCH_THREADS, else DEFAULT_THREADS."""
    return int(os.environ.get("BENCH_THREADS", DEFAULT_THREADS))


@contextlib.contextmanager
def pinned_threads(n: int | None = None) -> Iterator[int]:
    """torch.set_num_threads(n) for the block (both sides of a comparison run inside it), restored after."""
    n = n or bench_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


# --- data ------------------------------------------------------------------------------------------------


def bench_cache_dir() -> Path:
    """Where generated benchmark data lives: <FSL cache>/bench ($FSL_CACHE_DIR or ~/.cache/fsl)."""
    return default_cache_dir() / "bench"


def demo_data(
    image_size: int,
    n_train_classes: int = 64,
    n_val_classes: int = 16,
    images_per_class: int = 60,
    seed: int = 0,
) -> Path:
    """A demo data set in the HW4 layout (PNG files, train.csv/val.csv, 600 5-way 1-shot 15-query
    val_testcase.csv episodes), written once per shape under bench_cache_dir() and reused."""
    name = f"demo-seed{seed}-{image_size}px-{n_train_classes}+{n_val_classes}x{images_per_class}"
    root = bench_cache_dir() / name
    if (root / "val_testcase_gt.csv").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root.parent))
    try:
        write_demo_dataset(staging, seed, image_size, n_train_classes, n_val_classes, images_per_class)
        try:
            os.rename(staging, root)
        except OSError:
            if not (root / "val_testcase_gt.csv").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def decoded_split(root: Path, split: str, image_size: int) -> DecodedSplit:
    """The split decoded to uint8 arrays the project's way (fsl.data.decoded, cached beside the data)."""
    return decode_split(read_hw4_split(root, split), image_size, bench_cache_dir() / "decoded-cache")


def fixed_episodes(root: Path, val: DecodedSplit) -> FixedEpisodes:
    """The val_testcase.csv episodes as row indices into the decoded val split."""
    id_to_row = {image_id: i for i, image_id in enumerate(val.ids)}
    return read_fixed_episodes(root / "val_testcase.csv", root / "val_testcase_gt.csv", id_to_row, val.labels)


# --- the machine -----------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, torch, its default threads, and the load at the time."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "bench_threads": bench_threads(),
        "cuda": torch.cuda.is_available(),
        "bench_device": str(bench_device()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1_5_15min": [round(x, 2) for x in load],
        "malloc": " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")) or "default",
    }
