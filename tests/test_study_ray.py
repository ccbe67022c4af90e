"""A real study end to end: a real local Ray, Tune + Optuna + ASHA, and a real SQLite MLflow store."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import tiny_study_argv
from mlflow import MlflowClient

from fsl.commands.protonet_search import main
from fsl.study.tune_state import KEEP_CHECKPOINTS

pytestmark = pytest.mark.ray

EPOCHS = 3


@pytest.fixture(scope="module")
def study(local_ray, tiny_hw4_master: Path, tmp_path_factory):
    """One 5-trial study on the tiny data, trials one at a time so ASHA's decisions are reproducible."""
    tmp = tmp_path_factory.mktemp("study")
    argv = tiny_study_argv(tiny_hw4_master, tmp, "test-protonet", "tiny-study") + [
        *f"--num-samples 5 --epochs {EPOCHS} --episodes-per-epoch 3 --grace-period 1 --max-concurrent 1".split(),
        *"--param train_way=5..8 --register-model tiny-protonet".split(),
    ]
    code = main(argv)
    return {"code": code, "argv": argv, "tmp": tmp, "uri": f"sqlite:///{tmp}/mlflow.db"}


def _runs(uri: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["test-protonet"])


def test_study_finishes(study, capsys):
    assert study["code"] == 0


def test_mlflow_has_one_parent_and_one_child_per_trial(study):
    runs = _runs(study["uri"])
    parents = runs[runs["tags.fsl.role"] == "study"]
    children = runs[runs["tags.fsl.role"] == "trial"]
    assert len(parents) == 1 and len(children) == 5
    parent = parents.iloc[0]
    assert parent["tags.mlflow.runName"] == "tiny-study" and parent["status"] == "FINISHED"
    assert (children["tags.mlflow.parentRunId"] == parent["run_id"]).all()
    assert children["tags.fsl.trial_id"].nunique() == 5
    assert (children["status"] == "FINISHED").all()
    for name in ("lr", "augment", "head_depth", "distance", "train_way", "epochs", "n_way", "k_shot"):
        assert children[f"params.{name}"].notna().all(), name
    assert children["params.train_way"].astype(int).between(5, 8).all()
    # The first trial is the paper's recipe (clipped to the searched train_way range).
    assert ((children["params.lr"] == "0.001") & (children["params.distance"] == "euclidean")).any()
    assert parent["metrics.untrained_val_acc"] > 0
    for tag in ("fsl.dataset_hash", "fsl.code_version", "fsl.hardware"):
        assert parent[f"tags.{tag}"] and (children[f"tags.{tag}"] == parent[f"tags.{tag}"]).all(), tag
    assert parent["tags.fsl.hardware"].startswith("4 CPU, 0 GPU")  # the test's Ray
    assert parent["metrics.best_val_acc"] == pytest.approx(children["metrics.final_best_val_acc"].max())


def test_each_epoch_is_logged_once_and_early_stopping_happened(study):
    client = MlflowClient(study["uri"])
    children = _runs(study["uri"]).query("`tags.fsl.role` == 'trial'")
    epochs_run = []
    for run_id in children["run_id"]:
        for key in ("val_acc", "val_acc_ci95", "train_loss"):
            steps = [m.step for m in client.get_metric_history(run_id, key)]
            assert steps == sorted(set(steps)) and steps[0] == 1, (key, steps)
        epochs_run.append(len(client.get_metric_history(run_id, "val_acc")))
    assert max(epochs_run) == EPOCHS
    assert min(epochs_run) < EPOCHS  # ASHA stopped at least one trial early
    assert (children["tags.fsl.stopped_early"] == "true").sum() == sum(n < EPOCHS for n in epochs_run)


def test_checkpoints_and_summary_are_artifacts(study):
    client = MlflowClient(study["uri"])
    runs = _runs(study["uri"])
    for run_id in runs.query("`tags.fsl.role` == 'trial'")["run_id"]:
        assert [a.path for a in client.list_artifacts(run_id, "checkpoint")] == ["checkpoint/best_model.pt"]
    parent_id = runs.query("`tags.fsl.role` == 'study'")["run_id"].iloc[0]
    assert {a.path for a in client.list_artifacts(parent_id, "results")} == {
        "results/results.csv",
        "results/results.md",
        "results/val_acc.png",
    }
    local = Path(client.download_artifacts(parent_id, "results/results.csv", str(study["tmp"] / "dl")))
    table = pd.read_csv(local)
    assert len(table) == 5 and table["best_val_acc"].is_monotonic_decreasing
    assert set(table["mlflow_run_id"]) == set(runs.query("`tags.fsl.role` == 'trial'")["run_id"])
    best_file = client.download_artifacts(
        table["mlflow_run_id"][0], "checkpoint/best_model.pt", str(study["tmp"] / "dl")
    )
    from fsl.train.protonet_method import load_best_model

    _, cfg, info = load_best_model(Path(best_file))
    assert info["val_acc"] == pytest.approx(table["best_val_acc"][0])


def test_resuming_a_finished_study_changes_nothing(study, capsys):
    client = MlflowClient(study["uri"])
    before = _runs(study["uri"])
    histories = {r: len(client.get_metric_history(r, "val_acc")) for r in before["run_id"]}
    assert main([*study["argv"], "--resume"]) == 0
    after = _runs(study["uri"])
    assert set(after["run_id"]) == set(before["run_id"])
    assert {r: len(client.get_metric_history(r, "val_acc")) for r in after["run_id"]} == histories
    parent_id = after.query("`tags.fsl.role` == 'study'")["run_id"].iloc[0]
    assert len(client.get_metric_history(parent_id, "best_val_acc")) == 1
    table = pd.read_csv(study["tmp"] / "results" / "tiny-study" / "results.csv")
    assert len(table) == 5 and table["mlflow_run_id"].notna().all()
    out = capsys.readouterr().out
    assert "Best trial" in out
    assert "  best model: models:/tiny-protonet@champion  (mlflow.pytorch.load_model" in out


def test_every_run_has_the_study_s_datasets_once_and_mlflow_s_source_tags(study, tiny_hw4_master: Path):
    """After the study and its resume: the parent and each child hold train, val and the fixed episodes as
    MLflow dataset inputs (one each), which MLflow's own dataset filter finds; Source and Version are set."""
    client = MlflowClient(study["uri"])
    runs = _runs(study["uri"])
    assert len(runs) == 6
    folder = tiny_hw4_master.name
    for run_id in runs["run_id"]:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        seen = {(i.dataset.name, {t.key: t.value for t in i.tags}["mlflow.data.context"]) for i in inputs}
        assert len(inputs) == 3 and seen == {
            (f"{folder}/train", "training"),
            (f"{folder}/val", "evaluation"),
            (f"{folder}/val_testcase", "evaluation"),
        }, seen
        episodes = next(i.dataset for i in inputs if i.dataset.name.endswith("val_testcase"))
        assert json.loads(episodes.source)["uri"] == str((tiny_hw4_master / "val_testcase.csv").resolve())
    experiment = client.get_experiment_by_name("test-protonet").experiment_id
    found = client.search_runs([experiment], f"dataset.name = '{folder}/train' AND dataset.context = 'training'")
    assert {r.info.run_id for r in found} == set(runs["run_id"])
    digests = {i.dataset.digest for i in client.get_run(runs["run_id"][0]).inputs.dataset_inputs}
    assert len(digests) == 3 and all(len(d) == 16 for d in digests)
    commit = runs["tags.mlflow.source.git.commit"]
    assert commit.notna().all() and commit.nunique() == 1 and len(commit.iloc[0]) == 40
    assert (runs["tags.mlflow.source.type"] == "LOCAL").all() and runs["tags.mlflow.source.name"].notna().all()


def test_the_best_trial_is_a_registered_model_that_runs_on_pixels(study, tiny_hw4_master: Path):
    """After the study and its resume: one logged model, on the best trial's run, registered once as version 1
    of tiny-protonet with alias champion; loaded through MLflow it embeds uint8 images as the checkpoint does.
    The parent shows the best val_acc and its interval under the children's keys."""
    import mlflow.pytorch
    import numpy as np
    import torch

    from fsl.train.protonet_method import load_best_model

    client = MlflowClient(study["uri"])
    runs = _runs(study["uri"])
    table = pd.read_csv(study["tmp"] / "results" / "tiny-study" / "results.csv")
    best_run = table["mlflow_run_id"][0]
    parent = runs[runs["tags.fsl.role"] == "study"].iloc[0]
    assert parent["metrics.val_acc"] == pytest.approx(table["best_val_acc"][0])
    assert parent["metrics.val_acc_ci95"] == pytest.approx(table["best_val_acc_ci95"][0])
    experiment = client.get_experiment_by_name("test-protonet").experiment_id
    models = client.search_logged_models([experiment])
    assert [m.source_run_id for m in models] == [best_run]  # one, though the study was resumed
    assert parent["tags.fsl.model_uri"] == f"models:/{models[0].model_id}"
    assert runs.set_index("run_id").loc[best_run, "tags.fsl.model_uri"] == parent["tags.fsl.model_uri"]
    versions = client.search_model_versions("name = 'tiny-protonet'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", best_run)]
    assert str(client.get_model_version_by_alias("tiny-protonet", "champion").version) == "1"
    assert parent["tags.fsl.registered_model"] == "models:/tiny-protonet/1"

    mlflow.set_tracking_uri(study["uri"])
    served = mlflow.pytorch.load_model("models:/tiny-protonet@champion")
    info = mlflow.models.get_model_info("models:/tiny-protonet@champion")
    assert info.signature is not None and info.saved_input_example_info is not None
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    best_file = client.download_artifacts(best_run, "checkpoint/best_model.pt", str(study["tmp"] / "dl-model"))
    net, _, _ = load_best_model(Path(best_file))
    from fsl.data.augment import normalize, to_unit_float

    with torch.no_grad():
        expected = net.eval().embed(normalize(to_unit_float(torch.from_numpy(images))))
        assert torch.allclose(served(torch.from_numpy(images)), expected, atol=1e-5)
    pyfunc = mlflow.pyfunc.load_model("models:/tiny-protonet@champion")
    assert np.asarray(pyfunc.predict(images)).shape == tuple(expected.shape)


def test_study_yaml_is_in_the_folder_and_on_the_parent_and_reruns_the_same_study(study):
    """--config study.yaml plans the same study (data, base config, search space, trials, seed, registry name)
    under a new name; the file is the one the parent run keeps."""
    from fsl.commands.protonet_search import build_parser, plan_from_args
    from fsl.study.study_file import parse_study_args

    path = study["tmp"] / "results" / "tiny-study" / "study.yaml"
    client = MlflowClient(study["uri"])
    parent_id = _runs(study["uri"]).query("`tags.fsl.role` == 'study'")["run_id"].iloc[0]
    kept = Path(client.download_artifacts(parent_id, "study.yaml", str(study["tmp"] / "dl-yaml")))
    assert kept.read_text() == path.read_text()
    assert "search_space:" in kept.read_text() and "train_way: '[5, 8]'" in kept.read_text()

    def plan(argv):
        return plan_from_args(parse_study_args(build_parser(), argv, "fsl-protonet-search"))

    original = plan(_renamed(study["argv"], "again-a"))
    rerun = plan(["--config", str(path), "--study-name", "again-b"])
    assert rerun.base == original.base and rerun.data_root == original.data_root
    assert {n: d.describe() for n, d in rerun.space.items()} == {n: d.describe() for n, d in original.space.items()}
    for field in ("num_samples", "seed", "max_concurrent", "grace_period", "register_model", "tracking_uri"):
        assert getattr(rerun.options, field) == getattr(original.options, field), field
    assert rerun.options.study_name == "again-b"


def _renamed(argv: list[str], name: str) -> list[str]:
    argv = list(argv)
    argv[argv.index("--study-name") + 1] = name
    return argv


def test_trial_results_are_in_ray_storage(study):
    study_dir = study["tmp"] / "results" / "tiny-study"
    trial_dirs = sorted(study_dir.glob("trial-*"))
    assert len(trial_dirs) == 5
    for trial_dir in trial_dirs:
        lines = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in lines] == list(range(1, len(lines) + 1))
        # The last two are kept (fsl.study.tune_state), and Tune's own CSV and TensorBoard copies are not written.
        assert len(list(trial_dir.glob("checkpoint_*"))) == min(len(lines), KEEP_CHECKPOINTS)
        assert sorted(p.name for p in trial_dir.iterdir() if not p.name.startswith("checkpoint_")) == [
            "params.json",
            "params.pkl",
            "result.json",
        ]


@pytest.mark.parametrize(
    "checkpoint",
    [
        "runs:/{run_id}/checkpoint/best_model.pt",
        "models:/tiny-protonet@champion",
        "{model_uri}",
        "runs:/{run_id}/model",
    ],
)
def test_predictions_from_the_best_checkpoint_reproduce_its_accuracy(
    study, tiny_hw4_master: Path, capsys, checkpoint: str
):
    from fsl.commands.protonet_predict import main as predict

    table = pd.read_csv(study["tmp"] / "results" / "tiny-study" / "results.csv")
    out = study["tmp"] / "pred.csv"
    run_id = table["mlflow_run_id"][0]
    model_uri = MlflowClient(study["uri"]).get_run(run_id).data.tags["fsl.model_uri"]
    uri = checkpoint.format(run_id=run_id, model_uri=model_uri)
    assert (
        predict(
            ["--checkpoint", uri, "--tracking-uri", study["uri"], "--data", str(tiny_hw4_master), "--out", str(out)]
        )
        == 0
    )
    predicted = pd.read_csv(out)
    truth = pd.read_csv(tiny_hw4_master / "val_testcase_gt.csv")
    assert list(predicted.columns) == list(truth.columns) and len(predicted) == len(truth)
    accuracy = (predicted.iloc[:, 1:].to_numpy() == truth.iloc[:, 1:].to_numpy()).mean()
    assert accuracy == pytest.approx(table["best_val_acc"][0], abs=1e-6)
    assert f"Accuracy against {tiny_hw4_master / 'val_testcase_gt.csv'}: {accuracy:.4f}" in capsys.readouterr().out


def test_one_process_ran_every_trial_one_after_another(study):
    # Tune reuses a finished (or ASHA-stopped) single-worker trial's process for the next trial.
    study_dir = study["tmp"] / "results" / "tiny-study"
    pids = {
        json.loads(line)["pid"] for f in study_dir.glob("trial-*/result.json") for line in f.read_text().splitlines()
    }
    assert len(pids) == 1, pids


def test_a_reused_process_gives_a_trial_what_a_fresh_one_would(local_ray, tiny_hw4_master: Path, tmp_path: Path):
    # Three trials of one fixed setting, one at a time, so the second and third run in the process the first
    # used: any state a trial left behind (RNG, threads, cached tensors) that changed training would show as
    # metrics that differ from those of the first trial, which ran in a fresh process. (Removing the loop's
    # torch.manual_seed makes this test fail: the weights then depend on what the process ran before.)
    import dataclasses

    from fsl.distributed.train_trial import TrialResources
    from fsl.study.protonet_study import plan_study
    from fsl.study.runner import StudyOptions, run_study
    from fsl.train.config import ProtoNetConfig

    base = ProtoNetConfig(epochs=2, episodes_per_epoch=2, n_query=5, eval_episodes=30, image_size=16)
    options = StudyOptions(
        study_name="same", storage=str(tmp_path / "results"), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        experiment="reuse", num_samples=3, max_concurrent=1, resources=TrialResources(1, 1.0),
    )  # fmt: skip
    fixed = ["lr=0.003", "augment=flip+crop", "head_depth=1", "distance=cosine", "train_way=5"]
    plan = plan_study(tiny_hw4_master, base, fixed, options)
    assert not plan.space
    outcome = run_study(dataclasses.replace(plan, early_stopping=False))
    assert len(outcome.table) == 3
    trials = [
        [json.loads(line) for line in f.read_text().splitlines()]
        for f in sorted(Path(options.study_path).glob("trial-*/result.json"))
    ]
    assert len({row["pid"] for rows in trials for row in rows}) == 1
    keys = ("epoch", "train_loss", "val_acc")
    histories = [[[row[k] for k in keys] for row in rows] for rows in trials]
    assert len(histories[0]) == 2 and histories[1] == histories[0] and histories[2] == histories[0]
