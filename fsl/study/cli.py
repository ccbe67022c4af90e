"""What the study scripts print: one-line errors and the end-of-study summary."""

from __future__ import annotations

import sys
from typing import Any

from fsl.tracking.uri import ui_command


def fail(err: BaseException) -> int:
    """Bad input: one line on stderr, no traceback, exit status 2."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
    if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in message:
        message = f"{err.filename}: {message}"
    print(f"error: {message}", file=sys.stderr)
    return 2


def print_outcome(plan: Any, outcome: Any) -> int:
    s = plan.settings
    print()
    if outcome.best is None:
        print(f"No trial finished an epoch; see {outcome.results_csv} and the trial errors above.")
        return 1
    best = outcome.best
    params = " ".join(
        f"{name}={best[name]:.3g}" if isinstance(best[name], float) else f"{name}={best[name]}" for name in plan.space
    )
    untrained_acc, untrained_ci = plan.untrained
    episodes = f"{plan.base.n_way}-way {plan.base.k_shot}-shot, {len(plan.data.val_episodes)} fixed episodes"
    print(f"Best trial {best['trial_id']} ({params or 'fixed configuration'}):")
    print(
        f"  val_acc {best['best_val_acc']:.4f} ± {best['best_val_acc_ci95']:.4f} ({episodes}, epoch "
        f"{int(best['best_epoch'])})"
    )
    print(
        f"  untrained Conv4 on the same episodes: {untrained_acc:.4f} ± {untrained_ci:.4f} "
        f"({100 * (best['best_val_acc'] - untrained_acc):+.1f} points)"
    )
    counts = outcome.table["status"].value_counts().to_dict() if not outcome.table.empty else {}
    stopped = int((outcome.table["epochs_run"] < outcome.table["epochs"]).sum()) if not outcome.table.empty else 0
    print(
        f"Trials: {len(outcome.table)} ({', '.join(f'{v} {k.lower()}' for k, v in counts.items())}; "
        f"{stopped} stopped early by ASHA)"
    )
    print(f"Results table: {outcome.results_csv}")
    print(
        f"MLflow: {s.tracking_uri}, experiment {s.experiment!r}, parent run {s.study_name!r} ({outcome.parent_run_id})"
    )
    print(
        f"  open the UI: {ui_command(s.tracking_uri)}  then "
        f"http://127.0.0.1:5000/#/experiments/{outcome.experiment_id}/runs"
    )
    return 0
