"""Every training method, by name. Study entries, search spaces, progress keys, checkpoint formats and the
pre-training methods of the Office-Home settings study are derived from this one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from fsl.train.byol_method import BYOLMethod
from fsl.train.classifier_method import ClassifierMethod
from fsl.train.epochs import run_epochs
from fsl.train.method import SELF_SUPERVISED, Method
from fsl.train.parallel import Placement
from fsl.train.protonet_method import ProtoNetMethod
from fsl.train.run_state import Report
from fsl.train.simclr_method import SimCLRMethod

METHODS: dict[str, type[Method]] = {m.name: m for m in (ProtoNetMethod, ClassifierMethod, BYOLMethod, SimCLRMethod)}


def method_named(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"method {name!r}: expected one of {', '.join(METHODS)}")
    return METHODS[name]


def method_for_format(best_format: str) -> type[Method] | None:
    """The method whose best_model.pt files have this format (the first registered, for a shared format)."""
    return next((m for m in METHODS.values() if m.best_format == best_format), None)


def pretraining_methods(kind: str | None = None) -> dict[str, type[Method]]:
    """The methods that pre-train a ResNet backbone (of `kind`: SUPERVISED or SELF_SUPERVISED), in registry order."""
    return {n: m for n, m in METHODS.items() if m.pretrains is not None and kind in (None, m.pretrains)}


def self_supervised_methods() -> dict[str, type[Method]]:
    return pretraining_methods(SELF_SUPERVISED)


def progress_keys() -> tuple[str, ...]:
    """Every training number any method's progress line may show, once each, in an order that keeps each
    method's own: first the keys methods list first (their losses), then the second ones, and so on."""
    keys = dict.fromkeys(key for m in METHODS.values() for key in m.progress_keys)
    rank = {key: min(m.progress_keys.index(key) for m in METHODS.values() if key in m.progress_keys) for key in keys}
    return tuple(sorted(keys, key=rank.__getitem__))


@dataclass(frozen=True)
class MethodEntry:
    """What a study's trial calls: `entry(config, data, report, placement, resume_state, prepare_model)` trains
    the named method with the trial's flat config on the data the study shared. A picklable value (Ray ships it
    to the trial processes by name)."""

    name: str

    def __call__(
        self,
        config: dict[str, Any],
        data: dict[str, Any],
        report: Report,
        placement: Placement,
        resume_state: dict[str, Any] | None,
        prepare_model: Callable[[nn.Module], nn.Module] | None,
    ) -> None:
        run_epochs(method_named(self.name).from_data(config, data, placement), report, resume_state, prepare_model)
