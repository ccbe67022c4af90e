"""The repository's own contracts: the CI helper runs exactly the README's test command; the code is lint-clean."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = _quick_start_commands()
    assert len(commands) == 2
    study, tests = commands
    assert "scripts/study.sh" in study and "scripts/test.sh" in tests
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci  # exactly the README's command
    runs = [line for line in (ROOT / "scripts" / "study.sh").read_text().splitlines() if line.startswith("exec ")]
    assert len(runs) == 1 and 'studies/protonet_search.py" "$@"' in runs[0]


def test_setup_script_is_a_no_op_when_nothing_changed():
    """The venv the tests run in was made by scripts/setup-venv.sh; a rerun must return at once."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("not running inside the project's .venv")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "setup-venv.sh")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert "Setting up" not in run.stderr


def test_code_is_ruff_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed")
    for args in (["check", "."], ["format", "--check", "."]):
        run = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
