"""SimCLR, the fourth method: the NT-Xent loss against hand-computed values, the loop on tiny images through the
shared epoch runner, and what the registry derives from it (Office-Home settings, flags, progress keys)."""

import math
import pickle

import numpy as np
import pytest
import torch
import torchvision

from fsl.commands.office_settings import build_parser
from fsl.data.decoded import DecodedSplit
from fsl.methods.simclr import SimCLR, nt_xent_loss
from fsl.study.office_study import SETTINGS, parse_settings
from fsl.study.progress import LOSSES
from fsl.train.backbones import load_backbone_weights
from fsl.train.checkpoint import load_checkpoint, save_checkpoint
from fsl.train.epochs import run_epochs
from fsl.train.parallel import Placement
from fsl.train.registry import METHODS, MethodEntry, self_supervised_methods
from fsl.train.simclr_method import SimCLRConfig, SimCLRMethod

SIMCLR_TINY = SimCLRConfig(arch="resnet18", head_width=32, projection_dim=16, batch_size=8, epochs=2, image_size=16)
CPU = Placement(torch.device("cpu"))


def tiny_split(n_classes: int = 4, per_class: int = 8, size: int = 16, seed: int = 0) -> DecodedSplit:
    """Images whose mean colour depends on the class, so a few steps can learn them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    base = rng.integers(0, 256, size=(n_classes, 1, 1, 3))
    noise = rng.integers(-40, 40, size=(len(labels), size, size, 3))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    names = tuple(f"class{i}" for i in range(n_classes))
    return DecodedSplit("train", images, labels, names, tuple(str(i) for i in range(len(labels))))


def test_nt_xent_on_known_vectors():
    # Two images a, b; both views of a are (1, 0), of b (0, 1). For each of the 4 views the positive has
    # cosine 1 and the two views of the other image 0: loss = -log(e^(1/T) / (e^(1/T) + 2)) = log(1 + 2 e^(-1/T)).
    z_1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_2 = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # the length does not matter: projections are normalised
    assert nt_xent_loss(z_1, z_2, 1.0).item() == pytest.approx(math.log(1 + 2 / math.e))
    assert nt_xent_loss(z_1, z_2, 0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)))
    # Pairs swapped: each view's "positive" is now orthogonal and one negative identical:
    # -log(e^0 / (e^0 + e^(1/T) + e^0)) = log(2 + e) at T = 1.
    assert nt_xent_loss(z_1, z_2.flip(0), 1.0).item() == pytest.approx(math.log(2 + math.e))


def test_the_loss_trains_the_backbone_and_the_projector():
    torch.manual_seed(0)
    model = SimCLR("resnet18", head_depth=1, head_width=32, projection_dim=8, temperature=0.5)
    loss, z_std = model(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    loss.backward()
    assert all(p.grad is not None for p in [*model.backbone.parameters(), *model.projector.parameters()])
    assert 0 < z_std.item() < 1 and math.isfinite(loss.item())


def test_simclr_trains_on_the_epoch_runner_and_resumes_exactly(tmp_path):
    train, probe = tiny_split(), tiny_split(seed=1)
    unbroken: list[dict] = []
    states: list[dict] = []

    def report(metrics: dict, state: dict) -> None:
        unbroken.append(metrics)
        states.append(state)
        folder = tmp_path / f"epoch{metrics['epoch']}"
        folder.mkdir()
        save_checkpoint(folder, state)

    run_epochs(SimCLRMethod(SIMCLR_TINY, train, probe, CPU), report)
    assert [m["epoch"] for m in unbroken] == [1, 2]
    for m in unbroken:
        assert m["local_steps"] == 4 and 0 < m["z_std"] < 1 and 0 <= m["probe_acc"] <= 1
        # Chance for 2 x 8 views: each picks its pair out of 15 candidates, log(15) = 2.71 when nothing is learned.
        assert 0 < m["simclr_loss"] < 2 * math.log(15)
    assert states[-1]["format"] == "fsl.backbone/1"
    resnet18 = set(torchvision.models.resnet18().state_dict()) - {"fc.weight", "fc.bias"}
    assert set(states[-1]["best"]["model"]) == resnet18
    # What a settings study loads as the backbone of C-simclr / E-simclr.
    weights = load_backbone_weights(tmp_path / "epoch2" / "best_model.pt", "resnet18")
    assert set(weights) == resnet18

    resumed: list[dict] = []
    run_epochs(
        SimCLRMethod(SIMCLR_TINY, train, probe, CPU),
        lambda m, s: resumed.append(m),
        resume_state=load_checkpoint(tmp_path / "epoch1"),
    )
    assert [m["epoch"] for m in resumed] == [2]
    assert resumed[0]["simclr_loss"] == pytest.approx(unbroken[1]["simclr_loss"], rel=1e-5)


def test_a_study_entry_for_simclr_is_derived_from_the_registry():
    entry = pickle.loads(pickle.dumps(MethodEntry("simclr")))  # Ray ships the entry to trial processes
    reports: list[dict] = []
    config = SIMCLR_TINY.replace(epochs=1).to_dict()
    entry(config, {"train": tiny_split(), "probe": tiny_split(seed=1)}, lambda m, s: reports.append(m), CPU, None, None)
    assert len(reports) == 1 and reports[0]["best_probe_acc"] == reports[0]["probe_acc"]
    assert list(self_supervised_methods()) == ["byol", "simclr"]
    # Each method's progress line keeps its own order: its loss, then z_std.
    assert LOSSES.index("byol_loss") < LOSSES.index("z_std") and LOSSES.index("simclr_loss") < LOSSES.index("z_std")
    assert METHODS["simclr"].search_space(0)["temperature"].kind == "loguniform"


def test_the_settings_study_offers_simclr_beside_byol():
    assert SETTINGS["C"] == ("byol", "full") and SETTINGS["E"] == ("byol", "frozen")
    assert SETTINGS["C-simclr"] == ("simclr", "full") and SETTINGS["E-simclr"] == ("simclr", "frozen")
    assert parse_settings("c,C-SimCLR,e-simclr,C-byol") == ("C", "C-simclr", "E-simclr")
    args = build_parser().parse_args(["--simclr-checkpoint", "x.pt", "--simclr-param", "temperature=0.2"])
    assert args.simclr_checkpoint == "x.pt" and args.simclr_param == ["temperature=0.2"]
    with pytest.raises(ValueError, match=r"temperature=0\.0: must be > 0"):
        SIMCLR_TINY.replace(temperature=0.0)
