"""GPU check of the learning code: the ProtoNet and BYOL training loops on CUDA in fp32 and bf16 (with and
without channels_last), each checked to train (finite loss that falls, float32 weights) and timed.

It imports torch, numpy, the project's learning code (fsl.data, fsl.models, fsl.methods, fsl.train) and
bench.common only, so it runs on a bare CUDA machine with torch, torchvision, numpy, pandas and pillow installed:
no Ray, no MLflow, no network. The images are the demo data set's classes, rendered in memory.

    python bench/gpu_check.py                        # CUDA; ProtoNet Conv4 84 px 30-way, BYOL ResNet50 batch 256
    python bench/gpu_check.py --arch resnet18 --batch-size 512 --image-size 96
    python bench/gpu_check.py --device cpu --quick   # tiny sizes, seconds: a smoke test of this script

Throughput is measured over whole epochs after a warm-up epoch: the training steps plus what every epoch of
the loop also does (a small evaluation or k-NN probe, and one CPU copy of the weights for the checkpoint), as in
a study. Exit status: 0 when every row passes, 1 when a loss is not finite or does not fall, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run from a checkout without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import synchronize  # noqa: E402
from fsl.data.decoded import DecodedSplit  # noqa: E402
from fsl.data.demo import COMBOS, class_label, render_class  # noqa: E402
from fsl.data.episodes import draw_fixed_episodes  # noqa: E402
from fsl.train.byol_method import train_byol  # noqa: E402
from fsl.train.config import BYOLConfig, ProtoNetConfig  # noqa: E402
from fsl.train.parallel import Placement  # noqa: E402
from fsl.train.protonet_method import train_protonet  # noqa: E402
from fsl.train.run_state import TrainingDiverged  # noqa: E402

# (precision, channels_last) of the rows run for each loop.
VARIANTS = (("fp32", False), ("bf16", False), ("bf16", True))


@dataclass(frozen=True)
class Sizes:
    protonet_image_size: int
    train_way: int
    n_query: int
    episodes: int  # per epoch
    epochs: int  # the first is the warm-up, not timed
    arch: str
    batch_size: int
    image_size: int  # BYOL's
    steps: int  # BYOL steps per epoch
    head_width: int
    projection_dim: int
    train_classes: int
    images_per_class: int


def sizes_from(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes(
            protonet_image_size=16, train_way=5, n_query=5, episodes=6, epochs=3, arch="resnet18", batch_size=8,
            image_size=16, steps=2, head_width=32, projection_dim=16, train_classes=8, images_per_class=12,
        )  # fmt: skip
    return Sizes(
        protonet_image_size=84, train_way=30, n_query=15, episodes=args.episodes, epochs=args.epochs, arch=args.arch,
        batch_size=args.batch_size, image_size=args.image_size, steps=args.steps, head_width=4096, projection_dim=256,
        train_classes=32, images_per_class=max(20, -(-args.batch_size // 32)),  # at least one batch of images
    )  # fmt: skip


@dataclass
class Row:
    loop: str
    precision: str
    channels_last: bool
    throughput: float = math.nan
    unit: str = ""
    losses: tuple[float, ...] = ()
    peak_gib: float = math.nan
    problem: str = ""

    @property
    def passed(self) -> bool:
        return not self.problem


def render_split(name: str, combos: list[tuple[int, int, int]], per_class: int, size: int, seed: int) -> DecodedSplit:
    """Demo images of the given (shape, hue, texture) classes, rendered in memory."""
    rng = np.random.default_rng(seed)
    images = np.concatenate([render_class(*combo, per_class, size, rng) for combo in combos])
    labels = np.repeat(np.arange(len(combos)), per_class)
    ids = tuple(str(i) for i in range(len(labels)))
    return DecodedSplit(name, images, labels, tuple(class_label(c) for c in combos), ids)


def timed_run(
    row: Row, device: torch.device, per_epoch: int, run: Callable[[Callable[[dict, dict], None]], None], loss_key: str
) -> Row:
    """Run one loop, recording each epoch's loss and end time; fill in the row's throughput and checks."""
    ends: list[float] = []
    losses: list[float] = []
    problems: list[str] = []

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        synchronize(device)
        ends.append(time.perf_counter())
        losses.append(float(metrics[loss_key]))
        wrong = [k for k, v in state["model"].items() if v.is_floating_point() and v.dtype != torch.float32]
        if wrong and not problems:
            problems.append(f"weights not float32 ({wrong[0]}: {state['model'][wrong[0]].dtype})")

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        run(report)
    except TrainingDiverged as err:
        problems.append(f"diverged: {err}")
    if device.type == "cuda":
        row.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
    row.losses = tuple(losses)
    if len(ends) >= 2:
        row.throughput = per_epoch * (len(ends) - 1) / (ends[-1] - ends[0])
    if losses and not all(math.isfinite(loss) for loss in losses):
        problems.append("loss not finite")
    elif len(losses) >= 2 and not losses[-1] < losses[0]:
        problems.append("loss did not fall")
    row.problem = "; ".join(problems)
    return row


def protonet_rows(sizes: Sizes, device: torch.device, seed: int) -> list[Row]:
    order = np.random.default_rng(seed).permutation(len(COMBOS))
    combos = [COMBOS[i] for i in order]
    size = sizes.protonet_image_size
    train = render_split("train", combos[: sizes.train_classes], sizes.images_per_class, size, seed)
    val = render_split("val", combos[sizes.train_classes : sizes.train_classes + 5], 1 + sizes.n_query, size, seed + 1)
    episodes = draw_fixed_episodes(val.labels, n_way=5, k_shot=1, n_query=sizes.n_query, n_episodes=10, seed=seed)
    rows = []
    for precision, channels_last in VARIANTS:
        cfg = ProtoNetConfig(
            lr=1e-3, train_way=sizes.train_way, n_way=5, k_shot=1, n_query=sizes.n_query, image_size=size,
            epochs=sizes.epochs, episodes_per_epoch=sizes.episodes, eval_episodes=len(episodes), schedule="none",
            precision=precision, channels_last=channels_last, seed=seed,
        )  # fmt: skip
        name = f"ProtoNet Conv4 {sizes.train_way}-way 1-shot {sizes.n_query}-query {size}px"
        row = Row(name, precision, channels_last, unit="episodes/s")

        def run(report: Callable[[dict, dict], None], cfg: ProtoNetConfig = cfg) -> None:
            train_protonet(cfg, train, val, episodes, report, Placement(device))

        rows.append(timed_run(row, device, sizes.episodes, run, "train_loss"))
        print(f"  {format_row(rows[-1])}", flush=True)
    return rows


def byol_rows(sizes: Sizes, device: torch.device, seed: int) -> list[Row]:
    order = np.random.default_rng(seed + 2).permutation(len(COMBOS))
    combos = [COMBOS[i] for i in order]
    train = render_split("train", combos[: sizes.train_classes], sizes.images_per_class, sizes.image_size, seed + 2)
    probe = render_split("probe", combos[sizes.train_classes : sizes.train_classes + 4], 8, sizes.image_size, seed + 3)
    rows = []
    for precision, channels_last in VARIANTS:
        cfg = BYOLConfig(
            lr=1e-3, arch=sizes.arch, batch_size=sizes.batch_size, head_width=sizes.head_width,
            projection_dim=sizes.projection_dim, image_size=sizes.image_size, epochs=sizes.epochs,
            steps_per_epoch=sizes.steps, schedule="none", probe_k=5, precision=precision,
            channels_last=channels_last, seed=seed,
        )  # fmt: skip
        name = f"BYOL {sizes.arch} batch {sizes.batch_size} {sizes.image_size}px"
        row = Row(name, precision, channels_last, unit="images/s")

        def run(report: Callable[[dict, dict], None], cfg: BYOLConfig = cfg) -> None:
            train_byol(cfg, train, probe, report, Placement(device))

        rows.append(timed_run(row, device, sizes.steps * sizes.batch_size, run, "byol_loss"))
        print(f"  {format_row(rows[-1])}", flush=True)
    return rows


HEADER = "| loop | precision | channels_last | throughput | loss first -> last epoch | peak GiB | check |"


def format_row(row: Row) -> str:
    throughput = f"{row.throughput:,.1f} {row.unit}" if math.isfinite(row.throughput) else "-"
    loss = f"{row.losses[0]:.4f} -> {row.losses[-1]:.4f}" if row.losses else "-"
    peak = f"{row.peak_gib:.2f}" if math.isfinite(row.peak_gib) else "-"
    check = "pass" if row.passed else f"FAIL: {row.problem}"
    cells = [row.loop, row.precision, "yes" if row.channels_last else "no", throughput, loss, peak, check]
    return "| " + " | ".join(cells) + " |"


def describe(device: torch.device) -> list[str]:
    lines = [f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), numpy {np.__version__}"]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        lines.append(
            f"device {device}: {torch.cuda.get_device_name(index)} (compute capability {major}.{minor}, "
            f"bf16 {'native' if major >= 8 else 'emulated or unsupported'})"
        )
    else:
        lines.append(f"device cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    lines.append(
        f"TF32: matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, "
        f"cuDNN convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}; "
        f"cudnn.benchmark {'on' if torch.backends.cudnn.benchmark else 'off'} (torch's defaults, as in the studies)"
    )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds on a CPU): checks the script itself")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per row; the first is a warm-up (default 4)")
    parser.add_argument("--episodes", type=int, default=100, help="ProtoNet training episodes per epoch (default 100)")
    parser.add_argument("--arch", default="resnet50", choices=("resnet18", "resnet50"), help="BYOL backbone")
    parser.add_argument("--batch-size", type=int, default=256, help="BYOL images per step (default 256)")
    parser.add_argument("--image-size", type=int, default=84, help="BYOL image size in pixels (default 84)")
    parser.add_argument("--steps", type=int, default=50, help="BYOL steps per epoch (default 50)")
    parser.add_argument("--only", choices=("protonet", "byol"), help="run one loop only")
    parser.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's; 1 with --quick on a CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("epochs", "episodes", "batch_size", "steps"):
        if getattr(args, name) < (2 if name == "epochs" else 1):
            parser.error(f"--{name.replace('_', '-')} must be >= {2 if name == 'epochs' else 1}")
    if args.image_size < 16:
        parser.error("--image-size must be >= 16")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(f"error: --device {args.device}: not a device name (cuda, cuda:N or cpu)", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"error: --device {args.device}: CUDA is not available here (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}, {torch.cuda.device_count()} GPUs visible); "
            "pass --device cpu to check on the CPU",
            file=sys.stderr,
        )
        return 2
    if device.type not in ("cuda", "cpu"):
        print(f"error: --device {args.device}: expected cuda, cuda:N or cpu", file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        print(f"error: --device {args.device}: only {torch.cuda.device_count()} GPUs are visible", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.zeros(1, device=device)  # create the CUDA context before anything is timed
    threads = args.threads or (1 if args.quick and device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)  # tiny models on a shared CPU run fastest on one thread
    sizes = sizes_from(args)
    print("\n".join(describe(device)))
    print(
        f"each row: {sizes.epochs} epochs of the loop; throughput over epochs 2..{sizes.epochs} (training steps plus "
        "each epoch's small evaluation and CPU copy of the weights)",
        flush=True,
    )
    started = time.perf_counter()
    rows: list[Row] = []
    if args.only in (None, "protonet"):
        rows += protonet_rows(sizes, device, args.seed)
    if args.only in (None, "byol"):
        rows += byol_rows(sizes, device, args.seed)
    print()
    print(HEADER)
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(format_row(row))
    failed = [row for row in rows if not row.passed]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} rows passed in {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
