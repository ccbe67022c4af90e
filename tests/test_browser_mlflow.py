"""The MLflow UI in a real browser (issue 4): a real `mlflow server` on 127.0.0.1, a tiny real ProtoNet study
logged to it over HTTP, and headless Chromium checking what a person reading the results sees: the study's
run with its trials nested under it, their lr / head_depth / augment params and val_acc metric, and the
compare view of two trials; and (issue 17) MLflow's own parts: each run's datasets in the Dataset column,
its source and code version in the Source and Version columns, the study run's best val_acc in its metric
column, and the best trial registered on the Models page with its `champion` alias. What the UI shows is
compared with what MLflow's API has. Runs that are not nested, lack a param, a dataset input or a source tag,
a parent without its metric and a registered model without the alias make the same checks fail."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import tiny_study_argv
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow_ui import (
    DATASET,
    browser_available,
    check_compare_page,
    check_dataset_column,
    check_experiment_page,
    check_registered_model,
    check_run_metrics,
    check_source_columns,
    is_png,
    metric_column,
    open_chromium,
    param_column,
    read_run_columns,
    save_screenshot,
    scroll_to_column,
    start_mlflow_server,
)

pytestmark = [pytest.mark.ray, pytest.mark.browser]

PARAMS = ("lr", "head_depth", "augment")
METRICS = ("val_acc",)
PARENT_METRICS = ("val_acc", "val_acc_ci95")  # the best trial's, under the children's keys
MODEL = "browser-protonet-model"
CHAMPION = "champion"
SOURCE_NAME, SOURCE_TYPE, GIT_COMMIT = "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit"
DATA_CONTEXT = "mlflow.data.context"

if not browser_available():
    message = "Debian's chromium and chromium-driver are not installed (bash scripts/setup-browser.sh)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)  # CI installs them: a missing browser is a broken setup there
    pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def driver():
    driver = open_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def study(local_ray, tiny_hw4_master: Path, tmp_path_factory, server):
    """A 2-trial study of 2 epochs on the tiny data, logged to the server, its best trial registered as MODEL;
    its runs as MLflow's API has them."""
    from fsl.commands.protonet_search import main

    tmp = tmp_path_factory.mktemp("study")
    argv = tiny_study_argv(tiny_hw4_master, tmp, "browser-protonet", "browser-study")
    argv[argv.index("--tracking-uri") + 1] = server.url
    argv += "--num-samples 2 --epochs 2 --episodes-per-epoch 2 --grace-period 2 --max-concurrent 1".split()
    argv += ["--register-model", MODEL]
    assert main(argv) == 0
    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name("browser-protonet")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("fsl.role") == "study")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    return {"experiment_id": experiment.experiment_id, "parent": parent, "children": children, "data": tiny_hw4_master}


@pytest.fixture(scope="module")
def runs_page(server, driver, study, tmp_path_factory):
    """The runs table's Dataset, Source, Version and Models cells of the study's runs and the parent's metric
    cells, read once (the checks below judge them); a screenshot of the table."""
    parent, children = study["parent"], study["children"]
    table = read_run_columns(
        driver,
        server.url,
        study["experiment_id"],
        parent.info.run_id,
        [c.info.run_id for c in children],
        PARENT_METRICS,
    )
    scroll_to_column(driver, DATASET)  # the Dataset column and those ticked with it in view
    assert is_png(save_screenshot(driver, tmp_path_factory.mktemp("runs-page") / "runs-attributes.png"))
    return table


def _run_ids(study) -> list[str]:
    return [study["parent"].info.run_id, *(c.info.run_id for c in study["children"])]


def test_experiment_page_shows_the_trials_nested_under_the_study_with_params_and_metric(
    server, driver, study, tmp_path
):
    parent, children = study["parent"], study["children"]
    child_ids = [c.info.run_id for c in children]
    table = check_experiment_page(
        driver, server.url, study["experiment_id"], parent.info.run_id, child_ids, PARAMS, METRICS
    )
    assert table.names[parent.info.run_id] == parent.info.run_name == "browser-study"
    for child in children:
        shown = table.cells[child.info.run_id]
        assert table.names[child.info.run_id] == child.info.run_name
        for name in PARAMS:
            assert shown[param_column(name)] == child.data.params[name], name
        for name in METRICS:
            assert float(shown[metric_column(name)]) == pytest.approx(child.data.metrics[name], abs=1e-3), name
    screenshot = save_screenshot(driver, tmp_path / "experiment-runs.png")
    assert is_png(screenshot)


def test_compare_view_of_two_trials_loads_with_their_params(server, driver, study, tmp_path):
    children = study["children"]
    run_ids = [c.info.run_id for c in children]
    view = check_compare_page(driver, server.url, study["experiment_id"], run_ids, PARAMS, METRICS)
    for name in PARAMS:
        assert view.params[name] == [c.data.params[name] for c in children], name
    for name in METRICS:  # shown to 3 significant digits
        shown = [float(value) for value in view.metrics[name]]
        assert shown == pytest.approx([c.data.metrics[name] for c in children], rel=2e-3), name
    screenshot = save_screenshot(driver, tmp_path / "compare-runs.png")
    assert is_png(screenshot)


# --- MLflow's own parts: datasets, source and version, the parent's metric, the registered model ---------------


def test_runs_page_shows_the_datasets_of_the_study_run_and_every_trial(server, study, runs_page):
    check_dataset_column(runs_page, _run_ids(study))
    client = MlflowClient(server.url)
    train = f"{study['data'].name}/train"
    for run_id in _run_ids(study):
        inputs = client.get_run(run_id).inputs.dataset_inputs
        contexts = {i.dataset.name: {t.key: t.value for t in i.tags}.get(DATA_CONTEXT) for i in inputs}
        assert contexts.get(train) == "training", run_id  # and <folder>/val, the episodes file's for evaluation
        logged = {f"{i.dataset.name} ({i.dataset.digest})": contexts[i.dataset.name] for i in inputs}
        cell = runs_page.datasets[run_id]
        # The cell holds every input, "name (digest)" with its context tag, and shows those that fit (the
        # training split first), then "+N" for the others.
        assert dict(zip(cell.datasets, cell.contexts, strict=True)) == logged, run_id
        assert cell.shown[0].startswith(f"{train} ("), run_id


def test_runs_page_shows_the_source_and_code_version_of_every_run(server, study, runs_page):
    check_source_columns(runs_page, _run_ids(study))
    client = MlflowClient(server.url)
    for run_id in _run_ids(study):
        tags = client.get_run(run_id).data.tags
        assert tags[SOURCE_TYPE] == "LOCAL"
        assert runs_page.source[run_id] == tags[SOURCE_NAME], run_id
        # The Version column shows the commit shortened (its first characters).
        assert tags[GIT_COMMIT].startswith(runs_page.version[run_id]), run_id


def test_runs_page_shows_the_study_runs_best_val_acc(server, study, runs_page):
    parent_id = study["parent"].info.run_id
    check_run_metrics(runs_page, parent_id, PARENT_METRICS)
    logged = MlflowClient(server.url).get_run(parent_id).data.metrics
    for name in PARENT_METRICS:
        shown = runs_page.metrics[parent_id][metric_column(name)]
        assert float(shown) == pytest.approx(logged[name], abs=1e-3), name


def test_models_page_lists_the_registered_best_trial_with_its_champion_alias(
    server, driver, study, runs_page, tmp_path
):
    client = MlflowClient(server.url)
    registered = client.get_registered_model(MODEL)
    version = registered.aliases[CHAMPION]
    assert version == "1"  # the study's best trial, the only version on this server
    best = client.get_model_version(MODEL, version)
    assert best.run_id in [c.info.run_id for c in study["children"]]
    assert study["parent"].data.tags["fsl.registered_model"] == f"models:/{MODEL}/{version}"
    view = check_registered_model(driver, server.url, MODEL, version, CHAMPION, screenshots=tmp_path)
    versions = [v.version for v in client.search_model_versions(f"name = '{MODEL}'")]
    assert view.latest == f"Version {max(versions, key=int)}"
    assert view.aliased == dict(registered.aliases)
    # (a search's versions come without their aliases: each is asked for)
    assert {v: sorted(a) for v, a in view.versions.items()} == {
        v: sorted(client.get_model_version(MODEL, v).aliases) for v in versions
    }
    # The runs table's Models column of the best trial links to that version.
    assert f"#/models/{MODEL}/versions/{version}" in runs_page.models[best.run_id]
    assert is_png(tmp_path / "registered-models.png") and is_png(tmp_path / "registered-model.png")


# --- the checks fail on a study that the UI would show wrongly ------------------------------------------------


# What a study logs on each run (fsl.tracking): its datasets with their contexts, and MLflow's source tags.
HAND_DATASETS = [("hand/train", "training"), ("hand/val", "evaluation"), ("hand/val_testcase", "evaluation")]
HAND_SOURCE = {SOURCE_NAME: "hand-made.py", SOURCE_TYPE: "LOCAL", GIT_COMMIT: "0123456789abcdef" * 2 + "01234567"}


def _provenance(client: MlflowClient, run_id: str) -> None:
    source = json.dumps({"uri": "/data/hand"})
    client.log_inputs(
        run_id,
        datasets=[
            DatasetInput(Dataset(name, "0123abcd", "local", source), tags=[InputTag(DATA_CONTEXT, context)])
            for name, context in HAND_DATASETS
        ],
    )
    for key, value in HAND_SOURCE.items():
        client.set_tag(run_id, key, value)


def _log_study(
    client: MlflowClient,
    experiment: str,
    nested: bool,
    drop: dict[int, str] | None = None,
    provenance: tuple[str | int, ...] = (),
):
    """A parent run and two children with the trial params and a val_acc history; nested=False leaves out
    the children's mlflow.parentRunId tag, drop={i: param} leaves a param out of child i; the runs named in
    provenance ("parent", child i) get a study's dataset inputs and source tags. The parent logs no metric."""
    experiment_id = client.create_experiment(experiment)
    parent = client.create_run(experiment_id, run_name="broken-study", tags={"fsl.role": "study"}).info.run_id
    if "parent" in provenance:
        _provenance(client, parent)
    child_ids = []
    for i, (lr, head_depth, augment) in enumerate([("0.001", "0", "none"), ("0.0032", "2", "flip")]):
        tags = {"fsl.role": "trial", **({"mlflow.parentRunId": parent} if nested else {})}
        run_id = client.create_run(experiment_id, run_name=f"trial-{i}", tags=tags).info.run_id
        if i in provenance:
            _provenance(client, run_id)
        for name, value in {"lr": lr, "head_depth": head_depth, "augment": augment}.items():
            if (drop or {}).get(i) != name:
                client.log_param(run_id, name, value)
        for step in (1, 2):
            client.log_metric(run_id, "val_acc", 0.5 + 0.1 * i + 0.01 * step, step=step)
        client.set_terminated(run_id)
        child_ids.append(run_id)
    client.set_terminated(parent)
    return experiment_id, parent, child_ids


def test_checks_fail_when_the_children_are_not_nested_under_the_parent(server, driver):
    experiment_id, parent, child_ids = _log_study(MlflowClient(server.url), "not-nested", nested=False)
    with pytest.raises(AssertionError, match=f"parent run {parent} has no expander"):
        check_experiment_page(driver, server.url, experiment_id, parent, child_ids, PARAMS, METRICS)


def test_checks_fail_when_a_child_lacks_a_param(server, driver):
    experiment_id, parent, child_ids = _log_study(
        MlflowClient(server.url), "missing-param", nested=True, drop={1: "head_depth"}
    )
    with pytest.raises(AssertionError, match=rf"no value for {child_ids[1]}: params.`head_depth`$"):
        check_experiment_page(driver, server.url, experiment_id, parent, child_ids, PARAMS, METRICS)
    with pytest.raises(AssertionError, match=rf"param head_depth has no value for \['{child_ids[1]}'\]"):
        check_compare_page(driver, server.url, experiment_id, child_ids, PARAMS, METRICS)


def test_checks_fail_when_a_run_lacks_its_datasets_or_source_or_the_parent_its_metric(server, driver):
    experiment_id, parent, child_ids = _log_study(
        MlflowClient(server.url), "no-provenance", nested=True, provenance=("parent", 0)
    )
    table = read_run_columns(driver, server.url, experiment_id, parent, child_ids, METRICS)
    check_dataset_column(table, [parent, child_ids[0]])  # the runs that have them pass
    check_source_columns(table, [parent, child_ids[0]])
    check_run_metrics(table, child_ids[0], METRICS)
    with pytest.raises(AssertionError, match=rf"Dataset column shows no dataset for {child_ids[1]}$"):
        check_dataset_column(table, [parent, *child_ids])
    with pytest.raises(
        AssertionError, match=rf"columns show no source for {child_ids[1]}; no version for {child_ids[1]}$"
    ):
        check_source_columns(table, [parent, *child_ids])
    with pytest.raises(AssertionError, match=rf"no value for {parent}: metrics.`val_acc`$"):
        check_run_metrics(table, parent, METRICS)


def test_checks_fail_when_the_registered_model_lacks_the_champion_alias(server, driver):
    client = MlflowClient(server.url)
    experiment_id, parent, child_ids = _log_study(client, "no-champion", nested=True)
    model = client.create_logged_model(experiment_id, name="model", source_run_id=child_ids[1])
    client.finalize_logged_model(model.model_id, "READY")
    name = "browser-no-champion"
    client.create_registered_model(name)
    source = client.get_logged_model(model.model_id).artifact_location
    version = client.create_model_version(name, source, run_id=child_ids[1], model_id=model.model_id).version
    client.set_registered_model_alias(name, "challenger", version)
    check_registered_model(driver, server.url, name, version, "challenger")  # the alias it has passes
    with pytest.raises(
        AssertionError,
        match=rf"the Models page shows no alias {CHAMPION} on version {version} .*; "
        rf"its page shows no alias {CHAMPION} on version {version}",
    ):
        check_registered_model(driver, server.url, name, version, CHAMPION)
