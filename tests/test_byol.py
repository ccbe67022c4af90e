"""BYOL, the k-NN probe, the classifier loop and backbone checkpoints: the math against hand-computed
values, and the loops on tiny images."""

import math

import numpy as np
import pytest
import torch
import torchvision

from fsl.data.decoded import DecodedSplit
from fsl.methods.byol import BYOL, byol_loss, cosine_tau, ema_, projection_std
from fsl.train.backbones import load_backbone_weights
from fsl.train.byol_method import train_byol
from fsl.train.checkpoint import load_checkpoint, save_checkpoint
from fsl.train.classifier_method import train_classifier
from fsl.train.config import BYOLConfig, ClassifierConfig
from fsl.train.probe import knn_accuracy, knn_predict


def test_cosine_tau_rises_from_tau_base_to_one():
    assert cosine_tau(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_tau(50, 100, 0.99) == pytest.approx(0.995)
    # 1 - 0.01 * (cos(pi/4) + 1) / 2 = 1 - 0.01 * 0.8535534
    assert cosine_tau(25, 100, 0.99) == pytest.approx(0.991464466)
    assert cosine_tau(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_tau(150, 100, 0.9) == pytest.approx(1.0)


def test_ema_moves_the_target_towards_the_online_weights():
    online, target = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 5.0])]
    ema_(online, target, 0.9)
    # 0.9 * 3 + 0.1 * 1 = 2.8; 0.9 * 5 + 0.1 * 2 = 4.7
    assert torch.allclose(target[0], torch.tensor([2.8, 4.7]))
    assert torch.equal(online[0], torch.tensor([1.0, 2.0]))


def test_byol_loss_on_known_vectors():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [3.0, 0.0]])
    # per row 2 - 2 cos: 0 (same direction), 2 (orthogonal), 4 (opposite), 2 - 2 / sqrt(2)
    expected = (0 + 2 + 4 + (2 - math.sqrt(2))) / 4
    assert byol_loss(p, z).item() == pytest.approx(expected)


def test_projection_std_detects_collapse():
    assert projection_std(torch.ones(8, 4)).item() == pytest.approx(0.0)
    # Normalised rows (1, 0) and (0, 1): each dimension's values are {1, 0}, std (n - 1) = 1/sqrt(2)
    assert projection_std(torch.tensor([[3.0, 0.0], [0.0, 2.0]])).item() == pytest.approx(1 / math.sqrt(2))


def test_the_target_gets_no_gradients_and_follows_by_ema():
    torch.manual_seed(0)
    model = BYOL("resnet18", head_depth=1, head_width=32, projection_dim=8)
    x1, x2 = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    loss, z_std = model(x1, x2)
    loss.backward()
    assert all(p.grad is None for p in model.target_parameters())
    assert all(p.grad is not None for p in model.online_parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert 0 < z_std.item() < 1
    before = [p.detach().clone() for p in model.target_parameters()]
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(1.0)
    model.update_target(0.75)
    after = list(model.target_parameters())
    # target = 0.75 * old + 0.25 * (old + 1) = old + 0.25, because target and online started equal
    assert all(torch.allclose(a, b + 0.25, atol=1e-6) for a, b in zip(after, before, strict=True))


def test_knn_is_leave_one_out_with_similarity_weighted_votes():
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    # k=1: each point's nearest other point is its cluster mate, never itself.
    assert knn_predict(features, labels, k=1).tolist() == [0, 0, 1, 1]

    # Query (1, 0) with neighbours at cosine 0.99 (label 1), 0.98 and 0.97 (label 0): with temperature 0.07
    # the votes are e^(0.99/0.07) = 1.39e6 for label 1 against e^14 + e^13.86 = 2.25e6 for label 0.
    def at(cos: float) -> list[float]:
        return [cos, math.sqrt(1 - cos**2)]

    features = torch.tensor([[1.0, 0.0], at(0.99), at(0.98), at(0.97)])
    labels = torch.tensor([0, 1, 0, 0])
    assert knn_predict(features, labels, k=3, temperature=0.07)[0].item() == 0
    assert knn_predict(features, labels, k=1)[0].item() == 1
    # k=1: the points at 0.98 and 0.97 are each other's nearest (right); the first point's nearest is the one at
    # 0.99 (wrong), whose own nearest is the one at 0.98 (wrong).
    assert knn_accuracy(features, labels, k=1) == pytest.approx(0.5)


def tiny_split(n_classes: int = 4, per_class: int = 8, size: int = 16, seed: int = 0) -> DecodedSplit:
    """Images whose mean colour depends on the class, so a few steps can learn them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    base = rng.integers(0, 256, size=(n_classes, 1, 1, 3))
    noise = rng.integers(-40, 40, size=(len(labels), size, size, 3))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    names = tuple(f"class{i}" for i in range(n_classes))
    return DecodedSplit("train", images, labels, names, tuple(str(i) for i in range(len(labels))))


BYOL_TINY = BYOLConfig(arch="resnet18", head_width=32, projection_dim=16, batch_size=8, epochs=2, image_size=16)


def test_byol_loop_reports_every_epoch_and_resumes_exactly(tmp_path):
    train, probe = tiny_split(), tiny_split(seed=1)
    unbroken: list[dict] = []
    states: list[dict] = []

    def report(metrics: dict, state: dict) -> None:
        unbroken.append(metrics)
        states.append(state)
        folder = tmp_path / f"epoch{metrics['epoch']}"
        folder.mkdir()
        save_checkpoint(folder, state)  # as the Ray layer does, before the next epoch changes anything

    train_byol(BYOL_TINY, train, probe, report)
    assert [m["epoch"] for m in unbroken] == [1, 2]
    for m in unbroken:
        assert m["local_steps"] == 4 and 0 < m["z_std"] < 1 and 0 <= m["probe_acc"] <= 1
        assert math.isfinite(m["byol_loss"]) and m["tau"] > BYOL_TINY.tau
    assert states[-1]["format"] == "fsl.backbone/1"
    assert set(states[-1]["best"]["model"]) == set(torchvision.models.resnet18().state_dict()) - {
        "fc.weight",
        "fc.bias",
    }

    resumed: list[dict] = []
    train_byol(
        BYOL_TINY, train, probe, lambda m, s: resumed.append(m), resume_state=load_checkpoint(tmp_path / "epoch1")
    )
    assert [m["epoch"] for m in resumed] == [2]
    assert resumed[0]["byol_loss"] == pytest.approx(unbroken[1]["byol_loss"], rel=1e-5)


CLASSIFIER_TINY = ClassifierConfig(arch="resnet18", head_width=16, batch_size=8, epochs=2, image_size=16)


def test_frozen_backbone_stays_fixed_and_full_finetuning_changes_it():
    train, val = tiny_split(), tiny_split(seed=1)
    torch.manual_seed(3)
    init = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    for finetune in ("frozen", "full"):
        states: list[dict] = []
        metrics: list[dict] = []

        def report(m: dict, s: dict, metrics: list = metrics, states: list = states) -> None:
            metrics.append(m)
            states.append(s)

        cfg = CLASSIFIER_TINY.replace(finetune=finetune, pretraining="byol")
        train_classifier(cfg, train, report, val=val, init_backbone=init)
        backbone = {k.removeprefix("backbone."): v for k, v in states[-1]["model"].items() if k.startswith("backbone.")}
        same = all(torch.equal(backbone[k], init[k]) for k in init)
        assert same == (finetune == "frozen"), finetune
        assert [m["epoch"] for m in metrics] == [1, 2] and 0 <= metrics[-1]["val_acc"] <= 1
        assert metrics[-1]["val_acc_ci95"] > 0


def test_val_labels_are_matched_to_training_classes_by_name():
    train = tiny_split()
    val = DecodedSplit("val", train.images[:3], np.array([0, 1, 1]), ("class2", "class0"), ("a", "b", "c"))
    assert val.labels_in(train.class_names, "val.csv").tolist() == [2, 0, 0]
    stranger = DecodedSplit("val", train.images[:1], np.array([0]), ("zebra",), ("a",))
    with pytest.raises(ValueError, match="val.csv: label 'zebra' is not a class of the training split"):
        stranger.labels_in(train.class_names, "val.csv")


def test_backbone_checkpoints_are_checked_against_the_architecture(tmp_path):
    resnet18 = torchvision.models.resnet18().state_dict()
    plain = tmp_path / "plain.pt"
    torch.save({f"module.{k}": v for k, v in resnet18.items()}, plain)  # a DDP-saved torchvision state dict
    weights = load_backbone_weights(plain, "resnet18")
    assert "fc.weight" not in weights and "conv1.weight" in weights
    with pytest.raises(ValueError, match="do not fit a resnet50 backbone; the weights fit resnet18"):
        load_backbone_weights(plain, "resnet50")

    best = {k: v for k, v in resnet18.items() if not k.startswith("fc.")}
    state = {"best": {"model": best, "probe_acc": 0.5, "epoch": 1}, "config": BYOL_TINY.to_dict()}
    save_checkpoint(tmp_path, {**state, "format": "fsl.backbone/1"})
    with pytest.raises(ValueError, match="a resnet18 backbone, but the study uses resnet50"):
        load_backbone_weights(tmp_path / "best_model.pt", "resnet50")
    assert load_backbone_weights(tmp_path / "best_model.pt", "resnet18").keys() == best.keys()

    (tmp_path / "protonet").mkdir()
    save_checkpoint(tmp_path / "protonet", {**state, "format": "fsl.protonet/1"})
    with pytest.raises(ValueError, match="a fsl.protonet/1 checkpoint, not a ResNet backbone"):
        load_backbone_weights(tmp_path / "protonet" / "best_model.pt", "resnet18")
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_backbone_weights(tmp_path / "missing.pt", "resnet18")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_backbone_weights(tmp_path / "text.pt", "resnet18")


def test_keep_last_keeps_the_final_epoch_whatever_the_probe_says():
    train, probe = tiny_split(), tiny_split(seed=1)
    states: list[dict] = []
    metrics: list[dict] = []
    cfg = BYOL_TINY.replace(epochs=3, keep="last")
    train_byol(cfg, train, probe, lambda m, s: (metrics.append(m), states.append(s)))
    assert [m["best_epoch"] for m in metrics] == [1, 2, 3]
    assert [m["best_probe_acc"] for m in metrics] == [m["probe_acc"] for m in metrics]
    final = {k.removeprefix("backbone."): v for k, v in states[-1]["model"].items() if k.startswith("backbone.")}
    assert all(torch.equal(final[k], v) for k, v in states[-1]["best"]["model"].items())
    with pytest.raises(ValueError, match="keep='first': must be one of best, last"):
        BYOL_TINY.replace(keep="first")
