"""One file per study: the flags it ran with, written as study.yaml and read back by --config.

A study writes study.yaml into its folder (and onto its MLflow parent run): the command, every flag it was
given or defaulted to (--param values included), the seed, and, for people, the search space it resolved to.
`--config study.yaml` reruns it; flags given beside --config override the file's (a --param NAME=... given on the
command line is applied after the file's, so it wins). Flags left to resolve from the data (None, e.g. --epochs
on the demo data) are left out: they resolve the same way again.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

STUDY_FILE = "study.yaml"
# Flags that name one run rather than the study's settings: a rerun is a new study, not a resume.
NOT_SAVED = frozenset({"config", "resume", "study_name", "help"})


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="STUDY_YAML",
        help=f"rerun a study from its {STUDY_FILE} (in its folder and on its MLflow parent run); flags given "
        "here override the file's",
    )


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's flags by their name in a study file (the long option without its dashes)."""
    flags = {}
    for action in parser._actions:  # argparse has no public list of a parser's arguments
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in NOT_SAVED:
            flags[longs[0][2:]] = action
    return flags


def read_study_file(path: Path, parser: argparse.ArgumentParser, command: str) -> dict[str, Any]:
    """The file's flags as the parser's defaults (by dest); one-line errors naming the file and the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"--config {path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("flags", {}), dict):
        raise ValueError(f"--config {path}: expected a mapping with a 'flags' mapping (as {STUDY_FILE} is written)")
    unknown_top = sorted(set(data) - {"command", "flags", "resolved"})
    if unknown_top:
        raise ValueError(f"--config {path}: unknown key {unknown_top[0]!r}; expected command, flags, resolved")
    if data.get("command", command) != command:
        raise ValueError(f"--config {path}: a study file of {data['command']}, not of {command}")
    flags = _flags(parser)
    values = {}
    for key, value in (data.get("flags") or {}).items():
        name = str(key).replace("_", "-")
        if name not in flags:
            allowed = ", ".join(sorted(flags))
            raise ValueError(f"--config {path}: unknown flag {key!r} under 'flags'; expected one of: {allowed}")
        action = flags[name]
        if isinstance(action, argparse._AppendAction):  # --param: a list of NAME=VALUE strings
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"--config {path}: flags.{name} must be a list of strings, e.g. [lr=0.001]")
            value = list(value)
        elif isinstance(value, list | dict):
            raise ValueError(f"--config {path}: flags.{name} must be a single value, not {type(value).__name__}")
        values[action.dest] = value
    return values


def parse_study_args(parser: argparse.ArgumentParser, argv: list[str] | None, command: str) -> argparse.Namespace:
    """The parsed flags, the --config file's under them; `command` (e.g. fsl-protonet-search) is recorded for
    the study file it will write."""
    first = argparse.ArgumentParser(add_help=False)
    add_config_arg(first)
    known, _ = first.parse_known_args(argv)
    if known.config is not None:
        # Defaults from the file: argparse converts string defaults with each flag's type, as if typed.
        parser.set_defaults(**read_study_file(known.config, parser, command))
    args = parser.parse_args(argv)
    args.command = command
    args.study_file_flags = {name: action.dest for name, action in _flags(parser).items()}
    return args


def saved_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags a study file keeps: those set to a value, by their file name (parse_study_args records
    which they are)."""
    flags = {}
    for name, dest in getattr(args, "study_file_flags", {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            flags[name] = str(value) if isinstance(value, Path) else value
    return flags


def study_file_text(command: str, flags: dict[str, Any], resolved: dict[str, Any]) -> str:
    """study.yaml's text: the command, its flags, and (for people, not read back) what they resolved to."""
    import yaml

    header = f"# Rerun this study: {command} --config {STUDY_FILE}  (flags given beside it override these)\n"
    header += "# 'resolved' records what the flags resolved to; it is not read back.\n"
    body = {"command": command, "flags": flags, "resolved": resolved}
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=False, allow_unicode=True)


def write_study_file(plan: Any) -> str:
    """The study's (fsl.study.runner.StudyPlan) study.yaml in its folder, written when it starts (a resume keeps
    the file it started with); its text, which the parent run keeps too."""
    s = plan.options
    path = plan.results_dir / STUDY_FILE
    if s.resume and path.is_file():
        return path.read_text()
    resolved = {
        "study_name": s.study_name,
        "data": str(plan.data_root),
        "evaluation": plan.evaluation,
        "search_space": {name: dim.describe() for name, dim in plan.space.items()},
        **({"grid": {k: list(v) for k, v in plan.grid.items()}} if plan.grid else {}),
        "trials": plan.total_trials,
        "config": {k: v for k, v in plan.base.to_dict().items() if k not in plan.space},
    }
    text = study_file_text(s.command or "fsl", s.flags, resolved)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
