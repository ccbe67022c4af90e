"""precision=bf16 and channels_last in the three loops, on the CPU (torch's bf16 autocast runs there too): they
train, their losses are computed in float32, checkpoints hold float32 weights and resume exactly, and a bad value
is refused before anything starts."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fsl.data.decoded import DecodedSplit
from fsl.data.study_data import EpisodeShape, load_study_data
from fsl.methods.byol import BYOL
from fsl.study.space import apply_params, default_space
from fsl.train.byol_method import train_byol
from fsl.train.checkpoint import load_checkpoint, save_checkpoint
from fsl.train.classifier_method import train_classifier
from fsl.train.config import BYOLConfig, ClassifierConfig, ProtoNetConfig
from fsl.train.evaluate import evaluate_episodes
from fsl.train.precision import autocast, float32_outputs, to_channels_last
from fsl.train.protonet_method import build_model, load_best_model, train_protonet

FAST = {"precision": "bf16", "channels_last": True}


@pytest.fixture(scope="module")
def tiny_data(tiny_hw4_master: Path, tmp_path_factory):
    return load_study_data(
        tiny_hw4_master, 16, EpisodeShape(5, 1, 5), 5, 30, seed=0, cache_dir=tmp_path_factory.mktemp("cache")
    )


def tiny_split(n_classes: int = 4, per_class: int = 8, size: int = 16, seed: int = 0) -> DecodedSplit:
    """Images whose mean colour depends on the class, so a few steps can learn them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    base = rng.integers(0, 256, size=(n_classes, 1, 1, 3))
    noise = rng.integers(-40, 40, size=(len(labels), size, size, 3))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    names = tuple(f"class{i}" for i in range(n_classes))
    return DecodedSplit("train", images, labels, names, tuple(str(i) for i in range(len(labels))))


def _assert_float32_weights(state: dict) -> None:
    for name, tensor in [*state["model"].items(), *state["best"]["model"].items()]:
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32, name


def _protonet_cfg(**changes) -> ProtoNetConfig:
    base = ProtoNetConfig(epochs=3, episodes_per_epoch=6, train_way=5, n_query=5, image_size=16, eval_episodes=30)
    return base.replace(**changes)


def _run_protonet(cfg, data, resume_state=None) -> list[tuple[dict, dict]]:
    reports: list[tuple[dict, dict]] = []
    train_protonet(
        cfg, data.train, data.val, data.val_episodes, lambda m, s: reports.append((m, s)), resume_state=resume_state
    )
    return reports


def test_protonet_trains_in_bf16_with_channels_last_and_keeps_float32_checkpoints(tiny_data, tmp_path: Path):
    torch.set_num_threads(1)
    # Cosine: on 16-px images the Euclidean loss swings too much in the first steps to compare runs epoch by epoch.
    fp32 = _run_protonet(_protonet_cfg(distance="cosine"), tiny_data)
    fast = _run_protonet(_protonet_cfg(distance="cosine", **FAST), tiny_data)
    losses = [m["train_loss"] for m, _ in fast]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    # The same episodes from the same initial weights: bf16 rounding moves the loss a little, not its course.
    for (m32, _), (m16, _) in zip(fp32, fast, strict=True):
        assert m16["train_loss"] == pytest.approx(m32["train_loss"], rel=0.05)
    state = fast[-1][1]
    _assert_float32_weights(state)
    assert state["config"]["precision"] == "bf16" and state["config"]["channels_last"] is True

    # best_model.pt loads into a plain float32 model and scores what the loop reported.
    save_checkpoint(tmp_path, state)
    model, cfg, info = load_best_model(tmp_path / "best_model.pt")
    assert cfg.precision == "bf16" and next(model.parameters()).dtype == torch.float32
    result = evaluate_episodes(model, torch.from_numpy(tiny_data.val.images), tiny_data.val_episodes)
    assert result.mean == pytest.approx(info["val_acc"], abs=1e-6)


def test_protonet_bf16_resumes_exactly(tiny_data, tmp_path: Path):
    torch.set_num_threads(1)
    cfg = _protonet_cfg(epochs=2, distance="cosine", head_depth=1, **FAST)
    unbroken = _run_protonet(cfg, tiny_data)
    first = _run_protonet(cfg.replace(epochs=1), tiny_data)
    save_checkpoint(tmp_path, first[-1][1])
    resumed = _run_protonet(cfg, tiny_data, resume_state=load_checkpoint(tmp_path))
    assert [m["epoch"] for m, _ in resumed] == [2]
    assert resumed[0][0]["train_loss"] == pytest.approx(unbroken[1][0]["train_loss"], rel=1e-5)
    assert resumed[0][0]["val_acc"] == pytest.approx(unbroken[1][0]["val_acc"], abs=1e-6)


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "parametric"])
def test_protonet_logits_are_float32_under_bf16_autocast(distance):
    cfg = ProtoNetConfig(image_size=16, distance=distance, head_depth=1, **FAST)
    model = to_channels_last(build_model(cfg), cfg)
    float32_outputs(cfg, model.head)
    x = to_channels_last(torch.randn(10, 3, 16, 16), cfg)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert model.backbone.encoder[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    with autocast(cfg, torch.device("cpu")):
        assert model.backbone(x).dtype == torch.bfloat16  # the convolutions do run in bf16
        assert model.embed(x).dtype == torch.float32
        if distance == "euclidean":  # a sum over the features: float32 all the way
            assert model(x, 5, 1).dtype == torch.float32


BYOL_TINY = BYOLConfig(
    arch="resnet18", head_width=32, projection_dim=16, batch_size=8, epochs=3, steps_per_epoch=4, image_size=16, lr=1e-3
)


def test_byol_loss_is_float32_under_bf16_autocast_only_with_the_hooks():
    cfg = BYOL_TINY.replace(**FAST)
    views = [to_channels_last(torch.randn(4, 3, 16, 16), cfg) for _ in range(2)]
    plain = BYOL(cfg.arch, cfg.head_depth, cfg.head_width, cfg.projection_dim)
    with autocast(cfg, torch.device("cpu")):
        assert plain(*views)[0].dtype == torch.bfloat16  # why the loop adds the hooks
    hooked = to_channels_last(BYOL(cfg.arch, cfg.head_depth, cfg.head_width, cfg.projection_dim), cfg)
    float32_outputs(cfg, hooked.predictor, hooked.target_projector)
    with autocast(cfg, torch.device("cpu")):
        loss, _ = hooked(*views)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in hooked.parameters())


def test_byol_trains_in_bf16_with_channels_last_and_resumes_exactly(tmp_path: Path):
    torch.set_num_threads(1)
    cfg = BYOL_TINY.replace(**FAST)
    train, probe = tiny_split(), tiny_split(seed=1)
    fp32: list[dict] = []
    train_byol(BYOL_TINY, train, probe, lambda m, s: fp32.append(m))
    unbroken: list[dict] = []

    def report(metrics: dict, state: dict) -> None:
        unbroken.append(metrics)
        _assert_float32_weights(state)
        folder = tmp_path / f"epoch{metrics['epoch']}"
        folder.mkdir()
        save_checkpoint(folder, state)

    train_byol(cfg, train, probe, report)
    losses = [m["byol_loss"] for m in unbroken]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    for m32, m16 in zip(fp32, unbroken, strict=True):
        assert m16["byol_loss"] == pytest.approx(m32["byol_loss"], rel=0.1)

    resumed: list[dict] = []
    train_byol(cfg, train, probe, lambda m, s: resumed.append(m), resume_state=load_checkpoint(tmp_path / "epoch2"))
    assert [m["epoch"] for m in resumed] == [3]
    assert resumed[0]["byol_loss"] == pytest.approx(unbroken[2]["byol_loss"], rel=1e-5)


@pytest.mark.parametrize("finetune", ["full", "frozen"])
def test_classifier_trains_in_bf16_with_channels_last(finetune):
    torch.set_num_threads(1)
    cfg = ClassifierConfig(arch="resnet18", head_width=16, batch_size=8, epochs=2, image_size=16, finetune=finetune)
    reports: list[tuple[dict, dict]] = []
    train_classifier(cfg.replace(**FAST), tiny_split(), lambda m, s: reports.append((m, s)), val=tiny_split(seed=1))
    assert all(math.isfinite(m["train_loss"]) for m, _ in reports)
    _assert_float32_weights(reports[-1][1])


@pytest.mark.parametrize("config", [ProtoNetConfig, BYOLConfig, ClassifierConfig])
def test_an_unknown_precision_is_refused(config):
    with pytest.raises(ValueError, match=r"precision='fp16': must be one of fp32, bf16"):
        config(precision="fp16")
    with pytest.raises(ValueError, match=r"channels_last: expected a bool, got 'yes please'"):
        config(channels_last="yes please")


def test_precision_and_channels_last_are_study_params():
    base, _ = apply_params(ProtoNetConfig(), default_space(), ["precision=bf16", "channels_last=true"])
    assert base.precision == "bf16" and base.channels_last is True
    with pytest.raises(ValueError, match=r"--param precision='fp16': must be one of fp32, bf16"):
        apply_params(ProtoNetConfig(), default_space(), ["precision=fp16"])
    with pytest.raises(ValueError, match=r"--param channels_last=maybe: channels_last expects a bool"):
        apply_params(ProtoNetConfig(), default_space(), ["channels_last=maybe"])
