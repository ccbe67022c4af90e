"""Typed, validated configurations of one training run (one trial of a study): a shared base and one per method.

Each is a frozen dataclass whose fields are all possible study parameters. Construction checks every field's
type and range, so a bad value is a one-line error before anything starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from fsl.data.augment import parse_policy
from fsl.models.distances import DISTANCES
from fsl.models.resnet import ARCHITECTURES
from fsl.train.precision import PRECISIONS

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("step", "cosine", "none")
FINETUNE = ("full", "frozen")
# best: the epoch with the best validation metric is kept (and reported as best_*); last: the final epoch is,
# as for a pre-training run of fixed length whose weights are used downstream (the seed study's BYOL).
KEEP = ("best", "last")

_TYPES = {"float": (int, float), "int": (int,), "str": (str,), "bool": (bool,)}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The fields every method's run has (optimizer, schedule, precision, length, image size, what is kept, seed),
    the type and range checks, and conversion from a Tune trial's dict. Keyword-only, so a method's config
    adds its own fields and overrides these defaults without caring about field order."""

    # Set by a study's own flags (--epochs, --image-size, ...), not by --param.
    RUN_SHAPE: ClassVar[tuple[str, ...]] = ()

    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"
    lr_step_epochs: int = 0  # StepLR period; 0 = half the epochs
    lr_gamma: float = 0.5
    # bf16: autocast of the training forward pass (weights and optimizer stay float32); channels_last: NHWC
    # weights and batches (the same float32 arithmetic in another memory layout). See fsl.train.precision.
    precision: str = "fp32"
    channels_last: bool = False
    epochs: int = 10
    image_size: int = 84
    keep: str = "best"  # which epoch's weights best_model.pt holds: the best by the method's metric, or the last
    seed: int = 0

    def rules(self) -> list[tuple[str, bool, str]]:
        """(field, ok, what the field must be) for every range check; a method's config extends the list."""
        return [
            ("lr", self.lr > 0, "must be > 0"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}"),
            ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}"),
            ("lr_step_epochs", self.lr_step_epochs >= 0, "must be >= 0"),
            ("lr_gamma", 0 < self.lr_gamma <= 1, "must be in (0, 1]"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("precision", self.precision in PRECISIONS, f"must be one of {', '.join(PRECISIONS)}"),
            ("image_size", self.image_size >= 16, "must be >= 16"),
            ("keep", self.keep in KEEP, f"must be one of {', '.join(KEEP)}"),
        ]

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = _TYPES[str(field.type)]
            if isinstance(value, bool) and field.type != "bool" or not isinstance(value, expected):
                raise ValueError(f"{field.name}: expected a {field.type}, got {value!r}")
        for name, ok, rule in self.rules():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: {rule}")

    @classmethod
    def field_types(cls) -> dict[str, str]:
        """Every field's type name, the method's own fields first (as its config declares them, its search
        dimensions leading), then the shared ones: the order in which help and error messages list them."""
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        declared = [name for klass in cls.__mro__ for name in vars(klass).get("__annotations__", {})]
        return {name: types[name] for name in dict.fromkeys(declared) if name in types}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from a flat dict (a Tune trial's config); keys that are not fields are ignored."""
        types = cls.field_types()
        kwargs = {}
        for key, value in values.items():
            if key not in types:
                continue
            if hasattr(value, "item") and not isinstance(value, str | bool):
                value = value.item()  # numpy scalars from a search space
            if types[key] == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            kwargs[key] = value
        return cls(**kwargs)

    @property
    def step_epochs(self) -> int:
        """The StepLR period: lr_step_epochs, or half the epochs when it is 0."""
        return self.lr_step_epochs or max(1, self.epochs // 2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class ProtoNetConfig(TrainConfig):
    """Hyperparameters and episode shapes of a Prototypical Network run."""

    RUN_SHAPE: ClassVar[tuple[str, ...]] = (
        "epochs",
        "episodes_per_epoch",
        "n_way",
        "k_shot",
        "n_query",
        "eval_episodes",
        "image_size",
        "seed",
    )

    # The study's default search dimensions.
    lr: float = 1e-3
    augment: str = "none"
    head_depth: int = 0
    distance: str = "euclidean"
    train_way: int = 20
    # Fixed unless set with --param.
    head_width: int = 256
    temperature: float = 10.0
    learn_temperature: bool = True
    # channels_last is on by default: the Conv4 training step runs at 80% of the machine's fp32 matmul FLOP/s
    # with it against 52% without (bench/b3, oneDNN on a 2-core CPU), 1.2x to 1.4x the episodes per second
    # over three b1 runs (docs/performance.md).
    channels_last: bool = True
    # The run's shape.
    episodes_per_epoch: int = 100
    n_way: int = 5  # evaluation way (training uses train_way)
    k_shot: int = 1
    n_query: int = 15
    eval_episodes: int = 600

    def rules(self) -> list[tuple[str, bool, str]]:
        parse_policy(self.augment)
        return [
            ("image_size", self.image_size >= 16, "must be >= 16 (Conv4 pools four times)"),
            *super().rules(),
            ("head_depth", 0 <= self.head_depth <= 3, "must be 0..3"),
            ("distance", self.distance in DISTANCES, f"must be one of {', '.join(DISTANCES)}"),
            ("train_way", self.train_way >= 2, "must be >= 2"),
            ("head_width", self.head_width >= 1, "must be >= 1"),
            ("temperature", self.temperature > 0, "must be > 0"),
            ("episodes_per_epoch", self.episodes_per_epoch >= 1, "must be >= 1"),
            ("n_way", self.n_way >= 2, "must be >= 2"),
            ("k_shot", self.k_shot >= 1, "must be >= 1"),
            ("n_query", self.n_query >= 1, "must be >= 1"),
            ("eval_episodes", self.eval_episodes >= 1, "must be >= 1"),
        ]


@dataclass(frozen=True, kw_only=True)
class SelfSupervisedConfig(TrainConfig):
    """What the self-supervised pre-training methods share (BYOL, SimCLR): a ResNet backbone trained on two
    augmented views of each unlabelled image through MLP heads, with a k-NN probe on a labelled split as the
    validation metric. Defaults: the small-batch recipe that works without LARS (Adam, lr 3e-4, cosine decay)."""

    RUN_SHAPE: ClassVar[tuple[str, ...]] = ("epochs", "steps_per_epoch", "image_size", "seed", "probe_k")

    lr: float = 3e-4
    augment_strength: float = 1.0  # 1 = the BYOL paper's augmentation (fsl.data.byol_augment)
    head_depth: int = 1  # hidden layers of each MLP head (both papers: 1)
    batch_size: int = 64  # global: split across the workers of a trial
    arch: str = "resnet50"
    head_width: int = 4096
    projection_dim: int = 256
    weight_decay: float = 1e-6
    schedule: str = "cosine"
    sync_batchnorm: bool = True  # across DDP workers on GPUs (the papers' setting); CPU workers keep local BN
    steps_per_epoch: int = 0  # 0 = one pass over the training images
    probe_k: int = 20

    def rules(self) -> list[tuple[str, bool, str]]:
        return [
            *super().rules(),
            ("augment_strength", 0 <= self.augment_strength <= 2, "must be in [0, 2] (1 = the paper's augmentation)"),
            ("head_depth", 1 <= self.head_depth <= 3, "must be 1..3"),
            ("batch_size", self.batch_size >= 4, "must be >= 4 (BatchNorm needs a batch)"),
            ("arch", self.arch in ARCHITECTURES, f"must be one of {', '.join(ARCHITECTURES)}"),
            ("head_width", self.head_width >= 1, "must be >= 1"),
            ("projection_dim", self.projection_dim >= 1, "must be >= 1"),
            ("steps_per_epoch", self.steps_per_epoch >= 0, "must be >= 0"),
            ("probe_k", self.probe_k >= 1, "must be >= 1"),
        ]


@dataclass(frozen=True, kw_only=True)
class BYOLConfig(SelfSupervisedConfig):
    """BYOL pre-training of a ResNet backbone (Grill et al. 2020). Defaults follow the paper's 100-epoch preset
    where it applies (tau 0.99, heads 4096 -> 256 with one hidden layer)."""

    tau: float = 0.99  # tau_base: the target's EMA rate at the first step, rising to 1 on a cosine schedule

    def rules(self) -> list[tuple[str, bool, str]]:
        return [*super().rules(), ("tau", 0 <= self.tau < 1, "must be in [0, 1)")]


@dataclass(frozen=True, kw_only=True)
class ClassifierConfig(TrainConfig):
    """A ResNet classifier trained with labels: supervised pre-training, or one of the Office-Home settings.

    `pretraining` names the backbone's initial weights (none = random, else the method that pre-trained it);
    `finetune` full trains everything, frozen trains only the head on the backbone's features. The head is
    `head_depth` hidden layers of Linear -> BatchNorm -> ReLU of `head_width` units and a final Linear (the seed
    study: 1 x 512).
    """

    RUN_SHAPE: ClassVar[tuple[str, ...]] = ("epochs", "image_size", "seed", "pretraining", "finetune")

    augment: str = "flip+crop"  # with full fine-tuning
    frozen_augment: str = "none"  # with a frozen backbone; "none" lets the features be extracted once
    head_depth: int = 1
    head_width: int = 512
    batch_size: int = 64
    arch: str = "resnet50"
    pretraining: str = "none"
    finetune: str = "full"
    weight_decay: float = 1e-5
    schedule: str = "cosine"
    image_size: int = 128
    probe_k: int = 20

    def rules(self) -> list[tuple[str, bool, str]]:
        parse_policy(self.augment)
        parse_policy(self.frozen_augment)
        return [
            *super().rules(),
            ("head_depth", 0 <= self.head_depth <= 3, "must be 0..3"),
            ("head_width", self.head_width >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 2, "must be >= 2"),
            ("arch", self.arch in ARCHITECTURES, f"must be one of {', '.join(ARCHITECTURES)}"),
            ("pretraining", method_name(self.pretraining), "must be none or the name of a pre-training method"),
            ("finetune", self.finetune in FINETUNE, f"must be one of {', '.join(FINETUNE)}"),
            ("probe_k", self.probe_k >= 1, "must be >= 1"),
        ]

    @property
    def augmentation(self) -> str:
        """The policy this run trains with: full fine-tuning and a frozen backbone have their own."""
        return self.augment if self.finetune == "full" else self.frozen_augment


def method_name(text: str) -> bool:
    """Whether `text` can name a method: lower-case letters and digits (it becomes part of flags and tags)."""
    return text.isalnum() and text.islower()
