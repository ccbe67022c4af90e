"""Screenshots of a study in the MLflow UI, for reading the results: the experiment's runs table (the study's
run expanded, its trials' params and metric in columns) and the compare view of the study's two best trials.

    .venv/bin/python scripts/mlflow_screenshots.py --tracking-uri http://127.0.0.1:5000 --experiment protonet \\
        --out docs/img

--tracking-uri also takes a sqlite:/// store, for which a temporary `mlflow server` is started. Needs Debian's
chromium and chromium-driver (bash scripts/setup-browser.sh) and selenium (the project's test extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import mlflow_ui  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from fsl.tracking.run_store import RunStore  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="an MLflow server (http://...) or a sqlite:/// store")
    parser.add_argument("--experiment", required=True, help="the study's MLflow experiment name")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNG files")
    parser.add_argument("--study", help="the study's run name (default: the experiment's latest study run)")
    parser.add_argument("--params", default="lr,head_depth,augment", help="param columns (default %(default)s)")
    parser.add_argument("--metric", default="val_acc", help="metric column; trials rank by final_best_<metric>")
    return parser.parse_args(argv)


def find_runs(client: MlflowClient, experiment: str, study: str | None, metric: str):
    """The experiment's id, the study's parent run and its child runs, best first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"--experiment {experiment}: no such experiment")
    store = RunStore(client)
    parents = [r for r in store.studies([found.experiment_id]) if study is None or r.info.run_name == study]
    if not parents:
        raise ValueError(f"--experiment {experiment}: no study run" + (f" named {study!r}" if study else ""))
    parent = parents[0]
    children = store.trial_runs(found.experiment_id, parent.info.run_id)
    if len(children) < 2:
        raise ValueError(f"study {parent.info.run_name!r} has {len(children)} trial runs; comparing needs 2")
    score = f"final_best_{metric}"
    children.sort(key=lambda r: r.data.metrics.get(score, r.data.metrics.get(metric, float("-inf"))), reverse=True)
    return found.experiment_id, parent, children


def take_screenshots(base_url: str, args: argparse.Namespace, client: MlflowClient) -> list[Path]:
    experiment_id, parent, children = find_runs(client, args.experiment, args.study, args.metric)
    params = [p for p in args.params.split(",") if p]
    child_ids = [c.info.run_id for c in children]
    driver = mlflow_ui.open_chromium(window=(1600, 1100))
    try:
        mlflow_ui.check_experiment_page(
            driver, base_url, experiment_id, parent.info.run_id, child_ids, params, [args.metric]
        )
        runs_png = mlflow_ui.save_screenshot(driver, args.out / "mlflow-runs.png")
        mlflow_ui.check_compare_page(driver, base_url, experiment_id, child_ids[:2], params, [args.metric])
        compare_png = mlflow_ui.save_screenshot(driver, args.out / "mlflow-compare.png")
    finally:
        driver.quit()
    return [runs_png, compare_png]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not mlflow_ui.browser_available():
        print("error: Debian's chromium and chromium-driver are needed: bash scripts/setup-browser.sh", file=sys.stderr)
        return 2
    uri = args.tracking_uri.rstrip("/")
    server = None
    try:
        if uri.startswith("sqlite:///"):
            server = mlflow_ui.start_mlflow_server(
                Path(tempfile.mkdtemp(prefix="fsl-mlflow-ui-")), backend_store_uri=uri
            )
            uri = server.url
        elif not uri.startswith(("http://", "https://")):
            print(f"error: --tracking-uri {uri}: an http(s):// server or a sqlite:/// store", file=sys.stderr)
            return 2
        for path in take_screenshots(uri, args, MlflowClient(uri)):
            print(path)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except AssertionError as error:
        print(f"error: the MLflow UI does not show the study as expected: {error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
