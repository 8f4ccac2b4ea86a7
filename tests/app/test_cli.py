"""The `infinity-canvas` entry point: sub-command registry, lazy imports, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import cli
from app.about import app_version

REPO = Path(__file__).resolve().parents[2]


def run_python(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the current interpreter from the repository root (works without installing)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=os.environ.copy() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_gui_subcommand_help_lists_its_options_but_not_hidden_ones(capsys):
    assert cli.main(["gui", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--checkpoint" in out
    assert "--device" in out
    assert "--quit-after-ms" not in out


def test_top_level_help_lists_every_registered_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, _, _ in cli.SUBCOMMANDS:
        assert name in out


def test_unknown_subcommand_is_a_usage_error(capsys):
    assert cli.main(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys):
    assert cli.main(["gui", "--no-such-option"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_missing_checkpoint_is_a_user_error_without_traceback(capsys, tmp_path):
    missing = tmp_path / "missing.safetensors"
    assert cli.main(["gui", "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infinity-canvas: error: ")
    assert str(missing) in err
    assert "Traceback" not in err


def test_checkpoint_that_is_a_folder_is_a_user_error(capsys, tmp_path):
    assert cli.main(["gui", "--checkpoint", str(tmp_path)]) == 2
    assert "not a file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["gui"]),
        (["-v"], ["-v", "gui"]),
        (["gui", "--device", "cpu"], ["gui", "--device", "cpu"]),
        (["--help"], ["--help"]),
        (["--version"], ["--version"]),
    ],
)
def test_gui_is_the_default_subcommand_unless_help_is_asked(argv, expected):
    assert cli.with_default_command(argv) == expected


@pytest.mark.parametrize(("name", "module_path", "help_text"), cli.SUBCOMMANDS)
def test_every_registered_subcommand_module_provides_add_arguments_and_run(
    name, module_path, help_text
):
    module = cli.load_subcommand(module_path)
    assert callable(module.add_arguments)
    assert callable(module.run)
    assert help_text


def test_parsing_gui_arguments_does_not_import_qt():
    # The benchmark machine has no PySide6: the CLI must reach a sub-command without Qt.
    code = (
        "import sys\n"
        "from app import cli\n"
        "assert cli.main(['--help']) == 0\n"
        "assert cli.main(['gui', '--help']) == 0\n"
        "assert cli.main(['gui', '--checkpoint', 'missing.safetensors']) == 2\n"
        "qt = sorted(m for m in sys.modules if m.split('.')[0] in {'PySide6', 'qasync'})\n"
        "assert not qt, qt\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


def test_python_m_app_cli_help_succeeds():
    result = run_python("-m", "app.cli", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: infinity-canvas" in result.stdout


@pytest.mark.parametrize("used_a_gpu", [False, True])
@pytest.mark.parametrize(("argv", "status"), [(["--version"], 0), (["no-such-command"], 2)])
def test_the_console_script_skips_the_teardown_only_after_a_gpu(argv, status, used_a_gpu):
    # A stand-in for torch with CUDA initialised; the marker's finaliser runs only in the
    # interpreter's teardown. The output must reach the pipe either way.
    code = f"""
import sys, types
from app import cli
if {used_a_gpu}:
    cuda = types.SimpleNamespace(is_initialized=lambda: True)
    sys.modules["torch"] = types.SimpleNamespace(cuda=cuda)
class Marker:
    def __del__(self):
        sys.stderr.write("torn down\\n")
marker = Marker()
sys.argv = ["infinity-canvas", *{argv!r}]
cli.run()
"""
    result = run_python("-c", code)
    assert result.returncode == status, result.stderr
    assert (f"infinity-canvas {app_version()}" in result.stdout) == (argv == ["--version"])
    assert ("torn down" in result.stderr) != used_a_gpu


def private_user_dirs(tmp_path) -> dict[str, str]:
    """The environment with settings, data and state folders under `tmp_path` (XDG)."""
    env = os.environ.copy()
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[name] = str(tmp_path / name.lower())
    return env


def test_gui_starts_renders_and_quits_cleanly_in_a_real_process(tmp_path):
    # 1.5 s: long enough for the default model to be rendering when the window closes, so
    # shutdown must join a scheduler with work in flight.
    result = run_python(
        "-m", "app.cli", "gui", "--quit-after-ms", "1500", env=private_user_dirs(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert "QThread" not in result.stderr
    assert "Traceback" not in result.stderr
    # A clean exit leaves no autosave to recover.
    autosaves = list((tmp_path / "xdg_state_home").rglob("autosave-*"))
    assert autosaves == []


def test_ctrl_c_in_the_terminal_closes_the_window_cleanly(tmp_path):
    import signal

    # The window would close itself after two minutes; Ctrl+C must close it long before.
    argv = ["-m", "app.cli", "-v", "gui", "--device", "cpu", "--quit-after-ms", "120000"]
    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=REPO,
        env=private_user_dirs(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in process.stderr:  # the window says when it is open
        lines.append(line)
        if "Ctrl+C" in line:
            process.send_signal(signal.SIGINT)
            break
    try:
        rest = process.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the window did not close on Ctrl+C")
    stderr = "".join(lines) + rest
    assert "Ctrl+C" in lines[-1], stderr
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert list((tmp_path / "xdg_state_home").rglob("autosave-*")) == []


def test_gui_opens_a_project_given_on_the_command_line(tmp_path):
    from app.project import ModelRef, Project, save_project

    project = save_project(tmp_path / "p.icanvas", Project(ModelRef.of_preset("tiny"), seed=4))
    result = run_python(
        "-m",
        "app.cli",
        "gui",
        "--device",
        "cpu",
        "--quit-after-ms",
        "800",
        str(project),
        env=private_user_dirs(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_missing_project_is_a_user_error(capsys, tmp_path):
    assert cli.main(["gui", str(tmp_path / "nope.icanvas")]) == 2
    assert "project not found" in capsys.readouterr().err
