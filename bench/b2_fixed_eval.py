"""b2: evaluation on the 600 fixed episodes of val_testcase.csv (HW4 format, 5-way 1-shot 15-query): ours
against the DLCV course template's way, with the same model.

- ours: `fsl.train.evaluate.evaluate_episodes` on the val split decoded once to uint8 arrays
  (`fsl.data.decoded`, cached; the decoding time is in the note, not in the figure): every image the episodes
  use is embedded once in batches, then all episodes are scored from the embeddings.
- baseline: the course template (hw4 `test_testcase.py`): a `MiniDataset` that looks each id up in a pandas
  table (`.loc`) and opens the file with PIL, then `ToTensor` and `Normalize`; a `GeneratorSampler` that yields
  the episodes' ids in file order; a DataLoader whose batch is one episode (N*(K+Q) = 80 images); per batch
  the same ProtoNet embeds the 80 images and classifies the queries by their distance to the prototypes.

Same model (the project's ProtoNet, Conv4, random weights from one seed, eval mode), same threads, no worker
processes on either side (the template uses 3; ours uses none). The baseline's cost is one independent batch
per episode, so it is timed on the first E episodes and scaled to 600 (the row's note says E); ours is timed
on all 600. Both sides' accuracies on those E episodes are checked to be equal.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms

from bench.common import (
    Row,
    decoded_split,
    demo_data,
    fixed_episodes,
    make_row,
    median,
    pinned_threads,
    time_interleaved,
)
from fsl.methods.protonet import ProtoNet
from fsl.train.config import ProtoNetConfig
from fsl.train.evaluate import evaluate_episodes
from fsl.train.protonet_method import build_model


def filename_to_pil_image(path: str) -> Image.Image:
    return Image.open(path)


class MiniDataset(Dataset):
    """The course template's dataset: id -> (normalised tensor, label), via pandas .loc and PIL."""

    def __init__(self, csv_path: Path, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.data_df = pd.read_csv(csv_path).set_index("id")
        self.transform = transforms.Compose(
            [
                filename_to_pil_image,
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.data_df.loc[index, "filename"]
        label = self.data_df.loc[index, "label"]
        image = self.transform(str(self.data_dir / path))
        return image, label

    def __len__(self) -> int:
        return len(self.data_df)


class GeneratorSampler(Sampler):
    """The template's sampler: every id of every episode row (support then query), in file order."""

    def __init__(self, episode_df: pd.DataFrame) -> None:
        self.sampled_sequence = episode_df.values.flatten().tolist()

    def __iter__(self):  # noqa: ANN204
        return iter(self.sampled_sequence)

    def __len__(self) -> int:
        return len(self.sampled_sequence)


class TemplateSide:
    def __init__(self, root: Path, model: ProtoNet, n_way: int, k_shot: int, n_query: int, n_episodes: int) -> None:
        self.dataset = MiniDataset(root / "val.csv", root / "val")
        self.episode_df = pd.read_csv(root / "val_testcase.csv").set_index("episode_id").head(n_episodes)
        self.model = model
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.accuracies: list[float] = []

    @torch.no_grad()
    def __call__(self) -> None:
        loader = DataLoader(
            self.dataset,
            batch_size=self.n_way * (self.n_query + self.k_shot),
            num_workers=0,
            pin_memory=False,
            sampler=GeneratorSampler(self.episode_df),
        )
        self.model.eval()
        accuracies = []
        n_support = self.n_way * self.k_shot
        for data, target in loader:
            label_encoder = {target[i * self.k_shot]: i for i in range(self.n_way)}
            query_label = torch.tensor([label_encoder[name] for name in target[n_support:]])
            logits = self.model(data, self.n_way, self.k_shot)
            accuracies.append(float((logits.argmax(-1) == query_label).float().mean()))
        self.accuracies = accuracies


class OurSide:
    def __init__(self, root: Path, model: ProtoNet, image_size: int) -> None:
        started = time.perf_counter()
        val = decoded_split(root, "val", image_size)
        self.decode_s = time.perf_counter() - started
        self.images = torch.as_tensor(val.images)
        self.episodes = fixed_episodes(root, val)
        self.model = model
        self.accuracies = np.zeros(0)

    def __call__(self) -> None:
        self.accuracies = evaluate_episodes(self.model, self.images, self.episodes).accuracies


def run(quick: bool) -> list[Row]:
    if quick:
        image_size, baseline_episodes, repeats = 32, 3, 2
        root = demo_data(image_size, n_train_classes=8, n_val_classes=5, images_per_class=20)
    else:
        image_size, baseline_episodes, repeats = 84, 12, 3
        root = demo_data(image_size)
    torch.manual_seed(0)
    model = build_model(ProtoNetConfig(image_size=image_size)).eval()
    ours = OurSide(root, model, image_size)
    episodes = ours.episodes
    n_total = len(episodes)
    template = TemplateSide(root, model, episodes.n_way, episodes.k_shot, episodes.n_query, baseline_episodes)
    with pinned_threads() as threads:
        cpu: dict[str, list[float]] = {}
        times = time_interleaved({"ours": ours, "baseline": template}, repeats, warmup=0, cpu_times=cpu)
    cpu_ratio = median(cpu["baseline"]) * n_total / baseline_episodes / median(cpu["ours"])
    ours_s = times["ours"]
    template_s = [s * n_total / baseline_episodes for s in times["baseline"]]
    same = np.allclose(ours.accuracies[:baseline_episodes], template.accuracies, atol=1e-6)
    if not same:
        raise RuntimeError(
            f"the two sides disagree on the first {baseline_episodes} episodes: "
            f"{ours.accuracies[:baseline_episodes].tolist()} vs {template.accuracies}"
        )
    images = len(np.unique(np.concatenate([episodes.support.ravel(), episodes.query.ravel()])))
    note = (
        f"{n_total} episodes {episodes.n_way}-way {episodes.k_shot}-shot {episodes.n_query}-query at {image_size} px "
        f"({images} distinct images, {episodes.support.size + episodes.query.size} episode slots); baseline timed on "
        f"the first {baseline_episodes} episodes and scaled to {n_total}, same accuracies there; CPU-time ratio "
        f"{cpu_ratio:.1f}x; {threads} "
        f"thread(s), 0 workers; median of {repeats} interleaved runs; loading the decoded split took "
        f"{ours.decode_s:.1f} s (decoded once, then from its cache)"
    )
    return [
        make_row(
            f"b2 fixed-episode eval {image_size} px",
            median(ours_s),
            median(template_s),
            f"s per {n_total} episodes",
            10.0,
            note,
            higher_is_better=False,
            samples={"ours": ours_s, "baseline": template_s},
        )
    ]
