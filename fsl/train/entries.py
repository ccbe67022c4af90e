"""Every training method behind one call, `entry(config, data, report, placement, resume_state, prepare_model)`,
so the Ray layer runs any of them the same way. `config` is a trial's flat dict; `data` holds the objects
the study shared (decoded splits, fixed episodes, pre-trained weights) by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import nn

from fsl.train.parallel import Placement
from fsl.train.registry import MethodEntry
from fsl.train.run_state import Report


class Entry(Protocol):
    def __call__(
        self,
        config: dict[str, Any],
        data: dict[str, Any],
        report: Report,
        placement: Placement,
        resume_state: dict[str, Any] | None,
        prepare_model: Callable[[nn.Module], nn.Module] | None,
    ) -> None: ...


run_protonet = MethodEntry("protonet")
run_byol = MethodEntry("byol")
run_classifier = MethodEntry("supervised")  # also the Office-Home settings (data with 'val')
