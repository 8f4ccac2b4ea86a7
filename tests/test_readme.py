"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    match = re.search(r"^readonly TEST_COMMAND='(.+)'$", script, flags=re.MULTILINE)
    assert match, "TEST_COMMAND not found in .ci/run"
    readme_lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert match.group(1) in readme_lines


def test_readme_start_command_installs_the_same_torch_as_ci():
    readme_lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    start = 'pip install "torch==2.13.0" && pip install -e . && infinity-canvas'
    assert start in readme_lines
