"""The dependency direction of DESIGN.md §1, as import-linter contracts in pyproject.toml."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports_executable() -> str | None:
    """`lint-imports` of this interpreter's environment, else the one on PATH."""
    beside_python = Path(sys.executable).with_name("lint-imports")
    return str(beside_python) if beside_python.exists() else shutil.which("lint-imports")


def test_engine_and_training_keep_to_the_dependency_rules():
    executable = lint_imports_executable()
    if executable is None:
        pytest.skip("lint-imports is not installed (pip install -e '.[test]')")
    spec = importlib.util.find_spec("engine")
    if spec is None or spec.origin is None:  # absent, or a folder without __init__.py
        pytest.skip("package 'engine' does not exist yet (no engine/__init__.py): nothing to check")
    result = subprocess.run(
        [executable, "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
