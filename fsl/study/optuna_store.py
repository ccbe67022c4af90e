"""A study's Optuna storage, and warm starts from an earlier study's finished trials.

The study's Optuna sampler keeps its trials in a SQLite file next to the study (`<study>/optuna.db`), so that
`optuna-dashboard sqlite:///<study>/optuna.db` and `optuna.load_study(study_name=<study>, storage=...)` open it,
and a resumed study (on this machine, or a new head seeing the same folder) continues the same history: Tune
saves the searcher with the study, and the searcher reconnects to this file. With remote --storage (s3://...)
the sampler stays in memory, saved by Tune with the study in the bucket.

A warm start (`--warm-start NAME`) copies the finished trials of an earlier study under the same --storage into
the new study's storage before its first suggestion, as finished Optuna trials, so TPE models them at once. It
is refused when the earlier study ran on other data (the decoded data's hash, kept with each study's storage).
When the search spaces differ, a trial is taken only if it has exactly the new space's dimensions and each of its
values lies inside the new dimension of that name (a narrowed range keeps the trials inside it; a dimension
added or fixed since makes the earlier trials unusable); the others are counted as skipped.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsl.study.space import Dimension

OPTUNA_DB = "optuna.db"
DATASET_ATTR = "fsl.dataset_hash"  # on each Optuna study: the data its trials ran on
WARM_START_ATTR = "fsl.warm_start"  # on a warm-started study: the study its first trials came from


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna says at INFO that it created or reuses a study in the storage; the study prints its own lines."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def storage_url(folder: str | Path) -> str:
    return f"sqlite:///{Path(folder) / OPTUNA_DB}"


@dataclass(frozen=True)
class WarmStart:
    source: str  # the earlier study's name
    trials: tuple[tuple[dict[str, Any], float], ...]  # (params, value) of each finished trial taken
    skipped: int  # finished trials outside this study's search space


def read_warm_start(storage: str, name: str, space: dict[str, Dimension], data_hash: str) -> WarmStart:
    """The finished trials of study `name` under the local `storage` that fit `space`; ValueError naming the
    flag when there is no such study, it ran on other data, or none of its trials fits."""
    import optuna

    folder = Path(storage) / name
    if not (folder / OPTUNA_DB).is_file():
        raise ValueError(f"--warm-start {name}: no Optuna storage at {folder / OPTUNA_DB}")
    if not space:
        raise ValueError(f"--warm-start {name}: this study searches nothing (every dimension is fixed)")
    try:
        earlier = optuna.load_study(study_name=name, storage=storage_url(folder))
    except KeyError:
        raise ValueError(f"--warm-start {name}: {folder / OPTUNA_DB} holds no Optuna study named {name!r}") from None
    theirs = earlier.user_attrs.get(DATASET_ATTR)
    if theirs != data_hash:
        raise ValueError(
            f"--warm-start {name}: that study ran on other data (dataset hash {theirs}, this study's {data_hash})"
        )
    finished = [
        t
        for t in earlier.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    fitting = [
        (dict(t.params), float(t.value))  # type: ignore[arg-type]
        for t in finished
        if set(t.params) == set(space) and all(space[n].contains(v) for n, v in t.params.items())
    ]
    if not fitting:
        searched = "; ".join(f"{n}={d.describe()}" for n, d in space.items())
        raise ValueError(
            f"--warm-start {name}: none of its {len(finished)} finished trials lies in this study's search space "
            f"({searched})"
        )
    return WarmStart(name, tuple(fitting), len(finished) - len(fitting))


def prepare_study(url: str, name: str, space: dict[str, Dimension], data_hash: str, warm: WarmStart | None) -> None:
    """Create the Optuna study the searcher then loads (OptunaSearch opens it with load_if_exists), with the data
    it runs on and the warm-start trials."""
    import optuna

    with quiet_optuna():
        study = optuna.create_study(storage=url, study_name=name, direction="maximize", load_if_exists=True)
    study.set_user_attr(DATASET_ATTR, data_hash)
    if warm is None or study.user_attrs.get(WARM_START_ATTR):
        return
    distributions = {n: d.to_optuna() for n, d in space.items()}
    study.add_trials(
        [
            optuna.trial.create_trial(
                params=params, distributions=distributions, value=value, user_attrs={WARM_START_ATTR: warm.source}
            )
            for params, value in warm.trials
        ]
    )
    study.set_user_attr(WARM_START_ATTR, warm.source)
