"""ProtoNet ablations: the paired math, the per-cell searcher, bad input, and a real ablation study end to end
(real local Ray, real SQLite MLflow store)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_study_argv
from mlflow import MlflowClient

from fsl.commands.protonet_ablations import main
from fsl.data.episodes import FixedEpisodes, read_fixed_episodes
from fsl.study.ablation import ABLATIONS, parse_cells
from fsl.study.cell_search import CellSearch
from fsl.study.space import Dimension
from fsl.tracking.ablation_table import ablation_markdown, ablation_table
from fsl.train.evaluate import paired_difference_ci95

# --- the math, against hand-computed values ------------------------------------------------------------


def test_paired_difference_is_the_mean_difference_with_its_own_interval():
    a, b = [1.0, 0.8, 0.6, 1.0], [0.8, 0.8, 0.4, 0.6]
    # differences 0.2, 0, 0.2, 0.4: mean 0.2, population sd sqrt(0.02) -> 1.96 * 0.141421 / 2
    mean, half = paired_difference_ci95(a, b)
    assert mean == pytest.approx(0.2)
    assert half == pytest.approx(1.96 * math.sqrt(0.02) / 2)
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference_ci95([1.0, 0.5], [1.0])


def test_a_constant_gap_is_certain_when_paired_though_the_intervals_overlap():
    rng = np.random.default_rng(0)
    hard = rng.uniform(0.2, 0.9, size=200)  # episode difficulty both cells share
    mean, half = paired_difference_ci95(hard + 0.02, hard)
    assert mean == pytest.approx(0.02) and half == pytest.approx(0.0, abs=1e-12)


def test_fewer_shots_keeps_each_class_first_images_and_the_queries():
    # 2 episodes, 2-way 3-shot: support rows grouped by class.
    support = np.array([[10, 11, 12, 20, 21, 22], [30, 31, 32, 40, 41, 42]])
    query = np.array([[13, 23], [33, 43]])
    labels = np.array([[0, 1], [1, 0]])
    episodes = FixedEpisodes(("a", "b"), support, query, labels, n_way=2, k_shot=3)
    one = episodes.with_shots(1)
    assert one.k_shot == 1 and one.support.tolist() == [[10, 20], [30, 40]]
    assert episodes.with_shots(2).support.tolist() == [[10, 11, 20, 21], [30, 31, 40, 41]]
    assert one.query is episodes.query and one.episode_ids == ("a", "b")
    assert episodes.with_shots(3) is episodes
    with pytest.raises(ValueError, match="cannot take 4"):
        episodes.with_shots(4)


def test_ablation_table_pairs_every_cell_with_the_best():
    cells = [
        {"cell": "euclidean", "accuracies": np.array([1.0, 0.8, 0.6, 1.0]), "trials": 2},
        {"cell": "cosine", "accuracies": np.array([0.8, 0.8, 0.4, 0.6]), "trials": 2},
        {"cell": "parametric", "accuracies": None, "trials": 2},
    ]
    table = ablation_table(cells).set_index("cell")
    assert table.loc["euclidean", "is_best"] and not table.loc["cosine", "is_best"]
    assert table.loc["euclidean", "val_acc"] == pytest.approx(0.85)
    assert table.loc["cosine", "val_acc"] == pytest.approx(0.65)
    assert table.loc["cosine", "diff_vs_best"] == pytest.approx(-0.2)
    assert table.loc["cosine", "diff_ci95"] == pytest.approx(1.96 * math.sqrt(0.02) / 2)
    assert math.isnan(table.loc["euclidean", "diff_vs_best"]) and math.isnan(table.loc["parametric", "val_acc"])
    text = ablation_markdown(table.reset_index(), "distance", "4 report episodes", [])
    assert "| euclidean | 85.00 ± " in text and "| best |" in text
    assert "| cosine | 65.00 ± " in text and "-20.00 ± 13.86 *" in text  # |diff| > its interval
    assert "| parametric | no trial finished |" in text


def test_cells_are_parsed_as_the_studied_field():
    assert parse_cells(ABLATIONS["ways"], "5,20,30") == (5, 20, 30)
    assert parse_cells(ABLATIONS["distance"], "cosine,euclidean") == ("cosine", "euclidean")
    assert parse_cells(ABLATIONS["shots"], None) is None
    with pytest.raises(ValueError, match="--cells: train_way expects a int, got 'x'"):
        parse_cells(ABLATIONS["ways"], "5,x")
    with pytest.raises(ValueError, match="at least 2 values"):
        parse_cells(ABLATIONS["shots"], "5,5")


# --- the per-cell searcher --------------------------------------------------------------------------


def _searcher(per_cell: int = 3) -> CellSearch:
    space = {
        "lr": Dimension("lr", "loguniform", 1e-4, 1e-2),
        "augment": Dimension("augment", "choice", choices=("none", "flip")),
    }
    return CellSearch(
        "k_shot", (1, 5), space, per_cell, "val_acc", seed=0, initial_point={"lr": 1e-3, "augment": "none"}
    )


def test_cell_search_gives_every_cell_the_same_budget_in_turn_and_starts_from_the_recipe():
    searcher = _searcher()
    suggestions = [searcher.suggest(f"t{i}") for i in range(6)]
    assert [s["k_shot"] for s in suggestions] == [1, 5, 1, 5, 1, 5]
    assert suggestions[0] == {"k_shot": 1, "lr": 1e-3, "augment": "none"}
    assert suggestions[1] == {"k_shot": 5, "lr": 1e-3, "augment": "none"}
    assert all(1e-4 <= s["lr"] <= 1e-2 and s["augment"] in ("none", "flip") for s in suggestions)
    assert searcher.suggest("t6") == CellSearch.FINISHED


def test_cell_search_tells_each_cell_its_own_results_and_survives_a_restore(tmp_path: Path):
    searcher = _searcher()
    for i in range(4):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {"val_acc": 0.3, "best_val_acc": 0.4})
    searcher.on_trial_complete("t1", {"val_acc": float("nan"), "best_val_acc": float("nan")})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = _searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    first, second = restored.studies
    assert [t.value for t in first.trials if t.value is not None] == [0.4]  # the trial's best epoch
    assert second.trials[0].state.name == "FAIL"
    assert restored.handed_out == [2, 2] and set(restored.live) == {"t2", "t3"}
    restored.on_trial_complete("t3", {"best_val_acc": 0.7})
    assert second.trials[1].value == 0.7
    assert [s["k_shot"] for s in (restored.suggest("t4"), restored.suggest("t5"))] == [1, 5]
    assert pickle.loads(pickle.dumps(restored)).handed_out == [3, 3]


# --- bad input: one line, exit 2, before Ray --------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--study", "distance", "--param", "distance=cosine"], "--param distance=cosine: --study distance varies"),
        (["--study", "shots", "--k-shot", "5"], "--k-shot: --study shots varies K"),
        (["--study", "ways", "--cells", "5"], "--cells 5: an ablation compares at least 2 values"),
        (["--study", "ways", "--cells", "5,30"], "train_way=30, k_shot=1: "),
        (["--study", "shots", "--cells", "1,40"], "train.csv: class "),
        (["--study", "distance", "--cells", "euclidean,manhattan"], "--cells: distance='manhattan': must be one of"),
        (["--study", "distance", "--report-episodes", "0"], "--report-episodes must be >= 1"),
    ],
)
def test_bad_ablation_input_is_one_line_before_ray(flags, message, tiny_hw4_master: Path, tmp_path: Path, capsys):
    import ray

    code = main(tiny_study_argv(tiny_hw4_master, tmp_path, "bad") + flags)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not ray.is_initialized()


# --- a real ablation ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ablation(local_ray, tiny_hw4_master: Path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablation")
    argv = tiny_study_argv(tiny_hw4_master, tmp, "test-ablations", "tiny-distance") + [
        *"--study distance --num-samples 2 --epochs 2 --episodes-per-epoch 3 --report-episodes 40".split(),
        *"--param train_way=5".split(),
    ]
    code = main(argv)
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["test-ablations"])
    return {"code": code, "argv": argv, "tmp": tmp, "runs": runs, "folder": tmp / "results" / "tiny-distance"}


@pytest.mark.ray
def test_every_cell_gets_the_same_trials_tagged_with_its_cell(ablation):
    assert ablation["code"] == 0
    runs = ablation["runs"]
    parent = runs[runs["tags.fsl.role"] == "study"].iloc[0]
    children = runs[runs["tags.fsl.role"] == "trial"]
    assert parent["tags.fsl.ablation"] == "distance"
    assert (children["tags.mlflow.parentRunId"] == parent["run_id"]).all()
    assert children["tags.fsl.cell"].value_counts().to_dict() == {"euclidean": 2, "cosine": 2, "parametric": 2}
    assert (children["tags.fsl.cell"] == children["params.distance"]).all()
    assert (children["metrics.epochs_run"] == 2).all()  # no early stopping: the same budget everywhere
    # Each cell's first trial is the published recipe.
    first = children[children["params.lr"] == "0.001"]
    assert set(first["tags.fsl.cell"]) == {"euclidean", "cosine", "parametric"}
    assert all(name.startswith("distance=") and " lr=" in name for name in children["tags.mlflow.runName"])
    assert "params.distance" not in parent or pd.isna(parent["params.distance"])  # it varies: not a study param


@pytest.mark.ray
def test_the_table_takes_each_cells_best_trial_and_is_on_the_parent_run(ablation):
    runs = ablation["runs"]
    children = runs[runs["tags.fsl.role"] == "trial"]
    table = pd.read_csv(ablation["folder"] / "ablation.csv").set_index("cell")
    for cell, trials in children.groupby("tags.fsl.cell"):
        best = trials.sort_values("metrics.final_best_val_acc", ascending=False).iloc[0]
        assert table.loc[cell, "mlflow_run_id"] == best["run_id"]
        assert table.loc[cell, "search_val_acc"] == pytest.approx(best["metrics.final_best_val_acc"])
        assert table.loc[cell, "trials"] == 2
    assert table["is_best"].sum() == 1
    best_cell = table.index[table["is_best"]][0]
    assert table.loc[best_cell, "val_acc"] == table["val_acc"].max()
    others = table.drop(index=best_cell)
    assert np.allclose(others["diff_vs_best"], others["val_acc"] - table.loc[best_cell, "val_acc"])
    assert (others["diff_ci95"] >= 0).all()
    parent = runs[runs["tags.fsl.role"] == "study"].iloc[0]
    assert parent["tags.fsl.best_cell"] == best_cell
    logged = {a.path for a in MlflowClient(mlflow.get_tracking_uri()).list_artifacts(parent["run_id"], "results")}
    assert {"results/ablation.csv", "results/ablation.md", "results/ablation.png"} <= logged
    assert {"results/report_episodes.csv", "results/report_episodes_gt.csv"} <= logged


@pytest.mark.ray
def test_table_accuracies_are_reproduced_from_the_logged_checkpoint_and_episodes(ablation, tiny_hw4_master: Path):
    """Anyone can check a number in the table: the cell's checkpoint from MLflow on the report episodes file."""
    from fsl.data.decoded import decode_split
    from fsl.data.sources import read_split
    from fsl.tracking.uri import resolve_checkpoint
    from fsl.train.evaluate import evaluate_episodes
    from fsl.train.protonet_method import load_best_model

    table = pd.read_csv(ablation["folder"] / "ablation.csv")
    row = table[table["cell"] == "cosine"].iloc[0]
    model, cfg, _ = load_best_model(
        resolve_checkpoint(f"runs:/{row['mlflow_run_id']}/checkpoint/best_model.pt", mlflow.get_tracking_uri())
    )
    val = decode_split(read_split(tiny_hw4_master, "val"), cfg.image_size)
    id_to_row = {k: i for i, k in enumerate(val.ids)}
    folder = ablation["folder"]
    episodes = read_fixed_episodes(
        folder / "report_episodes.csv", folder / "report_episodes_gt.csv", id_to_row, val.labels
    )
    assert len(episodes) == 40 and cfg.distance == "cosine"
    result = evaluate_episodes(model, torch.from_numpy(val.images), episodes)
    assert result.mean == pytest.approx(row["val_acc"], abs=1e-6)
    assert result.ci95 == pytest.approx(row["val_acc_ci95"], abs=1e-6)
    # The report episodes are not the ones trials were selected on.
    selection = read_fixed_episodes(
        tiny_hw4_master / "val_testcase.csv", tiny_hw4_master / "val_testcase_gt.csv", id_to_row, val.labels
    )
    assert not np.array_equal(selection.support[:30], episodes.support[:30])


@pytest.mark.ray
def test_the_report_rebuilt_from_mlflow_holds_the_ablation_table(ablation, tmp_path: Path):
    from fsl.commands.report import main as report

    out = tmp_path / "report"
    uri = mlflow.get_tracking_uri()
    assert report(["--tracking-uri", uri, "--experiment", "test-ablations", "--out", str(out), "--no-log"]) == 0
    text = (out / "report.md").read_text()
    assert (ablation["folder"] / "ablation.md").read_text().strip() in text
    section = text.split("## Best trial per cell", 1)[1]
    assert all(f"| {cell} | 2 |" in section for cell in ("euclidean", "cosine", "parametric"))


@pytest.mark.ray
def test_resuming_a_finished_ablation_duplicates_nothing(ablation, capsys):
    before = pd.read_csv(ablation["folder"] / "ablation.csv")
    assert main(ablation["argv"] + ["--resume"]) == 0
    runs = mlflow.search_runs(experiment_names=["test-ablations"])
    assert (runs["tags.fsl.role"] == "trial").sum() == 6 and (runs["tags.fsl.role"] == "study").sum() == 1
    after = pd.read_csv(ablation["folder"] / "ablation.csv")
    pd.testing.assert_frame_equal(before, after)
    assert "| distance | accuracy % (40 report episodes, 95% CI)" in capsys.readouterr().out
