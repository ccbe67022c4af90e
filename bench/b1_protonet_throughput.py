"""b1: ProtoNet training throughput, episodes/s: our training loop against easyfsl's.

Both sides train a Conv4 (64-64-64-64, the project's `fsl.models.conv4.Conv4`) with Adam (lr 1e-3) on 5-way
1-shot 15-query episodes of the same generated demo data set (HW4 layout, PNG files), with the same torch
threads and no DataLoader worker processes (the training process does all the work on both sides), and the
same kind of augmentation (random resized crop, horizontal flip, colour jitter 0.4/0.4/0.4):

- ours: `fsl.train.protonet_method.train_protonet`, the function a study's trial runs, for one epoch of K
  episodes: episodes drawn by `EpisodeSampler` from the split decoded once to uint8 arrays
  (`fsl.data.decoded`), augmented per image as tensors (`augment="flip+crop+color"`). The timed call includes
  what the loop does around the episodes once per epoch (model construction, its evaluation, here of one
  episode of 5 distinct images, a CPU copy of the weights), so it slightly understates the per-episode rate.
  Decoding the PNG files happens once per split and data set (then it is cached); its time is given in the
  note, not in the rate.
- baseline: easyfsl 1.5's `PrototypicalNetworks` on easyfsl's `EasySet` (which opens each image with PIL on
  every access and applies its default training transform: RandomResizedCrop, ColorJitter(0.4, 0.4, 0.4),
  RandomHorizontalFlip, ToTensor, Normalize) and `TaskSampler` + `episodic_collate_fn` in a DataLoader,
  trained with the loop of easyfsl's notebooks (process_support_set, forward on the queries, cross-entropy).

Each side gets one untimed warm-up episode; then K-episode calls alternate between the sides. The note gives
the ratio of the sides' process CPU times too: on a loaded machine it does not count waiting for a core.

The first row runs ours in the baseline's memory format (fp32 NCHW), so that it measures the data path alone.
At 84 px two more sides run ours with project options a study can set with --param: `channels_last=true`
(NHWC weights and batches, the same fp32 arithmetic; ProtoNet's default) and `precision=bf16` with
`channels_last=true` (bf16 autocast of the forward pass, float32 weights; not the baseline's arithmetic). They
are separate rows, so that the data path's gain is not mixed with the memory format's or the precision's.

With BENCH_DEVICE=cuda both sides train on the GPU (ours keeps the decoded split on the GPU and augments
there; easyfsl's loader still opens the PNG files with PIL on the CPU and the batches are copied over), with
100-episode calls. One more baseline then runs easyfsl with DataLoader worker processes (persistent, one per
core up to 8), as a GPU user of it would; its row says so.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.common import (
    Row,
    bench_device,
    decoded_split,
    demo_data,
    fixed_episodes,
    make_row,
    median,
    pinned_threads,
    synchronize,
    time_interleaved,
)
from fsl.data.episodes import FixedEpisodes
from fsl.models.conv4 import Conv4
from fsl.train.config import ProtoNetConfig
from fsl.train.parallel import Placement
from fsl.train.protonet_method import train_protonet

N_WAY, K_SHOT, N_QUERY = 5, 1, 15
AUGMENT = "flip+crop+color"
CPU = torch.device("cpu")


def easyset_specs(root: Path, split: str) -> Path:
    """An EasySet JSON spec for a split of the HW4 layout: EasySet wants one folder per class, so each class
    gets a folder of symbolic links to its PNG files (made once, beside the data)."""
    import pandas as pd

    specs = root.parent / f"{root.name}-easyset" / f"{split}.json"
    if specs.is_file():
        return specs
    table = pd.read_csv(root / f"{split}.csv", dtype=str)
    class_names = list(dict.fromkeys(table["label"]))
    folders = specs.parent / split
    for label, filename in zip(table["label"], table["filename"], strict=True):
        link = folders / label / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(root / split / filename)
    tmp = specs.with_suffix(".tmp")
    tmp.write_text(json.dumps({"class_names": class_names, "class_roots": [str(folders / c) for c in class_names]}))
    tmp.replace(specs)
    return specs


def task_sampler_class() -> type:
    """easyfsl's TaskSampler, able to start on torch >= 2.6.

    easyfsl 1.5's TaskSampler.__init__ calls `super().__init__(data_source=None)`; since torch 2.6
    `Sampler.__init__` is `object.__init__`, which takes no arguments (a TypeError). A base class placed
    between TaskSampler and Sampler accepts and drops the argument; nothing in torch is patched."""
    from easyfsl.samplers import TaskSampler
    from torch.utils.data import Sampler

    class _AcceptsDataSource(Sampler):
        def __init__(self, data_source: Any = None) -> None:
            pass

    class ShimmedTaskSampler(TaskSampler, _AcceptsDataSource):
        pass

    return ShimmedTaskSampler


class EasyfslSide:
    """easyfsl's way: EasySet (PIL per access) + TaskSampler in a DataLoader + PrototypicalNetworks."""

    def __init__(
        self, root: Path, image_size: int, episodes: int, device: torch.device = CPU, workers: int = 0
    ) -> None:
        from easyfsl.datasets import EasySet
        from easyfsl.methods import PrototypicalNetworks

        self.dataset = EasySet(easyset_specs(root, "train"), image_size=image_size, training=True)
        self.sampler_cls = task_sampler_class()
        self.episodes, self.device, self.workers = episodes, device, workers
        self.loaders: dict[int, Any] = {}
        torch.manual_seed(0)
        self.model = PrototypicalNetworks(Conv4()).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.criterion = nn.CrossEntropyLoss()

    def loader(self, n_tasks: int) -> Any:
        """One DataLoader per episode count, kept: with workers they persist across calls (as in a user's
        training loop over epochs), so their start-up is paid once, in the warm-up call."""
        from torch.utils.data import DataLoader

        if n_tasks not in self.loaders:
            sampler = self.sampler_cls(self.dataset, n_way=N_WAY, n_shot=K_SHOT, n_query=N_QUERY, n_tasks=n_tasks)
            self.loaders[n_tasks] = DataLoader(
                self.dataset,
                batch_sampler=sampler,
                num_workers=self.workers,
                persistent_workers=self.workers > 0,
                collate_fn=sampler.episodic_collate_fn,
            )
        return self.loaders[n_tasks]

    def __call__(self, episodes: int | None = None) -> None:
        self.model.train()
        to = self.device
        for support_images, support_labels, query_images, query_labels, _ in self.loader(episodes or self.episodes):
            self.optimizer.zero_grad()
            self.model.process_support_set(support_images.to(to), support_labels.to(to))
            loss = self.criterion(self.model(query_images.to(to)), query_labels.to(to))
            loss.backward()
            self.optimizer.step()
        synchronize(self.device)


def minimal_eval_episode(episodes: FixedEpisodes) -> FixedEpisodes:
    """One evaluation episode whose queries are its support images (5 distinct images in all): the loop
    evaluates once per epoch, and this keeps that evaluation to a few forward passes, so the rate measured is
    the training episodes' (a study's epoch has 100 episodes per evaluation, not 2)."""
    support = episodes.support[:1]
    query = np.repeat(support, N_QUERY, axis=1)
    labels = np.repeat(np.arange(N_WAY)[None, :], N_QUERY, axis=1)
    return FixedEpisodes(episodes.episode_ids[:1], support, query, labels, N_WAY, K_SHOT)


class OurSide:
    """The project's training loop, one epoch of `episodes` episodes per call."""

    def __init__(
        self,
        root: Path,
        image_size: int,
        episodes: int,
        channels_last: bool = False,
        precision: str = "fp32",
        device: torch.device = CPU,
    ) -> None:
        started = time.perf_counter()
        self.train = decoded_split(root, "train", image_size)
        self.val = decoded_split(root, "val", image_size)
        self.decode_s = time.perf_counter() - started  # from the cache after the first run
        self.episodes = minimal_eval_episode(fixed_episodes(root, self.val).head(1))
        self.cfg = ProtoNetConfig(
            train_way=N_WAY, k_shot=K_SHOT, n_query=N_QUERY, augment=AUGMENT, image_size=image_size, epochs=1,
            episodes_per_epoch=episodes, eval_episodes=1, channels_last=channels_last, precision=precision,
        )  # fmt: skip
        self.calls = 0
        self.placement = Placement(device)

    def __call__(self, episodes: int | None = None) -> None:
        # Another seed every call, so each call trains on other episodes (as the baseline's sampler does).
        self.calls += 1
        cfg = self.cfg.replace(seed=self.calls, episodes_per_epoch=episodes or self.cfg.episodes_per_epoch)
        metrics = train_protonet(cfg, self.train, self.val, self.episodes, lambda metrics, state: None, self.placement)
        if not np.isfinite(metrics["train_loss"]):
            raise RuntimeError(f"our loop's loss is not finite: {metrics}")


def gpu_workers() -> int:
    """easyfsl's DataLoader workers for the extra GPU baseline: one per core, at most 8."""
    return min(8, os.cpu_count() or 1)


def measure(image_size: int, episodes: int, repeats: int, quick: bool, with_channels_last: bool) -> list[Row]:
    device = bench_device()
    on = "" if device.type == "cpu" else f" on {device.type}"
    if quick:
        root = demo_data(image_size, n_train_classes=8, n_val_classes=5, images_per_class=20)
    else:
        root = demo_data(image_size)
    sides: dict[str, Any] = {"ours": OurSide(root, image_size, episodes, device=device)}
    if with_channels_last:
        sides["ours_channels_last"] = OurSide(root, image_size, episodes, channels_last=True, device=device)
        sides["ours_bf16_channels_last"] = OurSide(
            root, image_size, episodes, channels_last=True, precision="bf16", device=device
        )
    sides["baseline"] = EasyfslSide(root, image_size, episodes, device)
    if device.type == "cuda":
        sides["baseline_workers"] = EasyfslSide(root, image_size, episodes, device, workers=gpu_workers())
    with pinned_threads() as threads:
        for side in sides.values():
            # Warm-up: one episode each on the CPU; a whole call on a GPU (CUDA and cuDNN set-up, and the
            # persistent workers' start).
            side(episodes=1 if device.type == "cpu" else None)
        cpu: dict[str, list[float]] = {}
        times = time_interleaved(sides, repeats, warmup=0, cpu_times=cpu)
    rate = {name: [episodes / s for s in seconds] for name, seconds in times.items()}

    def cpu_ratio(name: str) -> str:
        return f"CPU-time ratio {median(cpu['baseline']) / median(cpu[name]):.2f}x"

    common = (
        f"{N_WAY}-way {K_SHOT}-shot {N_QUERY}-query, {image_size} px, augment {AUGMENT}, {threads} thread(s), "
        f"0 workers; median of {repeats} interleaved calls of {episodes} episodes; device {device}"
    )
    target = 2.0 if image_size >= 84 else 1.0

    def row(label: str, ours: str, note: str, baseline: str = "baseline") -> Row:
        return make_row(
            f"b1 ProtoNet train {image_size} px{on} {label}",
            median(rate[ours]),
            median(rate[baseline]),
            "episodes/s",
            target,
            note,
            samples={"ours": rate[ours], "baseline": rate[baseline]},
        )

    decoded = f"loading the decoded split took {sides['ours'].decode_s:.1f} s (decoded once, then from its cache)"
    rows = [row("(fp32, NCHW)", "ours", f"vs easyfsl; {cpu_ratio('ours')}; {common}; {decoded}")]
    if with_channels_last:
        rows.append(
            row(
                "(channels_last=true, the default)",
                "ours_channels_last",
                "ours with channels_last (ProtoNet's default) vs the same easyfsl run; "
                f"{cpu_ratio('ours_channels_last')}; {common}",
            )
        )
        rows.append(
            row(
                "(precision=bf16, channels_last=true)",
                "ours_bf16_channels_last",
                "ours with the project's bf16 autocast and channels_last options vs the same fp32 easyfsl run (not "
                f"the same arithmetic); {cpu_ratio('ours_bf16_channels_last')}; {common}",
            )
        )
    if "baseline_workers" in sides:
        rows.append(
            row(
                f"vs easyfsl with {gpu_workers()} DataLoader workers",
                "ours_channels_last" if with_channels_last else "ours",
                f"ours ({'channels_last, ' if with_channels_last else ''}fp32, one process) vs easyfsl loading with "
                f"{gpu_workers()} persistent DataLoader worker processes (PIL in parallel on {gpu_workers()} cores); "
                f"{common.replace('0 workers', 'baseline with workers')}",
                baseline="baseline_workers",
            )
        )
    return rows


def run(quick: bool) -> list[Row]:
    if quick:
        return measure(32, episodes=2, repeats=2, quick=True, with_channels_last=False)
    if bench_device().type == "cuda":
        # An episode takes milliseconds on a GPU: time whole 100-episode epochs, as a study runs them.
        return measure(84, episodes=100, repeats=3, quick=False, with_channels_last=True) + measure(
            32, episodes=100, repeats=3, quick=False, with_channels_last=False
        )
    return measure(84, episodes=2, repeats=3, quick=False, with_channels_last=True) + measure(
        32, episodes=10, repeats=5, quick=False, with_channels_last=False
    )
