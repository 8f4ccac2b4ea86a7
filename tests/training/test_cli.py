"""`infinity-canvas train` and `python -m training`: smoke runs and user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app import cli
from training import cli as training_cli
from training.runfiles import read_metrics, read_state

REPO = Path(__file__).resolve().parents[2]


def test_train_command_runs_a_tiny_model_end_to_end(landscapes, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(landscapes), "--preset", "tiny", "--out", str(out),
            "--steps", "2", "--batch", "2", "--device", "cpu",
            "--sample-every", "0", "--metric-every", "0"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "latest checkpoint" in capsys.readouterr().err
    assert read_state(out).info["step"] == 2
    assert (
        cli.main(["train", "--out", str(out), "--resume", "--steps", "3", "--metric-every", "0"])
        == 0
    )
    assert [r["step"] for r in read_metrics(out)][-1] == 3


def test_a_bad_data_folder_is_a_user_error_with_a_clear_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = [
        "train",
        "--data",
        str(tmp_path / "empty"),
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "r"),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("infinity-canvas: error: no image files") and "Traceback" not in err
    assert (
        cli.main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resume_refuses_other_settings(landscapes, tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no training run" in capsys.readouterr().err


def test_evaluate_prints_the_swd_of_a_checkpoint(landscapes, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--data", str(landscapes), "--preset", "tiny", "--out", str(out),
            "--steps", "1", "--batch", "2",
            "--sample-every", "0", "--metric-every", "0"]  # fmt: skip
    assert training_cli.main(argv) == 0  # python -m training
    capsys.readouterr()
    checkpoint = out / "checkpoints" / "latest.safetensors"
    argv = [
        "--evaluate",
        str(checkpoint),
        "--data",
        str(landscapes),
        "--metric-images",
        "2",
        "--scales",
        "1",
    ]
    assert training_cli.main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"swd_patch", "swd_1x", "swd"}
    assert training_cli.main(["--evaluate", str(checkpoint)]) == 2


def test_python_m_training_offers_the_same_options():
    result = subprocess.run(
        [sys.executable, "-m", "training", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--data", "--preset", "--out", "--steps", "--batch", "--resume", "--evaluate"):
        assert option in result.stdout


def test_init_fine_tunes_a_checkpoint_with_its_preset(landscapes, tmp_path):
    base = ["--data", str(landscapes), "--steps", "1", "--batch", "2", "--device", "cpu",
            "--sample-every", "0", "--metric-every", "0"]  # fmt: skip
    first = tmp_path / "first"
    assert cli.main(["train", "--preset", "tiny", "--out", str(first), *base]) == 0
    checkpoint = first / "checkpoints" / "latest.safetensors"
    second = tmp_path / "second"
    assert cli.main(["train", "--init", str(checkpoint), "--out", str(second), *base]) == 0
    config = json.loads((second / "config.json").read_text())
    assert config["model"]["preset"] == "tiny"
    assert config["train"]["init_from"] == str(checkpoint.resolve())


def test_compile_and_mixed_precision_choices_reach_the_config(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    training_cli.add_arguments(parser)
    base = ["--data", str(tmp_path), "--out", str(tmp_path / "run")]
    for choice, expected in (("auto", None), ("on", True), ("off", False)):
        args = parser.parse_args([*base, "--compile", choice, "--mixed-precision", choice])
        cfg = training_cli._new_config(args)
        assert cfg.compile is expected and cfg.mixed_precision is expected
    assert training_cli._new_config(parser.parse_args(base)).compile is None
