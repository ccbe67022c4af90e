#!/usr/bin/env python
"""The seed report's ProtoNet tables as studies: --study distance (Euclidean, cosine, parametric at 5-way 1-shot),
--study shots (K = 1, 5, 10) or --study ways (training way 5, 20, 30).

Every cell of the table gets the same budget: --num-samples trials, each cell its own small Optuna search over
lr and augmentation (fix or widen it with --param), every trial run to the end. Each cell's best model is then
evaluated on one set of report episodes drawn apart from the episodes trials were selected on, the same for every
cell; the table gives accuracy ± 95% CI and each cell's difference from the best with a paired 95% CI.

With no --data it runs on the generated demo data with a local Ray and a local MLflow store, as protonet_search.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsl.data.demo import ensure_demo_dataset
from fsl.data.episodes import write_fixed_episodes
from fsl.study.ablation import ABLATIONS, AblationPlan, ablation_space, evaluate_cells, parse_cells, plan_ablation
from fsl.study.cli import add_compute_args, add_output_args, add_search_args, fail, study_options
from fsl.study.protonet_study import describe_data
from fsl.study.runner import run_study
from fsl.study.study_file import parse_study_args
from fsl.study.waiting import StudyWaitedTooLong
from fsl.tracking.ablation_table import ablation_markdown, ablation_table, log_ablation, write_ablation_files
from fsl.tracking.uri import open_ui_line, sync_command
from fsl.train.config import ProtoNetConfig


def build_parser() -> argparse.ArgumentParser:
    cells = "; ".join(f"{a.name}: {a.key} in {{{', '.join(map(str, a.values))}}}" for a in ABLATIONS.values())
    space = ", ".join(f"{n} {d.describe()}" for n, d in ablation_space().items())
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"Default cells: {cells}.\nSearched in every cell: {space}. --param sets any other ProtoNet field as in "
            "protonet_search.py\n(e.g. head_depth=0..2, train_way=30, precision=bf16)."
        ),
    )
    parser.add_argument("--study", required=True, choices=sorted(ABLATIONS), help="which table to build")
    parser.add_argument(
        "--cells", default=None, metavar="A,B,...", help="the values of the studied field (default: see below)"
    )
    data = parser.add_argument_group("data and episodes")
    data.add_argument("--data", type=Path, default=None, help="HW4 layout or ImageFolder tree (default: demo data)")
    data.add_argument("--image-size", type=int, default=None, help="default 32 on the demo data, 84 otherwise")
    data.add_argument("--n-way", type=int, default=5, help="evaluation way (default 5)")
    data.add_argument(
        "--k-shot", type=int, default=None, help="support images per class (default 1; --study shots varies it)"
    )
    data.add_argument("--n-query", type=int, default=15, help="query images per class (default 15)")
    data.add_argument(
        "--eval-episodes", type=int, default=600, help="fixed episodes trials are scored and selected on (default 600)"
    )
    data.add_argument(
        "--report-episodes",
        type=int,
        default=600,
        help="episodes the table's numbers come from, drawn apart from the selection episodes (default 600)",
    )
    search = add_search_args(parser, 4, "trials per cell (default 4)")
    search.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial (default 5 on the demo data, 20 otherwise)"
    )
    search.add_argument(
        "--episodes-per-epoch", type=int, default=None, help="training episodes per epoch (default 20 demo, 100)"
    )
    add_compute_args(parser)
    add_output_args(parser, experiment="protonet-ablations", prefix="ablation-<study>")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_study_args(build_parser(), argv, "fsl-ablations")
        ablation = ABLATIONS[args.study]
        if args.k_shot is not None and ablation.key == "k_shot":
            raise ValueError("--k-shot: --study shots varies K; choose its values with --cells")
        cells = parse_cells(ablation, args.cells)
        demo = args.data is None
        image_size = args.image_size or (32 if demo else 84)
        data_root = ensure_demo_dataset(seed=0, image_size=image_size) if demo else args.data
        base = ProtoNetConfig(
            epochs=args.epochs or (5 if demo else 20),
            episodes_per_epoch=args.episodes_per_epoch or (20 if demo else 100),
            n_way=args.n_way,
            k_shot=args.k_shot or 1,
            n_query=args.n_query,
            eval_episodes=args.eval_episodes,
            image_size=image_size,
            seed=args.seed,
        )
        options = study_options(args, f"ablation-{ablation.name}")
        print(f"Preparing ablation {options.study_name!r} ({ablation.title}): data {data_root}")
        plan = plan_ablation(data_root, base, ablation, cells, args.param, options, args.report_episodes)
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    print_plan_header(plan)
    try:
        outcome = run_study(plan.study)
    except ValueError as err:  # resource checks against the running cluster
        return fail(err)
    except StudyWaitedTooLong as err:
        return fail(err, status=3)
    return report(plan, outcome)


def print_plan_header(plan: AblationPlan) -> None:
    study = plan.study
    print(describe_data(study))
    cells = study.cells
    searched = ", ".join(f"{n} {d.describe()}" for n, d in study.space.items()) or "nothing (each cell fixed)"
    print(
        f"Cells: {', '.join(cells.name({**study.base.to_dict(), cells.key: v}) for v in cells.values)}; in each, "
        f"{study.options.num_samples} trials searching {searched}, {study.base.epochs} epochs of "
        f"{study.base.episodes_per_epoch} episodes, no early stopping"
    )
    print(f"Report episodes: {len(plan.report_episodes)}, drawn apart from the {study.evaluation}")


def report(plan: AblationPlan, outcome) -> int:  # noqa: ANN001
    study = plan.study
    searched = list(study.space)
    if outcome.tracking_error:
        print(
            f"The table scores each cell's best checkpoint, read from MLflow, which did not answer "
            f"({outcome.tracking_error}). Once it does, run "
            f"{sync_command(study.options.study_path, study.options.tracking_uri)}, "
            "then this command again with --resume (nothing is trained again)."
        )
        return 1
    results = evaluate_cells(plan, outcome)
    rows = []
    for r in results:
        best = r.best or {}
        rows.append(
            {
                "cell": r.cell,
                "accuracies": r.accuracies,
                "trials": r.trials,
                "search_val_acc": best.get("best_val_acc"),
                **{name: best.get(name) for name in searched},
                "best_epoch": best.get("best_epoch"),
                "mlflow_run_id": best.get("mlflow_run_id"),
            }
        )
    table = ablation_table(rows)
    episodes = f"{len(plan.report_episodes)} report episodes"
    folder = study.results_dir
    files = write_ablation_files(table, plan.ablation.title, episodes, searched, folder)
    report_csv, report_gt = folder / "report_episodes.csv", folder / "report_episodes_gt.csv"
    write_fixed_episodes(plan.report_episodes, plan.val.ids, report_csv, report_gt)
    best = table[table["is_best"]]
    best_cell = str(best["cell"].iloc[0]) if not best.empty else None
    if outcome.parent_run_id:
        log_ablation(study.options.tracking_uri, outcome.parent_run_id, [*files, report_csv, report_gt], best_cell)
    print()
    print(ablation_markdown(table, plan.ablation.title, episodes, searched))
    if best_cell is None:
        print(f"No trial finished; see {outcome.results_csv} and the trial errors above.")
        return 1
    print(f"Table: {folder / 'ablation.md'} (and .csv, .png); every trial: {outcome.results_csv}")
    s = study.options
    print(
        f"MLflow: {s.tracking_uri}, experiment {s.experiment!r}, parent run {s.study_name!r} ({outcome.parent_run_id})"
    )
    print(open_ui_line(s.tracking_uri, outcome.experiment_id, s.ui_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
