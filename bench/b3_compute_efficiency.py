"""b3: compute efficiency of the ProtoNet Conv4 training step: achieved FLOP/s over the FLOP/s of a large fp32
matmul measured by torch on the same machine, with the same threads, in the same run.

The step is the one `fsl.train.protonet_method` takes per episode: the project's ProtoNet (Conv4 64-64-64-64 at
84 px, no head, squared Euclidean distance with a learned temperature) on a 5-way 1-shot 15-query episode
(80 images) already in memory as a normalised float batch, `protonet_loss`, zero_grad, backward, Adam step.
The data path is left out on purpose (b1 measures it): this is the arithmetic.

FLOPs: the analytic figure is 0.194 GFLOP per 84-px image forward (97.2 M multiply-adds in the four 3x3
convolutions) and about 3x that for a training step. Both are counted here with
`torch.utils.flop_counter.FlopCounterMode` (convolutions and matmuls, forward and backward) and printed; the
achieved FLOP/s use the counted training-step FLOPs of each variant's batch.

Peak: an n x n fp32 matmul (2 n^3 FLOP), timed right before each step of each variant, at that variant's
thread count, so both see the same load; the median over the run is the denominator. The rows use the
process's CPU time for both (time.process_time; waiting for a core is not counted): on the shared 2-core
machine these benchmarks were written on, the wall-clock efficiency of one variant differed by 2x between
runs, the CPU-time one by a few points. The wall-clock efficiency is in each note. With 2 threads CPU time is
summed over both, so that row is an efficiency per core used.

Variants (each a row; the note of the best says so): the bare loop (fp32, NCHW, 1 thread), channels_last,
bf16 autocast (CPU), bf16 + channels_last, several episodes per step (their images through the backbone as
one batch, prototypes and loss per episode, the mean loss), torch.compile (its compile time is in the note),
and channels_last with 2 threads. None of this changes the project's code: it measures what could.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Row, make_row, median
from fsl.methods.protonet import ProtoNet, protonet_loss
from fsl.models.conv4 import Conv4
from fsl.train.config import ProtoNetConfig
from fsl.train.protonet_method import build_model

N_WAY, K_SHOT, N_QUERY = 5, 1, 15
TARGET = 0.35


@dataclass(frozen=True)
class Variant:
    name: str
    threads: int = 1
    channels_last: bool = False
    bf16: bool = False
    episodes: int = 1  # per step
    compile: bool = False


def analytic_forward_gflop(image_size: int, hidden: int = 64, blocks: int = 4) -> float:
    """Conv4's forward FLOPs for one image from its shapes: each block's 3x3 convolution (padding 1) costs
    side^2 * hidden * 9 * in_channels multiply-adds, 2 FLOP each; the max-pool halves the side (floor).
    84 px: 12.19 + 65.03 + 16.26 + 3.69 = 97.16 M MAC = 0.194 GFLOP."""
    side, in_channels, macs = image_size, 3, 0
    for _ in range(blocks):
        macs += side * side * hidden * 9 * in_channels
        side, in_channels = side // 2, hidden
    return 2 * macs / 1e9


def counted_forward_gflop(image_size: int) -> float:
    """Conv4's forward FLOPs for one image, counted by torch."""
    with FlopCounterMode(display=False) as counter:
        Conv4()(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops() / 1e9


class Step:
    """One training step of the variant, on fixed random episode batches."""

    def __init__(self, variant: Variant, image_size: int) -> None:
        self.variant = variant
        torch.manual_seed(0)
        model: ProtoNet = build_model(ProtoNetConfig(image_size=image_size))
        if variant.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        per_episode = N_WAY * (K_SHOT + N_QUERY)
        x = torch.randn(variant.episodes * per_episode, 3, image_size, image_size)
        self.x = x.contiguous(memory_format=torch.channels_last) if variant.channels_last else x
        self.labels = torch.arange(N_WAY).repeat_interleave(N_QUERY)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self._episodes_loss
        if variant.compile:
            self.forward = torch.compile(self._episodes_loss)
        self.flops = 0.0
        self.compile_s = 0.0

    def _episodes_loss(self, x: torch.Tensor) -> torch.Tensor:
        e = self.variant.episodes
        n_support = N_WAY * K_SHOT
        if e == 1:
            return protonet_loss(self.model(x, N_WAY, K_SHOT).float(), self.labels)
        # Several episodes, one backbone batch: episode i's images are rows [i*80, (i+1)*80).
        z = self.model.embed(x).float().reshape(e, -1, self.model.head.out_dim)
        support_labels = torch.arange(N_WAY).repeat_interleave(K_SHOT)
        one_hot = torch.nn.functional.one_hot(support_labels, N_WAY).float()
        protos = (one_hot.T @ z[:, :n_support]) / one_hot.sum(0)[:, None]
        logits = self.model.distance(z[:, n_support:], protos)
        return protonet_loss(logits, self.labels.expand(e, -1))

    def __call__(self) -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.variant.bf16 else contextlib.nullcontext()
        with autocast:
            loss = self.forward(self.x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def count_flops(self) -> None:
        """Counted FLOPs of one step (run once eagerly under the counter; compiled variants do the same math)."""
        forward = self.forward
        self.forward = self._episodes_loss
        try:
            with FlopCounterMode(display=False) as counter:
                self()
        finally:
            self.forward = forward
        self.flops = float(counter.get_total_flops())


def matmul_gflops(n: int, dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """GFLOP/s of one n x n matmul: by wall-clock time and by the process's CPU time."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    cpu_started = time.process_time()
    started = time.perf_counter()
    a @ b
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return 2 * n**3 / wall / 1e9, 2 * n**3 / cpu / 1e9


def run(quick: bool) -> list[Row]:
    if quick:
        image_size, repeats, matmul_n = 32, 1, 512
        variants = [Variant("bare fp32 NCHW"), Variant("channels_last", channels_last=True)]
        variants += [Variant("bf16 autocast", bf16=True), Variant("2 episodes/step", episodes=2)]
    else:
        image_size, repeats, matmul_n = 84, 3, 2048
        variants = [
            Variant("bare fp32 NCHW"),
            Variant("channels_last", channels_last=True),
            Variant("bf16 autocast", bf16=True),
            Variant("bf16 + channels_last", channels_last=True, bf16=True),
            Variant("channels_last, 2 episodes/step", channels_last=True, episodes=2),
            Variant("channels_last + torch.compile", channels_last=True, compile=True),
            Variant("channels_last, 2 threads", threads=2, channels_last=True),
        ]

    before = torch.get_num_threads()
    steps: dict[str, Step] = {}
    notes: dict[str, str] = {}
    step_s: dict[str, list[float]] = {v.name: [] for v in variants}
    peak: dict[int, list[float]] = {}
    # The same by CPU time (waiting for a core not counted): a cross-check on a loaded machine.
    step_cpu_s: dict[str, list[float]] = {v.name: [] for v in variants}
    peak_cpu: dict[int, list[float]] = {}
    peak_bf16: list[float] = []  # a bf16 matmul at 1 thread, beside the bf16 variants: context, not the target
    try:
        for variant in variants:
            torch.set_num_threads(variant.threads)
            step = Step(variant, image_size)
            step.count_flops()
            started = time.perf_counter()
            try:
                step()  # warm-up (and the compilation of a compiled variant)
            except Exception as err:  # a variant that does not run here is a note, not a failed benchmark
                notes[variant.name] = f"failed: {type(err).__name__}: {str(err)[:200]}"
                continue
            step.compile_s = time.perf_counter() - started
            steps[variant.name] = step
            matmul_gflops(matmul_n)  # warm-up
        for _ in range(repeats):
            for variant in variants:
                if variant.name not in steps:
                    continue
                torch.set_num_threads(variant.threads)
                if variant.bf16:
                    peak_bf16.append(matmul_gflops(matmul_n, torch.bfloat16)[1])
                wall_gflops, cpu_gflops = matmul_gflops(matmul_n)
                peak.setdefault(variant.threads, []).append(wall_gflops)
                peak_cpu.setdefault(variant.threads, []).append(cpu_gflops)
                cpu_started = time.process_time()
                started = time.perf_counter()
                steps[variant.name]()
                step_s[variant.name].append(time.perf_counter() - started)
                step_cpu_s[variant.name].append(time.process_time() - cpu_started)
    finally:
        torch.set_num_threads(before)

    forward_gflop = counted_forward_gflop(image_size)
    analytic = analytic_forward_gflop(image_size)

    def gflops(flops: float, seconds: list[float]) -> list[float]:
        return [flops / s / 1e9 for s in seconds]

    # The rows use CPU time (steps and matmuls alike): on a shared machine the wall-clock efficiencies of the
    # same variant differed by 2x from run to run, the CPU-time ones by a few points. Wall clock is in the note.
    def cpu_ratio(name: str) -> float:
        step = steps[name]
        return median(gflops(step.flops, step_cpu_s[name])) / median(peak_cpu[step.variant.threads])

    best = max(steps, key=cpu_ratio) if steps else None
    rows = []
    for variant in variants:
        name = f"b3 Conv4 step FLOP/s / fp32 matmul: {variant.name}"
        if variant.name not in steps:
            rows.append(make_row(name, 0.0, 1.0, "GFLOP/s", TARGET, notes[variant.name]))
            continue
        step = steps[variant.name]
        achieved = gflops(step.flops, step_cpu_s[variant.name])
        wall_efficiency = median(gflops(step.flops, step_s[variant.name])) / median(peak[variant.threads])
        images = variant.episodes * N_WAY * (K_SHOT + N_QUERY)
        note = (
            f"{'BEST; ' if variant.name == best else ''}by CPU time; by wall clock {wall_efficiency:.0%} "
            f"(median step {median(step_s[variant.name]):.2f} s); {image_size} px, {images} images/step, "
            f"{variant.threads} thread(s); counted {step.flops / 1e9 / images:.3f} GFLOP/image/step "
            f"(forward {forward_gflop:.3f} counted, {analytic:.3f} analytic, x3 = {3 * analytic:.3f}); "
            f"peak = {matmul_n}^2 fp32 matmul at {variant.threads} thread(s); median of {repeats}"
        )
        if variant.compile:
            note += f"; compile + first step {step.compile_s:.0f} s"
        if variant.bf16:
            bf16_share = median(achieved) / median(peak_bf16)
            note += (
                f"; bf16 FLOP/s over the fp32 peak (a bf16 {matmul_n}^2 matmul ran at {median(peak_bf16):.0f} "
                f"GFLOP/s: {bf16_share:.0%} of it)"
            )
        rows.append(
            make_row(
                name,
                median(achieved),
                median(peak_cpu[variant.threads]),
                "GFLOP/s (CPU time)",
                TARGET,
                note,
                samples={
                    "ours": achieved,
                    "baseline": peak_cpu[variant.threads],
                    "ours_wall": gflops(step.flops, step_s[variant.name]),
                    "baseline_wall": peak[variant.threads],
                },
            )
        )
    return rows


if __name__ == "__main__":
    for row in run(quick=False):
        print(f"{row.name}: {row.ours:.1f} / {row.baseline:.1f} GFLOP/s = {row.ratio:.1%}  ({row.note})")
