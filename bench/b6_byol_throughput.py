"""b6: BYOL pre-training throughput, images/s: our BYOL trainer against lucidrains' byol-pytorch 0.8.x.

Both sides train the same network on the same images, with the same threads, batch size and optimizer:
torchvision's ResNet-18 (random init) at 32 px (the demo data set's size and the BYOL study's demo default), a
projector and predictor of Linear(4096) -> BatchNorm -> ReLU -> Linear(256) (the paper's, and both libraries'
defaults), Adam lr 3e-4 with weight decay 1e-6, both views through the networks in one batch, an EMA target.
Batches are drawn the same way on both sides: rows of the demo training split decoded once to uint8 (N, H, W, 3)
(`fsl.data.decoded`), converted to float per batch. The training process does all the work (no DataLoader
workers) on both sides.

- ours: `fsl.train.byol_method.train_byol`, the function a BYOL study's trial runs, with its own augmentation
  (`fsl.data.byol_augment`: the paper's asymmetric views, every parameter drawn per image, batched). Each call
  trains 2 epochs of S steps; the rate is the second epoch's (S x batch images over the time between the two
  epochs' reports), so model construction and the first steps are not timed. The timed epoch includes what the
  loop also does once per epoch: a k-NN probe on 40 labelled images and a CPU copy of the weights (a small
  cost that counts against ours). Three configurations of ours, each its own row: the defaults (float32,
  NCHW: the like-for-like row), `channels_last=True` (the same arithmetic in NHWC, oneDNN's and cuDNN's
  preferred layout) and `channels_last=True, precision="bf16"` (bfloat16 autocast: other arithmetic than the
  baseline's float32, so that row is marked as such).
- baseline: `byol_pytorch.BYOL(resnet18, image_size, hidden_layer="avgpool")` (0.8.x: no simplicial
  embedding), trained with the loop of its README (`loss = learner(x)`, backward, step,
  `update_moving_average()`), 1 untimed warm-up step, then S timed steps. Two baselines:
  - "per-image aug": its default augmentation (ColorJitter(0.8, 0.8, 0.8, 0.2) p 0.3, grayscale p 0.2, flip,
    3x3 Gaussian blur p 0.2, RandomResizedCrop, Normalize) applied image by image (each image draws its own
    parameters, as torchvision does inside a DataLoader), which is the like-for-like comparison;
  - "as shipped": the same default augmentation applied to the whole batch tensor, as byol-pytorch does: one
    draw of the random parameters per batch (every image of a batch gets the same crop, jitter and flip),
    which is less work and less augmentation than per-image parameters.

A third row times the two-view augmentation alone (no network) on one batch: ours against the default
transform applied per image (and, in the note, per batch as shipped).

Sides alternate every repetition (and which goes first); the table reports medians. The note gives the ratio
of process CPU times too, which does not count waiting for a core on a loaded machine.

With BENCH_DEVICE=cuda both sides train on the GPU with the images there (each side augments on the GPU), at
the HW4 study's scale instead: ResNet-50, 84 px, batch 256, 10 timed steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.common import (
    Row,
    bench_device,
    decoded_split,
    demo_data,
    make_row,
    median,
    pinned_threads,
    synchronize,
    time_interleaved,
)
from fsl.data.augment import to_unit_float
from fsl.data.decoded import DecodedSplit
from fsl.train.byol_method import train_byol
from fsl.train.config import BYOLConfig
from fsl.train.parallel import Placement

LR, WEIGHT_DECAY = 3e-4, 1e-6
HEAD_WIDTH, PROJECTION_DIM = 4096, 256


class Measured:
    """One timed window: images trained, wall seconds and process CPU seconds."""

    def __init__(self, images: int, wall: float, cpu: float) -> None:
        self.images, self.wall, self.cpu = images, wall, cpu

    @property
    def rate(self) -> float:
        return self.images / self.wall

    @property
    def cpu_rate(self) -> float:
        return self.images / self.cpu


class OurSide:
    """train_byol for 2 epochs of `steps` steps; the second epoch is timed."""

    def __init__(
        self,
        train: DecodedSplit,
        probe: DecodedSplit,
        arch: str,
        image_size: int,
        batch: int,
        steps: int,
        device: torch.device,
        **arithmetic: Any,
    ) -> None:
        self.train, self.probe, self.placement = train, probe, Placement(device)
        self.cfg = BYOLConfig(
            lr=LR, weight_decay=WEIGHT_DECAY, arch=arch, batch_size=batch, head_width=HEAD_WIDTH,
            projection_dim=PROJECTION_DIM, image_size=image_size, epochs=2, steps_per_epoch=steps,
            schedule="none", probe_k=5, **arithmetic,
        )  # fmt: skip
        self.calls = 0

    def __call__(self) -> Measured:
        self.calls += 1
        marks: list[tuple[float, float]] = []
        losses: list[float] = []

        def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
            marks.append((time.perf_counter(), time.process_time()))
            losses.append(float(metrics["byol_loss"]))

        train_byol(self.cfg.replace(seed=self.calls), self.train, self.probe, report, self.placement)
        if not all(math.isfinite(loss) for loss in losses):
            raise RuntimeError(f"our BYOL loss is not finite: {losses}")
        (wall_0, cpu_0), (wall_1, cpu_1) = marks
        return Measured(self.cfg.steps_per_epoch * self.cfg.batch_size, wall_1 - wall_0, cpu_1 - cpu_0)


class PerImage(nn.Module):
    """Apply a transform to each image of a (B, C, H, W) batch on its own, so each draws its own parameters."""

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in x])


class LucidrainsSide:
    """byol-pytorch's BYOL with its default augmentation, per batch (as shipped) or per image."""

    def __init__(
        self,
        train: DecodedSplit,
        arch: str,
        image_size: int,
        batch: int,
        steps: int,
        per_image: bool,
        device: torch.device,
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(train.images)).to(device)
        self.arch, self.image_size, self.batch, self.steps, self.per_image = arch, image_size, batch, steps, per_image
        self.device = device
        self.calls = 0

    def learner(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        import torchvision
        from byol_pytorch import BYOL

        learner = BYOL(
            getattr(torchvision.models, self.arch)(weights=None),
            image_size=self.image_size,
            hidden_layer="avgpool",
            projection_size=PROJECTION_DIM,
            projection_hidden_size=HEAD_WIDTH,
        )
        if self.per_image:
            # The same default transform object, applied image by image (augment2 defaults to augment1).
            learner.augment1 = learner.augment2 = PerImage(learner.augment1)
        learner.to(self.device)
        optimizer = torch.optim.Adam(learner.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        return learner, optimizer

    def __call__(self) -> Measured:
        self.calls += 1
        torch.manual_seed(self.calls)
        learner, optimizer = self.learner()
        rng = np.random.default_rng(self.calls)
        order = rng.permutation(len(self.images))

        def step(i: int) -> torch.Tensor:
            rows = torch.as_tensor(order[(i * self.batch) % len(order) :][: self.batch], device=self.device)
            loss = learner(to_unit_float(self.images.index_select(0, rows)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            learner.update_moving_average()
            return loss.detach()  # read once at the end: reading it every step would stall a GPU

        step(0)  # warm-up
        synchronize(self.device)
        wall_0, cpu_0 = time.perf_counter(), time.process_time()
        losses = torch.stack([step(i) for i in range(1, self.steps + 1)]).tolist()
        wall_1, cpu_1 = time.perf_counter(), time.process_time()
        if not all(math.isfinite(loss) for loss in losses):
            raise RuntimeError(f"byol-pytorch's loss is not finite: {losses}")
        return Measured(self.steps * self.batch, wall_1 - wall_0, cpu_1 - cpu_0)


def augmentation_rates(
    train: DecodedSplit, image_size: int, batch: int, calls: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Images/s of the two-view augmentation alone: ours against byol-pytorch's default, per image and per batch."""
    import torchvision
    from byol_pytorch import BYOL

    from fsl.data.byol_augment import byol_views

    x = to_unit_float(torch.from_numpy(np.ascontiguousarray(train.images[:batch])).to(device))
    generator = torch.Generator(device=device).manual_seed(0)
    default = BYOL(torchvision.models.resnet18(weights=None), image_size=image_size, hidden_layer="avgpool").augment1
    per_image = PerImage(default)
    views: dict[str, Callable[[], Any]] = {
        "ours": lambda: byol_views(x, generator),
        "per_image": lambda: (per_image(x), per_image(x)),
        "as_shipped": lambda: (default(x), default(x)),
    }

    def repeated(fn: Callable[[], Any]) -> Callable[[], None]:
        def call() -> None:
            for _ in range(calls):
                fn()
            synchronize(device)

        return call

    seconds = time_interleaved({name: repeated(fn) for name, fn in views.items()}, repeats, warmup=1)
    return {name: [calls * batch / s for s in times] for name, times in seconds.items()}


def probe_split(val: DecodedSplit, classes: int = 5, per_class: int = 8) -> DecodedSplit:
    rows = np.concatenate([np.flatnonzero(val.labels == c)[:per_class] for c in range(classes)])
    return DecodedSplit("probe", val.images[rows], val.labels[rows], val.class_names, tuple(val.ids[r] for r in rows))


def interleaved(sides: dict[str, Callable[[], Measured]], repeats: int) -> dict[str, list[Measured]]:
    """Each side once per repetition, alternating which goes first (as common.time_interleaved)."""
    out: dict[str, list[Measured]] = {name: [] for name in sides}
    for rep in range(repeats):
        order = list(sides.items()) if rep % 2 == 0 else list(reversed(sides.items()))
        for name, side in order:
            out[name].append(side())
    return out


def measure(arch: str, image_size: int, batch: int, steps: int, repeats: int, quick: bool) -> list[Row]:
    from importlib.metadata import version

    import byol_pytorch  # noqa: F401  (the bench extra: fail here, as one row, when it is missing)

    peer = f"byol-pytorch {version('byol-pytorch')}"
    if quick:
        root = demo_data(image_size, n_train_classes=8, n_val_classes=5, images_per_class=20)
    else:
        root = demo_data(image_size)
    train = decoded_split(root, "train", image_size)
    probe = probe_split(decoded_split(root, "val", image_size))
    device = bench_device()
    on = "" if device.type == "cpu" else f" on {device.type}"
    sides: dict[str, Callable[[], Measured]] = {
        "ours": OurSide(train, probe, arch, image_size, batch, steps, device),
        # BYOLConfig's opt-in settings, as b1 does for ProtoNet: the same float32 arithmetic in NHWC, then bf16.
        "ours_cl": OurSide(train, probe, arch, image_size, batch, steps, device, channels_last=True),
        "ours_bf16_cl": OurSide(
            train, probe, arch, image_size, batch, steps, device, channels_last=True, precision="bf16"
        ),
        "per_image": LucidrainsSide(train, arch, image_size, batch, steps, per_image=True, device=device),
        "as_shipped": LucidrainsSide(train, arch, image_size, batch, steps, per_image=False, device=device),
    }
    with pinned_threads() as threads:
        results = interleaved(sides, repeats)
        augment_rates = augmentation_rates(train, image_size, batch, 5 if quick else 20, repeats, device)
    rate = {name: [m.rate for m in ms] for name, ms in results.items()}
    cpu_rate = {name: [m.cpu_rate for m in ms] for name, ms in results.items()}
    shape = (
        f"{arch}, {image_size} px, batch {batch}, heads {HEAD_WIDTH}->{PROJECTION_DIM}, Adam {LR:g}, {threads} "
        f"thread(s), 0 workers; median of {repeats} interleaved runs of {steps} timed steps; device {device}"
    )

    def row(baseline: str, label: str, what: str, ours: str = "ours", variant: str = "") -> Row:
        cpu_ratio = median(cpu_rate[ours]) / median(cpu_rate[baseline])
        return make_row(
            f"b6 BYOL train {arch} {image_size} px{on}{variant} vs byol-pytorch ({label})",
            median(rate[ours]),
            median(rate[baseline]),
            "images/s",
            1.5,
            f"vs {peer} with {what}; CPU-time ratio {cpu_ratio:.2f}x; {shape}",
            samples={"ours": rate[ours], "baseline": rate[baseline]},
        )

    like_for_like = "its default augmentation applied per image (like for like)"
    other_arithmetic = "; ours in bfloat16 autocast, byol-pytorch in float32: not the same arithmetic"

    aug = {name: median(rates) for name, rates in augment_rates.items()}
    return [
        row("per_image", "per-image aug", like_for_like),
        row("per_image", "per-image aug", like_for_like, "ours_cl", ", ours channels_last"),
        row("per_image", "per-image aug", like_for_like + other_arithmetic, "ours_bf16_cl", ", ours bf16 + CL"),
        make_row(
            f"b6 BYOL two-view augmentation alone, {image_size} px{on} vs byol-pytorch (per-image aug)",
            aug["ours"],
            aug["per_image"],
            "images/s",
            1.5,
            f"the augmentation part of a step only (both views of a batch of {batch} float images, no network): "
            f"ours fsl.data.byol_augment.byol_views vs {peer}'s default transform applied per image; as shipped (one "
            f"draw per batch) {aug['as_shipped']:,.0f} images/s; median of {repeats} interleaved timings, "
            f"{threads} thread(s)",
            samples={"ours": augment_rates["ours"], "baseline": augment_rates["per_image"]},
        ),
        row(
            "as_shipped",
            "as shipped",
            "its default augmentation on the whole batch as shipped (one parameter draw per batch: less work)",
        ),
    ]


def run(quick: bool) -> list[Row]:
    if quick:
        return measure("resnet18", 16, batch=8, steps=2, repeats=1, quick=True)
    if bench_device().type == "cuda":
        return measure("resnet50", 84, batch=256, steps=10, repeats=3, quick=False)
    return measure("resnet18", 32, batch=64, steps=3, repeats=3, quick=False)


if __name__ == "__main__":
    import sys

    from bench.run_all import markdown_table

    print(markdown_table(run("--quick" in sys.argv)))
