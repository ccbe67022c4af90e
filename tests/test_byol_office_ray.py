"""BYOL pre-training and the Office-Home settings A-E as real studies: a real local Ray (with 2-worker DDP on
Ray Train), Tune, and a real SQLite MLflow store read back through mlflow.search_runs."""

import contextlib
import io
import json
from pathlib import Path

import mlflow
import mlflow.pytorch
import pandas as pd
import pytest
import torch
from conftest import TINY_BYOL_PARAMS, TINY_CLASSIFIER_PARAMS, tiny_output_argv
from mlflow import MlflowClient

from fsl.commands.byol_search import main as byol_search
from fsl.commands.office_settings import main as office_settings

pytestmark = pytest.mark.ray


def _params(flag: str, values: list[str]) -> list[str]:
    return [item for value in values for item in (flag, value)]


def test_byol_study_runs_two_worker_ddp_and_logs_the_probe(local_ray, tiny_hw4_master: Path, tmp_path: Path):
    argv = [
        *("--data", str(tiny_hw4_master), "--image-size", "16", "--arch", "resnet18"),
        *"--num-samples 1 --epochs 2 --steps-per-epoch 3 --workers-per-trial 2".split(),
        *_params("--param", [*TINY_BYOL_PARAMS, "lr=0.001", "augment_strength=0.8", "head_depth=1", "tau=0.99"]),
        *tiny_output_argv(tmp_path, "byol", "byol-ddp"),
    ]
    assert byol_search(argv) == 0

    (trial_dir,) = (tmp_path / "results" / "byol-ddp").glob("trial-*")
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in results] == [1, 2]
    for r in results:
        assert r["world_size"] == 2 and r["ranks_reporting"] == 2
        assert r["local_steps"] == 3  # each rank ran every step on its half of the global batch
        assert r["steps_all_ranks"] == 6  # both ranks' steps, summed
        assert r["probe_acc_rank_spread"] == 0.0  # the probe gathers every rank's features
        assert 0 < r["z_std"] < 1 and r["byol_loss"] > 0 and 0 < r["probe_acc"] <= 1

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["byol"])
    parent = runs[runs["tags.fsl.role"] == "study"].iloc[0]
    child = runs[runs["tags.fsl.role"] == "trial"].iloc[0]
    assert parent["metrics.untrained_probe_acc"] > 0 and parent["tags.fsl.method"] == "byol"
    assert child["params.augment_strength"] == "0.8" and child["params.tau"] == "0.99"
    client = MlflowClient()
    for key in ("byol_loss", "z_std", "probe_acc", "tau"):
        assert [m.step for m in client.get_metric_history(child["run_id"], key)] == [1, 2], key
    assert [a.path for a in client.list_artifacts(child["run_id"], "checkpoint")] == ["checkpoint/best_model.pt"]
    # The data as MLflow datasets on the parent and the trial: train for training, the probe's val images to evaluate.
    for run_id in (parent["run_id"], child["run_id"]):
        inputs = client.get_run(run_id).inputs.dataset_inputs
        contexts = {i.dataset.name: {t.value for t in i.tags if t.key == "mlflow.data.context"} for i in inputs}
        assert contexts == {
            f"{tiny_hw4_master.name}/train": {"training"},
            f"{tiny_hw4_master.name}/probe": {"evaluation"},  # the val images the k-NN probe scores
        }
    # The best (only) trial is an MLflow Model of its run: the backbone's features from uint8 pixels, as the
    # checkpoint's backbone computes them, with a signature and an input example.
    experiment = client.get_experiment_by_name("byol").experiment_id
    (model,) = client.search_logged_models([experiment])
    assert model.source_run_id == child["run_id"] and parent["tags.fsl.model_uri"] == f"models:/{model.model_id}"
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert info.signature is not None and info.saved_input_example_info is not None
    served = mlflow.pytorch.load_model(f"models:/{model.model_id}")
    best_file = client.download_artifacts(child["run_id"], "checkpoint/best_model.pt", str(tmp_path / "dl"))
    saved = torch.load(best_file, map_location="cpu", weights_only=True)
    from fsl.data.augment import normalize, to_unit_float
    from fsl.train.backbones import build_backbone

    backbone = build_backbone(saved["config"]["arch"])
    backbone.load_state_dict(saved["model"])
    images = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = backbone.eval()(normalize(to_unit_float(images)))
        assert expected.shape == (3, 512) and torch.allclose(served(images), expected, atol=1e-5)


@pytest.fixture(scope="module")
def office(local_ray, tiny_hw4_master: Path, tiny_office: Path, tmp_path_factory):
    """The five settings and SimCLR's two, with the three backbones pre-trained first, as part of the study."""
    tmp = tmp_path_factory.mktemp("office")
    argv = [
        *("--data", str(tiny_office), "--pretrain-data", str(tiny_hw4_master), "--image-size", "16"),
        *("--settings", "A,B,C,D,E,C-simclr,E-simclr"),
        *"--arch resnet18 --epochs 2 --pretrain-epochs 1 --pretrain-cpus-per-worker 1".split(),
        *_params("--param", TINY_CLASSIFIER_PARAMS),
        *_params("--byol-param", TINY_BYOL_PARAMS),
        *_params("--simclr-param", TINY_BYOL_PARAMS),
        *_params("--supervised-param", TINY_CLASSIFIER_PARAMS),
        *tiny_output_argv(tmp, "office", "settings"),
        *("--register-model", "office-model"),
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = office_settings(argv)
    return {"code": code, "tmp": tmp, "uri": f"sqlite:///{tmp}/mlflow.db", "out": printed.getvalue()}


def _office_runs(uri: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["office"])


def test_settings_study_has_a_parent_and_a_tagged_child_per_setting(office):
    assert office["code"] == 0
    runs = _office_runs(office["uri"])
    parent = runs[(runs["tags.fsl.role"] == "study") & (runs["tags.mlflow.runName"] == "settings")].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]].sort_values("tags.fsl.setting")
    assert list(children["tags.fsl.setting"]) == ["A", "B", "C", "C-simclr", "D", "E", "E-simclr"]
    assert list(children["params.pretraining"]) == [
        "none",
        "supervised",
        "byol",
        "simclr",
        "supervised",
        "byol",
        "simclr",
    ]
    assert list(children["params.finetune"]) == ["full", "full", "full", "full", "frozen", "frozen", "frozen"]
    assert list(children["tags.fsl.pretraining"]) == list(children["params.pretraining"])
    assert (children["status"] == "FINISHED").all()
    client = MlflowClient(office["uri"])
    for run_id in children["run_id"]:
        assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2]
    # The backbones came from the pre-training studies run first, and the parent says which runs.
    for method in ("byol", "simclr", "supervised"):
        source = parent[f"params.{method}_checkpoint"]
        assert source.startswith("runs:/") and source.endswith("/checkpoint/best_model.pt")
        pre_parent = runs[runs["tags.mlflow.runName"] == f"settings-{method}"]
        assert len(pre_parent) == 1 and pre_parent["tags.fsl.method"].iloc[0] == method
        pre_child = runs[runs["tags.mlflow.parentRunId"] == pre_parent["run_id"].iloc[0]]
        assert source.split("/")[1] == pre_child["run_id"].iloc[0]
    # Each setting's best trial (one each here) and each pre-training's best are MLflow Models of their runs.
    assert children["tags.fsl.model_uri"].str.startswith("models:/").all() and children["tags.fsl.model_uri"].is_unique
    for method in ("byol", "simclr", "supervised"):
        pre_parent = runs[runs["tags.mlflow.runName"] == f"settings-{method}"].iloc[0]
        assert pre_parent["tags.fsl.model_uri"].startswith("models:/")
    mlflow.set_tracking_uri(office["uri"])
    classifier = mlflow.pytorch.load_model(children.iloc[0]["tags.fsl.model_uri"])  # setting A
    images = torch.zeros((2, 16, 16, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert classifier(images).shape == (2, 6)  # logits of the 6 Office classes
    backbone = mlflow.pytorch.load_model(
        runs[runs["tags.mlflow.runName"] == "settings-byol"].iloc[0]["tags.fsl.model_uri"]
    )
    with torch.no_grad():
        assert backbone(images).shape == (2, 512)  # resnet18's features
    # Registered: each setting's best as a version of office-model (alias setting-<name>, champion on the best),
    # each pre-trained backbone as a model of its own.
    registered = {m.name: m for m in client.search_registered_models()}
    assert set(registered) == {"office-model", "office-model-byol", "office-model-simclr", "office-model-supervised"}
    aliases = registered["office-model"].aliases
    settings = ["A", "B", "C", "C-simclr", "D", "E", "E-simclr"]
    assert set(aliases) == {"champion", *(f"setting-{name}" for name in settings)}
    for name, run_id in zip(children["tags.fsl.setting"], children["run_id"], strict=True):
        assert client.get_model_version("office-model", str(aliases[f"setting-{name}"])).run_id == run_id
    champion = client.get_model_version("office-model", str(aliases["champion"])).run_id
    best_score = children.set_index("run_id")["metrics.final_best_val_acc"]
    assert best_score[champion] == best_score.max()
    assert "| Setting | Pre-training | Fine-tuning | Validation accuracy |" in office["out"]
    assert "Pre-training the BYOL backbone first" in office["out"]
    assert "Pre-training the SimCLR backbone first" in office["out"]
    assert "| C-simclr | SimCLR (pre-training data, no labels) | full network |" in office["out"]


def test_the_settings_table_and_chart_are_on_the_parent(office):
    runs = _office_runs(office["uri"])
    parent_id = runs[(runs["tags.fsl.role"] == "study") & (runs["tags.mlflow.runName"] == "settings")]["run_id"].iloc[0]
    client = MlflowClient(office["uri"])
    paths = {a.path for a in client.list_artifacts(parent_id, "results")}
    assert {"results/settings.csv", "results/settings.md", "results/settings.png"} <= paths
    table = pd.read_csv(client.download_artifacts(parent_id, "results/settings.csv", str(office["tmp"] / "dl")))
    assert list(table["setting"]) == ["A", "B", "C", "C-simclr", "D", "E", "E-simclr"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent_id].set_index("tags.fsl.setting")
    for _, row in table.iterrows():
        assert row["val_acc"] == pytest.approx(children.loc[row["setting"], "metrics.final_best_val_acc"])
        assert 0 < row["val_acc_ci95"] < 1


def test_given_checkpoints_skip_pre_training_and_settings_train_with_two_worker_ddp(office, tiny_office: Path, capsys):
    """--ssl-checkpoint as an MLflow runs:/ URI and --supervised-checkpoint as a file, for settings C and D, on 2 DDP
    workers: full fine-tuning (C) and a frozen backbone with features extracted once (D). One study for both checks:
    each DDP trial starts three processes."""
    runs = _office_runs(office["uri"])
    parent = runs[(runs["tags.fsl.role"] == "study") & (runs["tags.mlflow.runName"] == "settings")].iloc[0]
    client = MlflowClient(office["uri"])
    supervised_uri = parent["params.supervised_checkpoint"]
    supervised_file = client.download_artifacts(
        supervised_uri.split("/")[1], "checkpoint/best_model.pt", str(office["tmp"] / "sup")
    )
    argv = [
        *("--data", str(tiny_office), "--image-size", "16", "--arch", "resnet18", "--epochs", "2"),
        *("--settings", "C,D", "--ssl-checkpoint", parent["params.byol_checkpoint"]),
        *("--supervised-checkpoint", supervised_file, "--workers-per-trial", "2"),
        *_params("--param", TINY_CLASSIFIER_PARAMS),
        *tiny_output_argv(office["tmp"], "office", "given"),
    ]
    assert office_settings(argv) == 0
    assert "Pre-training the" not in capsys.readouterr().out
    runs = _office_runs(office["uri"])
    given = runs[(runs["tags.fsl.role"] == "study") & (runs["tags.mlflow.runName"] == "given")].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == given["run_id"]]
    assert sorted(children["tags.fsl.setting"]) == ["C", "D"]
    assert given["params.supervised_checkpoint"] == supervised_file
    assert not runs["tags.mlflow.runName"].isin(["given-byol", "given-supervised"]).any()

    trial_dirs = sorted((office["tmp"] / "results" / "given").glob("trial-*"))
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in results] == [1, 2]
        for r in results:
            assert r["world_size"] == 2 and r["ranks_reporting"] == 2
            assert r["val_acc_rank_spread"] == 0.0  # every rank scored the same val split
            assert r["local_steps"] == 3  # 36 images in global batches of 12, each rank half of every batch
            assert r["steps_all_ranks"] == 6
