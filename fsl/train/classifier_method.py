"""The supervised method: a ResNet classifier trained with cross-entropy, fully or with a frozen backbone.

It serves supervised pre-training (scored by the k-NN probe on another labelled split, like BYOL) and the
Office-Home settings A-E (scored by accuracy on the val split). A frozen backbone without augmentation sees
every image the same way every epoch, so its features are extracted once and only the head trains on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fsl.data.augment import augment, normalize, parse_policy, to_unit_float
from fsl.data.decoded import DecodedSplit
from fsl.methods.classifier import Classifier, correct_count
from fsl.models.served import ImageModel
from fsl.train.config import ClassifierConfig
from fsl.train.epochs import run_epochs
from fsl.train.evaluate import binomial_ci95
from fsl.train.method import SUPERVISED, Method
from fsl.train.parallel import Placement, all_reduce_sum, batch_rows, rank_share, to_device
from fsl.train.precision import to_channels_last
from fsl.train.probe import extract_features, probe_accuracy
from fsl.train.run_state import Report
from fsl.train.self_supervised import backbone_part

CLASSIFIER_FORMAT = "fsl.classifier/1"


def features_once(cfg: ClassifierConfig) -> bool:
    """A frozen backbone on unaugmented images: every epoch would compute the same features."""
    return cfg.finetune == "frozen" and not parse_policy(cfg.augmentation)


class ClassifierMethod(Method):
    name = "supervised"
    label = "supervised"
    config_class = ClassifierConfig
    best_format = CLASSIFIER_FORMAT
    loss_name = "train_loss"
    progress_keys = ("train_loss",)
    pretrains = SUPERVISED
    cfg: ClassifierConfig

    def __init__(
        self,
        cfg: ClassifierConfig,
        train: DecodedSplit,
        placement: Placement,
        val: DecodedSplit | None = None,
        probe_split: DecodedSplit | None = None,
        init_backbone: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Scored on `val` (its classes must be train's) or, without one, by the k-NN probe on `probe_split`;
        `init_backbone` holds pre-trained backbone weights."""
        if val is None and probe_split is None:
            raise ValueError("the classifier needs a val split or a probe split to score epochs")
        super().__init__(cfg, placement)
        self.train, self.val, self.probe_split, self.init_backbone = train, val, probe_split, init_backbone
        self.metric = "val_acc" if val is not None else "probe_acc"
        self.frozen = cfg.finetune == "frozen"

    @classmethod
    def from_data(cls, config: dict[str, Any], data: dict[str, Any], placement: Placement) -> Self:
        """Supervised pre-training (data has 'probe') or an Office-Home setting (data has 'val' and, for a
        pre-trained setting, 'backbones' keyed by the pre-training method's name)."""
        cfg = ClassifierConfig.from_dict(config)
        init = data.get("backbones", {}).get(cfg.pretraining) if cfg.pretraining != "none" else None
        if cfg.pretraining != "none" and init is None:
            raise ValueError(f"pretraining={cfg.pretraining}: the study shared no such backbone")
        return cls(cfg, data["train"], placement, data.get("val"), data.get("probe"), init)

    @classmethod
    def backbone_weights(cls, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        return backbone_part(weights)

    @classmethod
    def served_model(cls, saved: dict[str, Any]) -> nn.Module | None:
        cfg, weights = saved["config"], saved["model"]
        last_layer = [v for k, v in weights.items() if k.startswith("head.") and v.ndim == 2][-1]  # the logits layer
        net = Classifier(cfg["arch"], last_layer.shape[0], cfg["head_depth"], cfg["head_width"])
        net.load_state_dict(weights)
        return ImageModel(net, "logits")

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        model = Classifier(cfg.arch, len(self.train.class_names), cfg.head_depth, cfg.head_width)
        if self.init_backbone is not None:
            model.backbone.load_state_dict(self.init_backbone)
        if self.frozen:
            model.backbone.requires_grad_(False)
        return model

    def float32_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.head]  # cross-entropy on float32 logits

    def trained_module(self, model: nn.Module) -> nn.Module:
        return model.head if self.frozen else model  # only what trains is wrapped for DDP

    def setup(self, model: nn.Module) -> int:
        cfg, placement, device = self.cfg, self.placement, self.placement.device
        self.model = model
        self.train_images = to_device(self.train.images, device)
        self.train_labels = torch.as_tensor(self.train.labels, device=device)
        if self.val is not None:
            self.val_images = to_device(self.val.images, device)
            self.val_labels = torch.as_tensor(self.val.labels_in(self.train.class_names, self.val.name), device=device)
        if self.probe_split is not None:
            self.probe_images = to_device(self.probe_split.images, device)
            self.probe_labels = torch.as_tensor(self.probe_split.labels, device=device)
        self.cached = features_once(cfg)
        if self.cached:
            self.train_features = extract_features(model.backbone, self.train_images, placement)
            if self.val is not None:
                self.val_features = extract_features(model.backbone, self.val_images, placement)
        self.policy = parse_policy(cfg.augmentation)
        return max(1, len(self.train) // cfg.batch_size)

    def begin_epoch(self, epoch: int, model: nn.Module, trained: nn.Module) -> None:
        rng = np.random.default_rng([self.cfg.seed, epoch])
        self.order = rng.permutation(len(self.train))
        device = self.placement.device
        self.generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)) + self.placement.rank)
        model.train()
        trained.train()
        if self.frozen:
            model.backbone.eval()  # a frozen backbone keeps its BatchNorm statistics

    def _logits(self, trained: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        if self.cached:
            return trained(self.train_features.index_select(0, rows))
        x = to_unit_float(self.train_images.index_select(0, rows))
        x = to_channels_last(normalize(augment(x, self.policy, self.generator) if self.policy else x), self.cfg)
        if self.frozen:
            with torch.no_grad():
                features = self.model.backbone(x)
            return trained(features)
        return trained(x)

    def train_step(self, trained: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(
            batch_rows(self.order, step, self.cfg.batch_size, self.placement), device=self.placement.device
        )
        labels = self.train_labels.index_select(0, rows)
        with self.autocast():  # as before the split into methods: the augmentation too
            logits = self._logits(trained, rows)
            loss = F.cross_entropy(logits, labels)
        n = torch.tensor(float(len(rows)), dtype=torch.float64, device=rows.device)
        right = correct_count(logits.detach(), labels).double()
        return loss, torch.stack([(loss.detach() * len(rows)).double(), right, n])

    def train_metrics(self, local: list[float], total: list[float]) -> dict[str, float]:
        loss_sum, correct, seen, _ = total
        return {"train_loss": loss_sum / seen, "train_acc": correct / seen}

    def evaluate(self, model: nn.Module) -> tuple[float, float]:
        model.eval()
        if self.val is None:
            return probe_accuracy(
                model.backbone, self.probe_images, self.probe_labels, self.cfg.probe_k, self.placement
            )
        if self.cached:
            with torch.no_grad():  # every rank holds all of val's features: each scores all of it
                right = float(correct_count(model.head(self.val_features), self.val_labels))
        else:
            right = _val_correct(model, self.val_images, self.val_labels, self.placement)
        return binomial_ci95(right / len(self.val_labels), len(self.val_labels))


def train_classifier(
    cfg: ClassifierConfig,
    train: DecodedSplit,
    report: Report,
    val: DecodedSplit | None = None,
    probe_split: DecodedSplit | None = None,
    init_backbone: dict[str, torch.Tensor] | None = None,
    placement: Placement | None = None,
    resume_state: dict[str, Any] | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Train a classifier for cfg.epochs on `train`'s labels, calling report() after every epoch."""
    placement = placement or Placement(torch.device("cpu"))
    method = ClassifierMethod(cfg, train, placement, val, probe_split, init_backbone)
    return run_epochs(method, report, resume_state, prepare_model)


@torch.no_grad()
def _val_correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, placement: Placement) -> float:
    """Correct predictions on the whole val split, each rank scoring its share."""
    rows = torch.as_tensor(rank_share(images.shape[0], placement), device=images.device)
    correct = torch.zeros((), device=placement.device)
    for i in range(0, len(rows), 256):
        chunk = rows[i : i + 256]
        logits = model(normalize(to_unit_float(images.index_select(0, chunk))))
        correct += correct_count(logits, labels.index_select(0, chunk))
    return all_reduce_sum([float(correct)], placement.device)[0]
