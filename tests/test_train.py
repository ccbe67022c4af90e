"""The training loop, checkpoints and the config, without Ray."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fsl.data.study_data import EpisodeShape, load_study_data
from fsl.train.checkpoint import load_checkpoint, save_checkpoint
from fsl.train.config import ProtoNetConfig
from fsl.train.evaluate import evaluate_episodes, predict_episodes
from fsl.train.protonet_method import episodes_for_rank, load_best_model, train_protonet
from fsl.train.run_state import TrainingDiverged


@pytest.fixture(scope="module")
def tiny_data(tiny_hw4_master: Path, tmp_path_factory):
    return load_study_data(
        tiny_hw4_master, 16, EpisodeShape(5, 1, 5), 5, 30, seed=0, cache_dir=tmp_path_factory.mktemp("cache")
    )


def _cfg(**changes) -> ProtoNetConfig:
    base = ProtoNetConfig(epochs=2, episodes_per_epoch=4, train_way=5, n_query=5, image_size=16, eval_episodes=30)
    return base.replace(**changes)


def _run(cfg, data, resume_state=None):
    reports = []
    train_protonet(
        cfg, data.train, data.val, data.val_episodes, lambda m, s: reports.append((m, s)), resume_state=resume_state
    )
    return reports


def test_loop_reports_every_epoch_with_a_checkpointable_state(tiny_data):
    torch.set_num_threads(1)
    reports = _run(_cfg(distance="cosine", head_depth=1, augment="flip+crop"), tiny_data)
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    for metrics, state in reports:
        assert np.isfinite(metrics["train_loss"])
        assert 0.0 <= metrics["val_acc"] <= 1.0 and metrics["val_acc_ci95"] > 0
        assert metrics["best_val_acc"] == max(m["val_acc"] for m, _ in reports[: metrics["epoch"]])
        assert set(state) >= {"model", "optimizer", "scheduler", "epoch", "best", "config"}
    assert reports[-1][1]["epoch"] == 2


def test_resume_from_a_checkpoint_continues_exactly(tiny_data, tmp_path: Path):
    """One epoch, a checkpoint written and read back, one more epoch == two unbroken epochs."""
    torch.set_num_threads(1)
    cfg = _cfg(augment="flip+color", head_depth=2, distance="parametric")
    unbroken = _run(cfg, tiny_data)
    first = _run(cfg.replace(epochs=1), tiny_data)
    save_checkpoint(tmp_path, first[-1][1])
    state = load_checkpoint(tmp_path)
    assert state["epoch"] == 1
    resumed = _run(cfg, tiny_data, resume_state=state)
    assert [m["epoch"] for m, _ in resumed] == [2]
    assert resumed[0][0]["train_loss"] == pytest.approx(unbroken[1][0]["train_loss"], rel=1e-5)
    assert resumed[0][0]["val_acc"] == pytest.approx(unbroken[1][0]["val_acc"], abs=1e-6)


def test_best_model_file_loads_and_predicts(tiny_data, tmp_path: Path):
    torch.set_num_threads(1)
    reports = _run(_cfg(epochs=1, head_depth=1), tiny_data)
    save_checkpoint(tmp_path, reports[-1][1])
    model, cfg, info = load_best_model(tmp_path / "best_model.pt")
    assert cfg.head_depth == 1 and info["epoch"] == 1
    images = torch.from_numpy(tiny_data.val.images)
    result = evaluate_episodes(model, images, tiny_data.val_episodes)
    assert result.mean == pytest.approx(info["val_acc"], abs=1e-6)
    predictions = predict_episodes(model, images, tiny_data.val_episodes)
    assert predictions.shape == (30, 25) and predictions.max() < 5
    assert (predictions == tiny_data.val_episodes.query_labels).mean() == pytest.approx(result.mean, abs=1e-6)


def test_checkpoint_of_another_architecture_is_refused(tiny_data, tmp_path: Path):
    reports = _run(_cfg(epochs=1, head_depth=1), tiny_data)
    save_checkpoint(tmp_path, reports[-1][1])
    saved = torch.load(tmp_path / "best_model.pt", weights_only=True)
    saved["config"]["head_depth"] = 3
    torch.save(saved, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: weights do not fit the architecture"):
        load_best_model(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable checkpoint"):
        load_best_model(tmp_path / "junk.pt")


def test_divergence_stops_the_run(tiny_data):
    with pytest.raises(TrainingDiverged, match="train_loss became"):
        _run(_cfg(optimizer="sgd", lr=1e30, epochs=1), tiny_data)


def test_episodes_are_split_across_ranks():
    # Every rank takes the same number of steps (DDP's gradient all-reduces must pair up), rounded up.
    assert [episodes_for_rank(10, r, 3) for r in range(3)] == [4, 4, 4]
    assert sum(episodes_for_rank(100, r, 4) for r in range(4)) == 100
    assert [episodes_for_rank(1, r, 2) for r in range(2)] == [1, 1]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": -1.0}, r"lr=-1.0: must be > 0"),
        ({"head_depth": 4}, r"head_depth=4: must be 0..3"),
        ({"distance": "manhattan"}, r"distance='manhattan': must be one of euclidean, cosine, parametric"),
        ({"augment": "blur"}, r"unknown augmentation 'blur'"),
        ({"head_depth": "two"}, r"head_depth: expected a int, got 'two'"),
        ({"optimizer": "lamb"}, r"optimizer='lamb'"),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        ProtoNetConfig().replace(**changes)


def test_config_from_a_trial_dict_coerces_numbers():
    cfg = ProtoNetConfig.from_dict({"lr": 1, "head_depth": np.int64(2), "unrelated": "x"})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.head_depth == 2 and type(cfg.head_depth) is int
