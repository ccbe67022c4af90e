"""Prototypical Networks as a training method: episodic training, then evaluation on the fixed episodes.

With torch.distributed initialised, episodes and evaluation episodes are split across ranks (the epoch runner
all-reduces the metrics, so every rank reports the same numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from fsl.data.augment import POLICY_CHOICES, augment, normalize, parse_policy, to_unit_float
from fsl.data.decoded import DecodedSplit
from fsl.data.episodes import EpisodeSampler, FixedEpisodes
from fsl.methods.protonet import ProtoNet, protonet_loss
from fsl.models.distances import DISTANCES
from fsl.models.served import ImageModel
from fsl.train.checkpoint import first_line, read_checkpoint_file
from fsl.train.config import ProtoNetConfig
from fsl.train.dimension import Dimension
from fsl.train.epochs import run_epochs
from fsl.train.evaluate import ci95_from_sums, evaluate_episodes
from fsl.train.method import Method
from fsl.train.parallel import Placement, all_reduce_sum, to_device
from fsl.train.precision import to_channels_last
from fsl.train.run_state import Report

BEST_MODEL_FORMAT = "fsl.protonet/1"


def build_model(cfg: ProtoNetConfig) -> ProtoNet:
    return ProtoNet(
        image_size=cfg.image_size,
        head_depth=cfg.head_depth,
        head_width=cfg.head_width,
        distance=cfg.distance,
        temperature=cfg.temperature,
        learn_temperature=cfg.learn_temperature,
    )


def episodes_for_rank(total: int, rank: int, world_size: int) -> int:
    """An epoch's episodes split across ranks. Every rank takes the same number, rounded up: each training step
    is a DDP gradient all-reduce, so a rank with one step more would wait on collectives the others never join.
    An epoch of 10 episodes on 3 ranks is therefore 12."""
    return max(1, -(-total // world_size))  # ceiling division


class ProtoNetMethod(Method):
    name = "protonet"
    label = "ProtoNet"
    config_class = ProtoNetConfig
    best_format = BEST_MODEL_FORMAT
    loss_name = "train_loss"
    progress_keys = ("train_loss",)
    metric = "val_acc"
    cfg: ProtoNetConfig

    def __init__(
        self,
        cfg: ProtoNetConfig,
        train: DecodedSplit,
        val: DecodedSplit,
        val_episodes: FixedEpisodes,
        placement: Placement,
    ) -> None:
        super().__init__(cfg, placement)
        self.train, self.val, self.val_episodes = train, val, val_episodes

    @classmethod
    def from_data(cls, config: dict[str, Any], data: dict[str, Any], placement: Placement) -> Self:
        return cls(ProtoNetConfig.from_dict(config), data["train"], data["val"], data["val_episodes"], placement)

    @classmethod
    def search_space(cls, n_classes: int = 30) -> dict[str, Dimension]:
        """lr, augment, head_depth, distance, train_way (up to the training classes, at most 30)."""
        return {
            "lr": Dimension("lr", "loguniform", 1e-4, 3e-2),
            "augment": Dimension("augment", "choice", choices=POLICY_CHOICES),
            "head_depth": Dimension("head_depth", "int", 0, 3),
            "distance": Dimension("distance", "choice", choices=DISTANCES),
            "train_way": Dimension("train_way", "int", 5, max(5, min(30, n_classes))),
        }

    @classmethod
    def served_model(cls, saved: dict[str, Any]) -> nn.Module | None:
        net = build_model(ProtoNetConfig.from_dict(saved["config"]))
        net.load_state_dict(saved["model"])
        return ImageModel(net, "embedding", call="embed")  # prototypes come from the user's support images

    def build_model(self) -> nn.Module:
        return build_model(self.cfg)

    def float32_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.head]  # the distances to prototypes are computed from float32 embeddings

    def setup(self, model: nn.Module) -> int:
        cfg, placement = self.cfg, self.placement
        self.train_images = to_device(self.train.images, placement.device)
        self.val_images = to_device(self.val.images, placement.device)
        self.sampler = EpisodeSampler(self.train.labels, cfg.train_way, cfg.k_shot, cfg.n_query)
        # Episodes drawn at a larger K (an ablation over shots shares one set) are cut to this run's K.
        episodes = self.val_episodes.with_shots(cfg.k_shot).head(cfg.eval_episodes)
        self.eval_shard = episodes.shard(placement.rank, placement.world_size)
        self.policy = parse_policy(cfg.augment)
        return episodes_for_rank(cfg.episodes_per_epoch, placement.rank, placement.world_size)

    def begin_epoch(self, epoch: int, model: nn.Module, trained: nn.Module) -> None:
        # Episodes depend only on (seed, epoch, rank): a resumed run sees the same data as an unbroken one.
        self.rng = np.random.default_rng([self.cfg.seed, epoch, self.placement.rank])
        device = self.placement.device
        self.generator = torch.Generator(device=device).manual_seed(int(self.rng.integers(2**62)))
        trained.train()

    def train_step(self, trained: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, device = self.cfg, self.placement.device
        episode = self.sampler.sample(self.rng)
        rows = torch.as_tensor(np.concatenate([episode.support, episode.query]), device=device)
        x = to_unit_float(self.train_images.index_select(0, rows))
        x = to_channels_last(normalize(augment(x, self.policy, self.generator) if self.policy else x), cfg)
        labels = torch.as_tensor(episode.query_labels, device=device)
        with self.autocast():
            loss = protonet_loss(trained(x, cfg.train_way, cfg.k_shot).float(), labels)
        return loss, loss.detach().double().reshape(1)

    def train_metrics(self, local: list[float], total: list[float]) -> dict[str, float]:
        return {"train_loss": total[0] / total[1], "local_train_loss": local[0] / local[1]}

    def evaluate(self, model: nn.Module) -> tuple[float, float]:
        acc = evaluate_episodes(model, self.val_images, self.eval_shard).accuracies.astype(np.float64)
        acc_sum, acc_sq, count = all_reduce_sum(
            [float(acc.sum()), float((acc**2).sum()), float(acc.size)], self.placement.device
        )
        return ci95_from_sums(acc_sum, acc_sq, count)


def train_protonet(
    cfg: ProtoNetConfig,
    train: DecodedSplit,
    val: DecodedSplit,
    val_episodes: FixedEpisodes,
    report: Report,
    placement: Placement | None = None,
    resume_state: dict[str, Any] | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Train a ProtoNet for cfg.epochs, calling report() after every epoch; the last epoch's metrics."""
    method = ProtoNetMethod(cfg, train, val, val_episodes, placement or Placement(torch.device("cpu")))
    return run_epochs(method, report, resume_state, prepare_model)


def load_best_model(path: Path) -> tuple[ProtoNet, ProtoNetConfig, dict[str, Any]]:
    """Load a ProtoNet best_model.pt file: the model (in eval mode), its config, and its recorded metrics."""
    saved = read_checkpoint_file(path)
    if not isinstance(saved, dict) or saved.get("format") != BEST_MODEL_FORMAT:
        raise ValueError(f"{path}: not a ProtoNet best_model.pt written by this project")
    config = ProtoNetConfig.from_dict(saved["config"])
    model = build_model(config)
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the architecture in its config ({first_line(err)})") from None
    model.eval()
    info = {k: saved.get(k) for k in ("val_acc", "val_acc_ci95", "epoch")}
    return model, config, info
