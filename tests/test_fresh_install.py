"""The README's test command on a fresh machine: what it installs, and what may skip there.

The command installs the test extra only, so that it works on every supported Python without
a multi-GB GPU stack; the framework tests then skip, saying why. `.ci/run` installs the
frameworks itself and lets nothing skip; `.ci/fresh-pythons` runs the README's command on
every other Python, where only the framework tests may skip (KAOKORE_TESTS_REQUIRE_ALL=but-frameworks).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FRAMEWORK_ABSENT

REPO = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    commands = [line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
                if 'pip install -e ".[test]"' in line and not line.startswith(("#", "`", "|"))]
    assert len(set(commands)) == 1, f"README.md gives one test command, in its top and Development sections: {commands}"
    return commands[0]


def test_the_readme_test_command_pulls_no_framework_and_ends_with_pytest():
    command = readme_test_command()
    assert command.endswith("&& python -m pytest")
    assert not re.search(r"torch|tensorflow|tf-nightly|jax", command), command
    # pip 23.0 (what Python 3.10's venv ships) backtracks for tens of minutes on the test extra.
    assert command.startswith("python -m pip install -U pip && ")


def test_ci_installs_the_frameworks_runs_the_readme_command_and_lets_nothing_skip():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    install = readme_test_command().removesuffix(" && python -m pytest")
    assert install in ci
    assert re.search(r"^pip install torch==2\.13\.0 tensorflow-cpu$", ci, re.M)
    assert re.search(r"^export KAOKORE_TESTS_REQUIRE_ALL=1$", ci, re.M)
    assert ".ci/fresh-pythons" in ci
    fresh = (REPO / ".ci" / "fresh-pythons").read_text(encoding="utf-8")
    assert "KAOKORE_TESTS_REQUIRE_ALL=but-frameworks" in fresh
    assert os.access(REPO / ".ci" / "fresh-pythons", os.X_OK)


def _absent(where: Path, *modules: str) -> Path:
    """A folder that, first on PYTHONPATH, makes each module import as if it were not installed."""
    for name in modules:
        (where / name).mkdir(parents=True)
        (where / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
    return where


def _pytest(tmp_path: Path, test: str, require: str, *absent: str) -> subprocess.CompletedProcess:
    shim = _absent(tmp_path / "shim", *absent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])),
           "KAOKORE_TESTS_REQUIRE_ALL": require}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
         "-rs", f"tests/{test}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


TORCH_TEST = "test_attributes.py::test_torch_loader_returns_attributes_and_takes_an_attribute_as_target"


def test_without_torch_a_framework_test_skips_saying_why_and_how_to_run_it(tmp_path):
    run = _pytest(tmp_path, TORCH_TEST, "", "torch")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout
    assert f"torch {FRAMEWORK_ABSENT} (README.md, Development: how to run the framework tests)" in run.stdout


@pytest.mark.parametrize("require, absent, test, passes", [
    ("but-frameworks", "torch", TORCH_TEST, True),  # the fresh-Python check: frameworks may be absent...
    ("1", "torch", TORCH_TEST, False),  # ...not in .ci/run
    # ...and nothing else may skip there: a datasets that cannot be imported is a failure, not a skip.
    ("but-frameworks", "datasets",
     "test_ecosystem.py::test_imagefolder_follows_a_layout_switch_and_verify_sees_no_strays", False),
])
def test_what_may_skip_where_every_test_must_run(tmp_path, require, absent, test, passes):
    run = _pytest(tmp_path, test, require, absent)
    assert (run.returncode == 0) == passes, run.stdout + run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert ("1 skipped" in summary) == passes and ("1 failed" in summary) != passes, summary
