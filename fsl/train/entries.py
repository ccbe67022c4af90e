"""Every training loop behind one call, `entry(config, data, report, placement, resume_state, prepare_model)`,
so the Ray layer runs any of them the same way. `config` is a trial's flat dict; `data` holds the objects
the study shared (decoded splits, fixed episodes, pre-trained weights) by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import nn

from fsl.train.byol_loop import train_byol
from fsl.train.classify_loop import train_classifier
from fsl.train.config import BYOLConfig, ClassifierConfig, ProtoNetConfig
from fsl.train.parallel import Placement
from fsl.train.protonet_loop import train_protonet
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


def run_protonet(config, data, report, placement, resume_state, prepare_model) -> None:  # noqa: ANN001
    cfg = ProtoNetConfig.from_dict(config)
    train_protonet(
        cfg, data["train"], data["val"], data["val_episodes"], report, placement, resume_state, prepare_model
    )


def run_byol(config, data, report, placement, resume_state, prepare_model) -> None:  # noqa: ANN001
    train_byol(
        BYOLConfig.from_dict(config), data["train"], data["probe"], report, placement, resume_state, prepare_model
    )


def run_classifier(config, data, report, placement, resume_state, prepare_model) -> None:  # noqa: ANN001
    """Supervised pre-training (data has 'probe') or an Office-Home setting (data has 'val' and, for
    pre-trained settings, 'backbones' keyed by the pretraining name)."""
    cfg = ClassifierConfig.from_dict(config)
    init = data.get("backbones", {}).get(cfg.pretraining) if cfg.pretraining != "none" else None
    if cfg.pretraining != "none" and init is None:
        raise ValueError(f"pretraining={cfg.pretraining}: the study shared no such backbone")
    train_classifier(
        cfg,
        data["train"],
        report,
        val=data.get("val"),
        probe_split=data.get("probe"),
        init_backbone=init,
        placement=placement,
        resume_state=resume_state,
        prepare_model=prepare_model,
    )
