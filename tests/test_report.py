"""studies/report.py: a study's report rebuilt from MLflow alone, checked against the runs read back from the store.

A real tiny ProtoNet study (real local Ray, SQLite MLflow) is reported after its Ray results folder is deleted;
a settings study and a study with cells are logged by the real MLflow callback driven as Tune drives it."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
from conftest import own_stderr, tiny_study_argv
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from fsl.commands.report import main as report
from fsl.tracking.importance import infer_distribution, param_importances
from fsl.tracking.mlflow_callback import MLflowStudyCallback
from fsl.tracking.report_figures import running_best
from fsl.tracking.study_reader import names_in_run_names, parse_search_space, parse_values, study_metric

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEARCHED = ("lr", "augment", "head_depth", "distance", "train_way")


# --- pure pieces ----------------------------------------------------------------------------------------------


def test_running_best_keeps_the_highest_so_far_and_skips_missing_scores():
    nan = float("nan")
    best = running_best([nan, 0.3, 0.25, nan, 0.5, 0.4])
    assert math.isnan(best[0]) and best[1:] == [0.3, 0.3, 0.3, 0.5, 0.5]


def test_params_are_read_back_as_the_types_they_were_logged_from():
    assert parse_values(["True", "False", None]) == [True, False, None]
    assert parse_values(["3", "-1"]) == [3, -1]
    assert parse_values(["0.001", "1e-05", "2"]) == [0.001, 1e-05, 2.0]
    assert parse_values(["flip", "none", "3"]) == ["flip", "none", "3"]


def test_distributions_are_inferred_from_the_observed_values():
    assert infer_distribution([0.001, 0.001]) is None  # did not vary
    assert infer_distribution([0.2, 0.9, 0.5]) == FloatDistribution(0.2, 0.9)
    assert infer_distribution([1e-4, 2e-3, 1e-2]) == FloatDistribution(1e-4, 1e-2, log=True)  # two decades
    assert infer_distribution([1e-3, 5e-3], log=True) == FloatDistribution(1e-3, 5e-3, log=True)  # the space says
    assert infer_distribution([0.0, 1e-2], log=True) == FloatDistribution(0.0, 1e-2)  # log needs low > 0
    assert infer_distribution([5, 30, 8]) == IntDistribution(5, 30)
    assert infer_distribution([1, 100]) == IntDistribution(1, 100, log=True)
    assert infer_distribution([0, 100]) == IntDistribution(0, 100)
    assert infer_distribution(["flip", "none", "flip"]) == CategoricalDistribution(("flip", "none"))
    assert infer_distribution([True, False]) == CategoricalDistribution((False, True))


def test_the_search_space_and_run_names_name_the_searched_parameters():
    space = parse_search_space(
        "lr=[0.0001, 0.03] (log); augment={none, flip+crop}; head_depth=[0, 3]", "setting={A, B}"
    )
    assert space == {
        "lr": "[0.0001, 0.03] (log)",
        "augment": "{none, flip+crop}",
        "head_depth": "[0, 3]",
        "setting": "{A, B}",
    }
    assert parse_search_space("none (fixed)") == {}
    assert names_in_run_names(["setting=A lr=1.00e-03", "setting=B lr=2.00e-03 x", "abc123"]) == ["setting", "lr"]


def test_the_study_metric_is_found_from_what_the_runs_logged():
    assert study_metric(["final_best_probe_acc", "final_best_probe_acc_ci95", "probe_acc"], []) == "probe_acc"
    assert study_metric(["val_acc", "best_val_acc"], ["untrained_val_acc", "untrained_val_acc_ci95"]) == "val_acc"
    assert study_metric(["val_acc", "best_val_acc"], []) == "val_acc"  # a study interrupted before any trial ended
    assert study_metric([], []) is None


def _trials(rows: list[tuple[float, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"params.lr": lr, "params.augment": aug, "params.seed": 0, "best_val_acc": v} for lr, v, aug in rows]
    )


def test_importance_needs_two_scored_trials_and_a_varying_parameter():
    nan = float("nan")
    one = param_importances(_trials([(1e-3, 0.5, "flip"), (1e-2, nan, "none")]), ["lr", "augment"], "best_val_acc")
    assert one.importances == {} and one.note == "needs at least 2 scored trials; this study has 1"
    fixed = param_importances(_trials([(1e-3, 0.5, "flip"), (1e-3, 0.6, "flip")]), ["lr", "augment"], "best_val_acc")
    assert fixed.importances == {} and fixed.note == "no searched parameter took more than one value"
    tied = param_importances(_trials([(1e-3, 0.5, "flip"), (1e-2, 0.5, "none")]), ["lr", "augment"], "best_val_acc")
    assert tied.importances == {} and tied.note == "every scored trial has the same score"


def test_importance_finds_the_parameter_that_decides_the_score():
    # The score follows augment only; lr is noise around it. seed never varies and is left out.
    rows = [(lr, 0.8 if aug == "flip" else 0.3, aug) for lr in (1e-4, 1e-3, 1e-2) for aug in ("flip", "none")]
    result = param_importances(_trials(rows), ["lr", "augment", "seed"], "best_val_acc", {"lr": "[1e-4, 1e-2] (log)"})
    assert list(result.importances) == ["augment", "lr"] and result.importances["augment"] > 0.9
    assert result.distributions["lr"] == FloatDistribution(1e-4, 1e-2, log=True) and result.n_trials == 6
    again = param_importances(_trials(rows), ["lr", "augment", "seed"], "best_val_acc", {"lr": "[1e-4, 1e-2] (log)"})
    assert again.importances == result.importances  # seeded


# --- a real study, reported from its tracking URI only ----------------------------------------------------------


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def _table_rows(section: str) -> list[dict[str, str]]:
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split(" | ")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split(" | ")), strict=True)) for line in lines[2:]]


def _figures(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


@pytest.fixture(scope="module")
def study(local_ray, tiny_hw4_master: Path, tmp_path_factory):
    """4 trials x 2 epochs on the tiny data; then Ray's results folder is deleted: only MLflow remains."""
    from fsl.commands.protonet_search import main as protonet_search

    tmp = tmp_path_factory.mktemp("report")
    argv = tiny_study_argv(tiny_hw4_master, tmp, "report-protonet", "tiny") + [
        *"--num-samples 4 --epochs 2 --episodes-per-epoch 3 --grace-period 1 --max-concurrent 2".split(),
        *"--param train_way=5..8".split(),
    ]
    assert protonet_search(argv) == 0
    shutil.rmtree(tmp / "results")
    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["report-protonet"])
    return {
        "tmp": tmp,
        "uri": uri,
        "parent": runs[runs["tags.fsl.role"] == "study"].iloc[0],
        "children": runs[runs["tags.fsl.role"] == "trial"],
    }


@pytest.fixture(scope="module")
def reported(study):
    out = study["tmp"] / "report"
    argv = ["--tracking-uri", study["uri"], "--experiment", "report-protonet", "--out", str(out)]
    assert report(argv) == 0
    return {"out": out, "text": (out / "report.md").read_text(), "argv": argv}


@pytest.mark.ray
def test_the_best_trials_table_is_the_children_best_first(study, reported):
    children = study["children"]
    rows = _table_rows(_section(reported["text"], "Best trials"))
    assert sorted(row["run id"] for row in rows) == sorted(children["run_id"])  # every trial, once
    best = children.loc[children["metrics.final_best_val_acc"].idxmax()]
    top = rows[0]
    assert top["run id"] == best["run_id"] and top["trial"] == best["tags.fsl.trial_id"]
    assert top["val_acc"] == f"{best['metrics.final_best_val_acc']:.4f} ± {best['metrics.final_best_val_acc_ci95']:.4f}"
    scores = [float(row["val_acc"].split(" ± ")[0]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    for name in SEARCHED:
        assert name in rows[0], name
    assert f"parent run `{study['parent']['run_id']}`" in reported["text"]
    assert f"measured on {study['parent']['params.evaluation']}" in reported["text"]


@pytest.mark.ray
def test_the_importance_section_names_the_searched_parameters(study, reported):
    section = _section(reported["text"], "Hyperparameter importance")
    rows = _table_rows(section)
    children = study["children"]
    varying = {name for name in SEARCHED if children[f"params.{name}"].nunique() > 1}
    assert "lr" in varying and {row["parameter"] for row in rows} == varying
    assert sum(float(row["importance"]) for row in rows) == pytest.approx(1.0, abs=0.01)
    lr_row = next(row for row in rows if row["parameter"] == "lr")
    assert lr_row["distribution"].endswith(" log")  # the parent's search space says loguniform
    assert "fANOVA" in section and "seed 0" in section


@pytest.mark.ray
def test_the_figures_are_pngs_beside_the_report_and_on_the_parent_run(study, reported):
    out, text = reported["out"], reported["text"]
    figures = _figures(text)
    assert {"history.png", "curves.png", "importance.png", "lr.png"} <= set(figures)
    for name in figures:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    assert "## Settings A–E" not in text and "## Best trial per cell" not in text
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials["run_id"]) == set(study["children"]["run_id"])

    client = MlflowClient(study["uri"])
    parent_id = study["parent"]["run_id"]
    logged = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert logged == {f"report/{name}" for name in ("report.md", "trials.csv", *figures)}
    copy = Path(client.download_artifacts(parent_id, "report/report.md", str(study["tmp"] / "dl")))
    assert copy.read_text() == text


@pytest.mark.ray
def test_a_rerun_overwrites_and_duplicates_nothing(study, reported, capsys):
    client = MlflowClient(study["uri"])
    parent_id = study["parent"]["run_id"]
    before = {a.path for a in client.list_artifacts(parent_id, "report")}
    runs_before = len(mlflow.search_runs(experiment_names=["report-protonet"]))
    assert report(reported["argv"]) == 0  # --study omitted: the latest study of the experiment, the same one
    assert (reported["out"] / "report.md").read_text() == reported["text"]
    assert {a.path for a in client.list_artifacts(parent_id, "report")} == before
    assert len(mlflow.search_runs(experiment_names=["report-protonet"])) == runs_before
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert "logged to the parent run" in capsys.readouterr().out


@pytest.mark.ray
def test_no_log_writes_only_the_local_report(study, tmp_path: Path):
    argv = ["--tracking-uri", study["uri"], "--study", "tiny", "--out", str(tmp_path / "r"), "--no-log"]
    assert report(argv) == 0
    assert (tmp_path / "r" / "report.md").is_file()


# --- studies logged by the real callback, driven as Tune drives it ---------------------------------------------


def _log_study(
    uri: str, tmp: Path, name: str, trials: list[dict], metric: str = "val_acc", crash: bool = False, **callback
) -> None:
    """Each trial dict: its config and its metric per epoch; run through the callback's Tune hooks. With crash, the
    driver dies during the last trial (it never completes, the study never ends)."""
    cb = MLflowStudyCallback(
        tracking_uri=uri, experiment="fake", study_name=name, study_path=f"/storage/{name}", metric=metric,
        results_dir=str(tmp / name), study_metrics={f"untrained_{metric}": 0.1}, **callback,
    )  # fmt: skip
    cb.setup()
    done = []
    for i, spec in enumerate(trials):
        trial = SimpleNamespace(
            trial_id=f"{name}-{i}", config=spec["config"], status="TERMINATED", checkpoint=None, last_result={}
        )
        cb.on_trial_start(0, [], trial)
        best = (-1.0, 0.0, 0)
        for epoch, acc in enumerate(spec["scores"], start=1):
            best = max(best, (acc, 0.05, epoch), key=lambda b: b[0])
            result = {"epoch": epoch, metric: acc, f"{metric}_ci95": 0.05, "train_loss": 1.0 / epoch}
            result |= {f"best_{metric}": best[0], f"best_{metric}_ci95": best[1], "best_epoch": best[2]}
            trial.last_result = result
            cb.on_trial_result(0, [], trial, result)
        if crash and i == len(trials) - 1:
            return
        cb.on_trial_complete(0, [], trial)
        done.append(trial)
    cb.on_experiment_end(done)


SETTINGS = {"A": ("none", "full"), "B": ("supervised", "full"), "C": ("byol", "full"), "D": ("supervised", "frozen")}
SETTINGS["E"] = ("byol", "frozen")
# Two trials per setting (lr 1e-3 and 1e-2): (val_acc per epoch of the first, of the second).
SETTING_SCORES = {
    "A": ([0.20, 0.30], [0.25, 0.28]),
    "B": ([0.40, 0.35], [0.30, 0.45]),
    "C": ([0.50, 0.55], [0.10, 0.20]),
    "D": ([0.15, 0.22], [0.21, 0.18]),
    "E": ([0.05, 0.12], [0.11, 0.10]),
}


@pytest.fixture(scope="module")
def fake_store(tmp_path_factory) -> str:
    """A settings study, a study with cells, a BYOL-like study and a one-trial study, logged in that order."""
    tmp_path = tmp_path_factory.mktemp("fake")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trials = [
        {
            "config": {"setting": s, "pretraining": SETTINGS[s][0], "finetune": SETTINGS[s][1], "lr": lr, "epochs": 2}
            | {"augment": "flip+crop"},
            "scores": scores,
        }
        for s, pair in SETTING_SCORES.items()
        for lr, scores in zip((1e-3, 1e-2), pair, strict=True)
    ]
    _log_study(
        uri, tmp_path, "settings", trials, searched=["setting", "pretraining", "finetune", "lr"],
        study_params={"search_space": "lr=[0.0001, 0.01] (log)", "grid": "setting={A, B, C, D, E}"},
        trial_tags=("setting", "pretraining", "finetune"),
    )  # fmt: skip
    # An ablation's cells as the study tags them: fsl.cell is a label made from the cell's key (k_shot).
    cells = [
        {"config": {"k_shot": k, "cell": f"{k}-shot", "width": width, "epochs": 2}, "scores": [score, score + 0.01]}
        for k, width, score in ((1, 8, 0.4), (1, 16, 0.6), (5, 8, 0.3), (5, 16, 0.2))
    ]
    _log_study(
        uri, tmp_path, "cells", cells, searched=["k_shot", "width"], study_params={"search_space": "width={8, 16}"},
        trial_tags=("cell",),
    )  # fmt: skip
    byol = [
        {"config": {"lr": lr, "augment_strength": strength, "epochs": 2}, "scores": [score - 0.1, score]}
        for lr, strength, score in ((1e-4, 0.3, 0.35), (1e-3, 1.0, 0.25), (3e-3, 0.6, 0.3))
    ]
    _log_study(
        uri, tmp_path, "byol", byol, metric="probe_acc", searched=["lr", "augment_strength"],
        study_params={"search_space": "lr=[0.0001, 0.003] (log); augment_strength=[0.3, 1.2]"},
    )  # fmt: skip
    crashed = [
        {"config": {"lr": 0.001, "epochs": 3}, "scores": [0.3, 0.4, 0.35]},
        {"config": {"lr": 0.01, "epochs": 3}, "scores": [0.5, 0.45]},  # its driver died after epoch 2
    ]
    _log_study(
        uri,
        tmp_path,
        "crashed",
        crashed,
        crash=True,
        searched=["lr"],
        study_params={"search_space": "lr=[0.001, 0.01] (log)"},
    )
    single = [{"config": {"lr": 0.001, "epochs": 2}, "scores": [0.3, 0.4]}]
    _log_study(uri, tmp_path, "single", single, searched=[], study_params={"search_space": "none (fixed)"})
    return uri


def test_a_settings_study_gets_the_a_to_e_table_and_chart(fake_store: str, tmp_path: Path):
    out = tmp_path / "settings-report"
    assert report(["--tracking-uri", fake_store, "--study", "settings", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    rows = _table_rows(_section(text, "Settings A–E"))
    assert [row["Setting"] for row in rows] == list("ABCDE")
    for row in rows:
        expected = max(max(scores) for scores in SETTING_SCORES[row["Setting"]])
        assert row["Validation accuracy"] == f"{expected:.4f} ± 0.0500"
    assert rows[1]["Pre-training"].startswith("supervised") and rows[3]["Fine-tuning"].startswith("classifier only")
    assert "settings.png" in _figures(text) and (out / "settings.png").read_bytes()[:8] == PNG_MAGIC
    importance = {row["parameter"] for row in _table_rows(_section(text, "Hyperparameter importance"))}
    assert importance == {"lr", "setting"}  # the search space and the grid; not the derived pretraining
    assert "Skipped: every scored trial" not in text and "lr.png" in _figures(text)  # augment fixed: one colour
    best = _table_rows(_section(text, "Best trials"))[0]
    assert (best["setting"], best["lr"], best["val_acc"]) == ("C", "0.001", "0.5500 ± 0.0500")

    client = MlflowClient(fake_store)
    parent = client.get_run(next(r for r in _parents(fake_store) if r.info.run_name == "settings").info.run_id)
    assert "report/settings.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}


def _parents(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fake")
    return client.search_runs([experiment.experiment_id], "tags.`fsl.role` = 'study'")


def test_cells_get_a_best_per_cell_table_and_missing_sections_say_why(fake_store: str, tmp_path: Path):
    out = tmp_path / "cells-report"
    assert report(["--tracking-uri", fake_store, "--experiment", "fake", "--study", "cells", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    rows = _table_rows(_section(text, "Best trial per cell"))
    assert [(r["cell"], r["trials"], r["val_acc"], r["k_shot"], r["width"]) for r in rows] == [
        ("1-shot", "2", "0.6100 ± 0.0500", "1", "16"),
        ("5-shot", "2", "0.3100 ± 0.0500", "5", "8"),
    ]
    importance = [row["parameter"] for row in _table_rows(_section(text, "Hyperparameter importance"))]
    assert sorted(importance) == ["k_shot", "width"]  # the searched width and the cells' key
    assert "Skipped: the trials have no lr and augment parameter." in text
    assert "## Settings A–E" not in text

    single = tmp_path / "single-report"
    assert report(["--tracking-uri", fake_store, "--study", "single", "--out", str(single), "--no-log"]) == 0
    text = (single / "report.md").read_text()
    assert "Not computed: needs at least 2 scored trials; this study has 1." in text
    assert "Skipped: the trials have no augment parameter." in text
    assert len(_table_rows(_section(text, "Best trials"))) == 1


def test_a_byol_study_is_ranked_by_its_probe(fake_store: str, tmp_path: Path):
    out = tmp_path / "byol-report"
    assert report(["--tracking-uri", fake_store, "--study", "byol", "--out", str(out), "--no-log"]) == 0
    text = (out / "report.md").read_text()
    assert "- Metric `probe_acc`, maximised" in text and "- Untrained model on the same data: 0.1000" in text
    rows = _table_rows(_section(text, "Best trials"))
    assert [(r["lr"], r["augment_strength"], r["probe_acc"]) for r in rows] == [
        ("0.0001", "0.3", "0.3500 ± 0.0500"),
        ("0.003", "0.6", "0.3000 ± 0.0500"),
        ("0.001", "1", "0.2500 ± 0.0500"),
    ]
    importance = _table_rows(_section(text, "Hyperparameter importance"))
    assert {r["parameter"]: r["distribution"] for r in importance} == {
        "lr": "float [0.0001, 0.003] log",
        "augment_strength": "float [0.3, 1]",
    }
    assert "coloured by `augment_strength`" in text and (out / "lr.png").read_bytes()[:8] == PNG_MAGIC


def test_a_study_whose_driver_died_is_reported_from_the_epochs_it_logged(fake_store: str, tmp_path: Path):
    out = tmp_path / "crashed-report"
    assert report(["--tracking-uri", fake_store, "--study", "crashed", "--out", str(out), "--no-log"]) == 0
    text = (out / "report.md").read_text()
    assert "parent run `" in text and "(running)" in text and "- Trials: 2 (1 finished, 1 running)" in text
    rows = _table_rows(_section(text, "Best trials"))
    assert [(r["lr"], r["val_acc"], r["best epoch"], r["epochs"], r["status"]) for r in rows] == [
        ("0.01", "0.5000 ± 0.0500", "1", "2/3", "running"),
        ("0.001", "0.4000 ± 0.0500", "2", "3/3", "finished"),
    ]


def test_the_latest_study_is_the_default(fake_store: str, tmp_path: Path, capsys):
    assert report(["--tracking-uri", fake_store, "--out", str(tmp_path / "latest"), "--no-log"]) == 0
    assert "Study 'single'" in capsys.readouterr().out  # logged last


# --- bad input -------------------------------------------------------------------------------------------------


def _error(argv: list[str], capsys) -> str:
    assert report(argv) == 2
    err = own_stderr(capsys.readouterr().err)  # this module's Ray may print while the report runs
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_lines_ray_forwarded_are_not_counted_as_the_reports_stderr():
    # The line that broke this module's bad-input test once, when the disk was nearly full.
    raylet = (
        "\x1b[33m(raylet)\x1b[0m [2026-11-30 02:22:52,036 E 20650 20661] (raylet) file_system_monitor.cc:116: full\n"
    )
    worker = "(ProtoNetTrainable pid=4242) epoch 1\n(pid=17, ip=10.0.0.2) hello\n"
    ours = "error: tracking URI http://127.0.0.1:9: cannot read it (Connection refused)\n"
    assert own_stderr(raylet + ours + worker) == ours
    assert own_stderr("(not ray) a line of ours\n") == "(not ray) a line of ours\n"


def test_bad_input_is_one_line_and_exit_2(fake_store: str, tmp_path: Path, capsys):
    err = _error(["--tracking-uri", fake_store, "--experiment", "nope"], capsys)
    assert "--experiment nope: no such experiment; there are: " in err and "fake" in err
    err = _error(["--tracking-uri", fake_store, "--experiment", "fake", "--study", "nope"], capsys)
    assert "--study nope: no such study in experiment 'fake'; the studies there: " in err and "settings" in err
    missing = tmp_path / "elsewhere" / "mlflow.db"
    err = _error(["--tracking-uri", f"sqlite:///{missing}"], capsys)
    assert f"no MLflow database at {missing}" in err and not missing.parent.exists()
    err = _error(["--tracking-uri", "http://127.0.0.1:9"], capsys)
    assert "tracking URI http://127.0.0.1:9: cannot read it" in err


def test_a_failed_trial_is_listed_but_never_ranked_above_a_finished_one(tmp_path: Path):
    """A trial that diverged after a good epoch keeps its logged best, but the finished trial leads the table."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trials = [
        {"config": {"lr": 0.001, "epochs": 2}, "scores": [0.3, 0.4]},
        {"config": {"lr": 0.01, "epochs": 2}, "scores": [0.6, 0.7]},
    ]
    _log_study(uri, tmp_path, "diverged", trials, searched=["lr"], study_params={"search_space": "lr=[0.001, 0.01]"})
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fake").experiment_id], "tags.`fsl.role` = 'trial'")
    failed = next(r for r in runs if r.data.params["lr"] == "0.01")
    client.set_terminated(failed.info.run_id, "FAILED")
    out = tmp_path / "report"
    assert report(["--tracking-uri", uri, "--study", "diverged", "--out", str(out), "--no-log"]) == 0
    rows = _table_rows(_section((out / "report.md").read_text(), "Best trials"))
    assert [(r["lr"], r["val_acc"], r["status"].split(":")[0]) for r in rows] == [
        ("0.001", "0.4000 ± 0.0500", "finished"),
        ("0.01", "0.7000 ± 0.0500", "failed"),
    ]
