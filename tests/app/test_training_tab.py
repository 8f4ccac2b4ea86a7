"""The training tab: dataset checks, the real trainer as a child process, runs and checkpoints."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from app.training_process import MetricsTail, newest_sample, read_run, run_checkpoints
from app.training_tab import TrainingTab, starting_status
from engine.checkpoint import Provenance, random_generator, save_checkpoint
from engine.model import preset_config
from training.config import default_train_config
from training.runfiles import read_config, write_config

TRAIN_MS = 60_000  # generous: the trainer imports torch and builds the model first
# One OpenMP thread per trainer: on a busy 2-core machine, two-thread torch processes that
# fight for the cores run ~30x slower (threads spin at every barrier for a descheduled peer).
CHILD_ENV = {"OMP_NUM_THREADS": "1"}


def write_toy_dataset(folder: Path, count: int = 8, size: int = 128) -> Path:
    """Landscape-like images: a vertical sky gradient above noisy ground."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = np.linspace(0.0, 1.0, size)[:, None, None]
    for i in range(count):
        sky = np.broadcast_to(
            np.concatenate([0.3 + 0.3 * rows, 0.5 + 0.3 * rows, 0.9 - 0.1 * rows], axis=2),
            (size, size, 3),
        )
        ground = 0.3 + 0.2 * rng.random((size, size, 3)) * np.array([0.6, 1.0, 0.4])
        horizon = size // 2 + 2 * i - 8
        image = np.where(np.arange(size)[:, None, None] < horizon, sky, ground)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"photo_{i}.png")
    return folder


def write_fake_run(run_dir: Path, data_dir: Path, *, step: int = 10) -> Path:
    """A run folder as the trainer leaves it after a pause at `step` (empty checkpoints)."""
    write_config(run_dir, default_train_config("tiny", data_dir=str(data_dir), steps=100))
    lines = [
        json.dumps({"step": s, "d_total": 1.0 / s, "g_total": 2.0, "images_per_s": 40.0})
        for s in (1, 5, step)
    ]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 11, "d_to')
    (run_dir / "samples").mkdir()
    Image.new("RGB", (64, 32), (200, 120, 40)).save(run_dir / "samples" / f"step_{step:06d}.png")
    (run_dir / "checkpoints").mkdir()
    for name in ("latest.safetensors", f"step_{step:06d}.safetensors", "step_000005.safetensors"):
        (run_dir / "checkpoints" / name).write_bytes(b"")
    (run_dir / "state").mkdir()
    (run_dir / "state" / "state.json").write_text(json.dumps({"version": 1, "step": step}))
    return run_dir


def assert_reaped(pid: int) -> None:
    """The child is gone and was waited for: no zombie left behind (POSIX)."""
    assert pid > 0
    if hasattr(os, "WNOHANG"):
        with pytest.raises(ChildProcessError):  # no child of ours with this pid any more
            os.waitpid(pid, os.WNOHANG)
    stat = Path(f"/proc/{pid}/stat")
    if sys.platform.startswith("linux") and stat.exists():  # the pid may have been reused
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
        assert state != "Z", f"process {pid} is a zombie"


@pytest.fixture
def make_tab(qtbot, tmp_path):
    tabs: list[TrainingTab] = []

    def make(**kwargs) -> TrainingTab:
        kwargs.setdefault("poll_ms", 100)
        kwargs.setdefault("devices", ["cpu"])
        kwargs.setdefault("environment", CHILD_ENV)
        tab = TrainingTab(tmp_path / "runs", **kwargs)
        qtbot.addWidget(tab)
        tab.resize(1200, 760)
        tab.show()
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.shutdown()
        assert not tab.process.running


def configure(tab: TrainingTab, data_dir: Path, *, steps: int = 200) -> None:
    tab.preset_combo.setCurrentIndex(tab.preset_combo.findData("tiny"))
    tab.steps_spin.setValue(steps)
    tab.batch_spin.setValue(4)
    tab.sample_spin.setValue(5)
    tab.checkpoint_spin.setValue(0)
    tab.set_dataset_folder(data_dir)


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_a_run_can_fine_tune_a_checkpoint_and_refuses_a_bad_one(qtbot, make_tab, tmp_path):
    checkpoint = save_checkpoint(
        tmp_path / "start.safetensors",
        random_generator(preset_config("tiny"), seed=3),
        Provenance(preset="tiny", steps=40),
    )
    data = write_toy_dataset(tmp_path / "photos")
    tab = make_tab(log_every=1)
    configure(tab, data, steps=2)
    tab.preset_combo.setCurrentIndex(tab.preset_combo.findData("lite"))
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert not tab.set_init_checkpoint(bad)
    assert tab.init_checkpoint is None and tab.init_error.isVisible()
    assert "broken.safetensors" in tab.init_error.text()

    assert tab.set_init_checkpoint(checkpoint)
    assert tab.init_checkpoint == checkpoint and not tab.init_error.isVisible()
    assert tab.preset == "tiny" and not tab.preset_combo.isEnabled()  # the checkpoint's preset
    qtbot.waitUntil(tab.start_button.isEnabled, timeout=60_000)
    with qtbot.waitSignal(tab.process.finished, timeout=TRAIN_MS) as finished:
        click(qtbot, tab.start_button)
    assert finished.args[0].ok, finished.args[0].output_tail
    assert "--init" in finished.args[0].request.arguments()
    run_dir = finished.args[0].request.run_dir
    assert read_config(run_dir).init_from == str(checkpoint)
    assert tab.set_init_checkpoint(None) and tab.preset_combo.isEnabled()


def test_a_real_run_plots_live_and_stops_with_its_state_saved(qtbot, make_tab, tmp_path):
    data = write_toy_dataset(tmp_path / "photos")
    tab = make_tab(log_every=1)
    configure(tab, data, steps=5000)  # far more than run before the stop, on any machine
    qtbot.waitUntil(tab.start_button.isEnabled, timeout=60_000)
    assert sum(label.isVisible() for label in tab.thumb_labels) == 8
    assert tab.dataset_summary.text().startswith("8 usable images of 8")

    click(qtbot, tab.start_button)
    run_dir = tab.viewed_run
    assert run_dir is not None and run_dir.parent == tmp_path / "runs"
    assert not tab.start_button.isEnabled() and tab.stop_button.isEnabled()
    qtbot.waitUntil(lambda: tab.plots.point_count("d_total") >= 1, timeout=TRAIN_MS)
    assert "g_total" in tab.plots.visible_keys()
    assert run_dir in tab.runs()
    qtbot.waitUntil(lambda: tab.sample_view.image is not None, timeout=TRAIN_MS)
    caption = re.fullmatch(r"step_(\d{6})\.png", tab.sample_caption.text())
    assert caption and int(caption[1]) % 5 == 0  # step 5, or a later sample already
    pid = tab.process.pid

    with qtbot.waitSignal(tab.process.finished, timeout=TRAIN_MS) as stopped:
        click(qtbot, tab.stop_button)
    end = stopped.args[0]
    assert end.ok and end.stop_requested, end.output_tail
    assert_reaped(pid)
    assert not tab.process.running
    assert (run_dir / "state" / "state.json").is_file()
    assert not (run_dir / "STOP").exists()
    saved = read_run(run_dir).saved_step
    assert saved is not None and 5 <= saved < 5000
    assert tab.status_label.text().strip() == f"Stopped at step {saved}"
    assert tab.error_panel.isHidden()
    assert tab.resume_button.isEnabled() and tab.start_button.isEnabled()

    latest = run_dir / "checkpoints" / "latest.safetensors"
    assert tab.checkpoints()[0] == latest and tab.selected_checkpoint() == str(latest)
    with qtbot.waitSignal(tab.open_in_canvas, timeout=1_000) as opened:
        click(qtbot, tab.open_button)
    assert opened.args == [str(latest)]


def test_a_failing_trainer_shows_its_last_output(qtbot, make_tab, tmp_path):
    data = write_toy_dataset(tmp_path / "photos", count=2)
    tab = make_tab()
    configure(tab, data)
    qtbot.waitUntil(tab.start_button.isEnabled, timeout=60_000)
    for image in data.iterdir():  # the photos move away after the check
        image.unlink()

    with qtbot.waitSignal(tab.process.finished, timeout=TRAIN_MS) as failed:
        click(qtbot, tab.start_button)
    end = failed.args[0]
    assert end.exit_code == 2 and not end.ok
    assert_reaped(tab.process.pid)
    assert tab.error_panel.isVisible()
    assert "exit status 2" in tab.error_title.text()
    assert "no image files" in tab.error_output.toPlainText()
    assert tab.start_button.isEnabled() and not tab.stop_button.isEnabled()


FAKE_TRAINER = """
import json, os, signal, sys, time
from pathlib import Path

out = Path(sys.argv[sys.argv.index("--out") + 1])
stubborn = os.environ.get("FAKE_TRAINER") == "stubborn"
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(Path(os.environ["FAKE_CONFIG"]).read_text())
print("fake trainer started", flush=True)
step = 0
if "--resume" in sys.argv:
    step = json.loads((out / "state" / "state.json").read_text())["step"]
while True:
    step += 1
    record = {"step": step, "d_total": 1.0, "g_total": 2.0, "images_per_s": 100.0}
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\\n")
    if (out / "STOP").exists() and not stubborn:
        (out / "state").mkdir(exist_ok=True)
        (out / "state" / "state.json").write_text(json.dumps({"version": 1, "step": step}))
        (out / "STOP").unlink()
        sys.exit(0)
    time.sleep(0.02)
"""


@pytest.fixture
def fake_trainer(tmp_path):
    """`environment(mode)` for a TrainingTab whose `python -m training` is a stand-in that
    starts at once and follows the STOP protocol and --resume ("obedient") or ignores STOP
    and SIGTERM ("stubborn"). The child's working directory is the runs folder, so the
    stand-in on PYTHONPATH is the `training` it imports."""
    package = tmp_path / "fake" / "training"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_TRAINER)
    write_config(tmp_path / "fake", default_train_config("tiny", steps=1000, batch=4))

    def environment(mode: str = "obedient") -> dict[str, str]:
        return {
            "PYTHONPATH": str(tmp_path / "fake"),
            "FAKE_TRAINER": mode,
            "FAKE_CONFIG": str(tmp_path / "fake" / "config.json"),
        }

    return environment


def start_fake_run(qtbot, tab: TrainingTab, tmp_path: Path) -> Path:
    configure(tab, write_toy_dataset(tmp_path / "photos", count=1))
    qtbot.waitUntil(tab.start_button.isEnabled, timeout=60_000)
    click(qtbot, tab.start_button)
    qtbot.waitUntil(lambda: tab.latest_step is not None, timeout=60_000)
    assert tab.status_label.text().strip() == "Training"
    assert "images/s · ETA" in tab.rate_label.text()
    return tab.viewed_run


def test_shutdown_stops_a_running_trainer_and_keeps_its_state(
    qtbot, make_tab, fake_trainer, tmp_path
):
    tab = make_tab(environment=fake_trainer())
    run_dir = start_fake_run(qtbot, tab, tmp_path)
    pid = tab.process.pid

    tab.shutdown()  # what the window does on close: returns once the trainer is gone

    assert not tab.process.running
    assert_reaped(pid)
    assert (run_dir / "state" / "state.json").is_file()
    assert not (run_dir / "STOP").exists()


def test_pause_then_resume_continues_the_same_run_folder(qtbot, make_tab, fake_trainer, tmp_path):
    tab = make_tab(environment=fake_trainer())
    run_dir = start_fake_run(qtbot, tab, tmp_path)
    first_pid = tab.process.pid

    with qtbot.waitSignal(tab.process.finished, timeout=60_000) as paused:
        click(qtbot, tab.pause_button)
    assert paused.args[0].ok
    assert_reaped(first_pid)
    saved = read_run(run_dir).saved_step
    assert tab.status_label.text().strip() == f"Paused at step {saved}: Resume continues it"
    assert tab.resume_button.isEnabled()

    click(qtbot, tab.resume_button)
    request = tab.process.request
    assert request.resume and request.run_dir == run_dir
    assert request.arguments()[:3] == ["--out", str(run_dir), "--resume"]
    assert "--data" not in request.arguments() and "--preset" not in request.arguments()
    qtbot.waitUntil(lambda: tab.latest_step > saved, timeout=60_000)
    assert tab.status_label.text().strip() == "Training"
    assert tab.process.pid != first_pid
    with qtbot.waitSignal(tab.process.finished, timeout=60_000) as stopped:
        click(qtbot, tab.stop_button)
    assert stopped.args[0].ok and stopped.args[0].request.resume
    assert read_run(run_dir).saved_step > saved


def test_a_trainer_that_ignores_stop_is_terminated_then_killed(
    qtbot, make_tab, fake_trainer, tmp_path
):
    tab = make_tab(environment=fake_trainer("stubborn"), stop_timeout_ms=300)
    tab.process.kill_timeout_ms = 300
    start_fake_run(qtbot, tab, tmp_path)
    pid = tab.process.pid

    with qtbot.waitSignal(tab.process.finished, timeout=60_000) as stopped:
        click(qtbot, tab.stop_button)
        assert not tab.stop_button.isEnabled() and not tab.start_button.isEnabled()
    end = stopped.args[0]
    assert end.killed and not end.ok
    assert_reaped(pid)
    assert tab.error_panel.isVisible()
    assert "killed" in tab.error_title.text()
    assert "fake trainer started" in tab.error_output.toPlainText()
    assert not (tab.viewed_run / "STOP").exists()


def test_an_empty_folder_is_a_clear_problem_and_start_stays_disabled(qtbot, make_tab, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    tab = make_tab()
    tab.set_dataset_folder(empty)
    qtbot.waitUntil(lambda: tab.dataset_scan is not None and tab.dataset_scan.done)
    assert tab.dataset_error.isVisible()
    assert "No image files" in tab.dataset_error.text()
    assert str(empty) in tab.dataset_error.text()
    assert not tab.start_button.isEnabled()
    assert tab.controls_hint.text() == tab.dataset_error.text()
    assert tab.start() is False and not tab.process.running


def test_unreadable_and_too_small_images_are_listed_and_skipped(qtbot, make_tab, tmp_path):
    data = write_toy_dataset(tmp_path / "photos", count=3)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.new("RGB", (40, 30)).save(data / "small.jpg")
    tab = make_tab()
    tab.preset_combo.setCurrentIndex(tab.preset_combo.findData("tiny"))  # 53 px patches
    tab.set_dataset_folder(data)
    qtbot.waitUntil(lambda: tab.dataset_scan is not None and tab.dataset_scan.done)

    assert tab.dataset_summary.text().startswith("3 usable images of 5")
    problems = tab.problems_view.toPlainText()
    assert "broken.png: unreadable" in problems
    assert "small.jpg: too small (short side 30 px < 53 px)" in problems
    assert tab.problems_label.text() == "2 files will be skipped:"
    assert tab.start_button.isEnabled()

    tab.preset_combo.setCurrentIndex(tab.preset_combo.findData("lite"))  # 197 px patches
    assert tab.dataset_summary.text().startswith("0 usable images of 5")
    assert "No usable image" in tab.problems_label.text()
    assert not tab.start_button.isEnabled()


def test_runs_are_listed_and_open_in_canvas_emits_the_checkpoint_path(qtbot, make_tab, tmp_path):
    data = write_toy_dataset(tmp_path / "photos", count=1)
    run_dir = write_fake_run(tmp_path / "runs" / "my-run", data)
    (tmp_path / "runs" / "not-a-run").mkdir()
    tab = make_tab()
    assert tab.runs() == [run_dir]
    assert tab.runs_tree.topLevelItem(0).text(2) == "paused at 10"
    assert not tab.progress_bar.isTextVisible()  # no steps shown before a run is

    tab.runs_tree.topLevelItem(0).setSelected(True)
    assert tab.viewed_run == run_dir
    assert tab.plots.point_count("d_total") == 3  # the incomplete last line is not read
    assert tab.latest_step == 10
    assert tab.sample_view.image is not None and tab.sample_caption.text() == "step_000010.png"
    assert tab.progress_bar.value() == 10 and tab.progress_bar.maximum() == 100
    assert tab.progress_bar.isTextVisible()
    assert tab.resume_button.isEnabled()
    assert [p.name for p in tab.checkpoints()] == [
        "latest.safetensors",
        "step_000010.safetensors",
        "step_000005.safetensors",
    ]

    checkpoint = run_dir / "checkpoints" / "step_000010.safetensors"
    tab.select_checkpoint(checkpoint)
    with qtbot.waitSignal(tab.open_in_canvas, timeout=1_000) as opened:
        click(qtbot, tab.open_button)
    assert opened.args == [str(checkpoint)]


def test_the_selection_follows_the_newest_checkpoint_unless_another_was_chosen(make_tab, tmp_path):
    run_dir = write_fake_run(tmp_path / "runs" / "my-run", write_toy_dataset(tmp_path / "d"))
    folder = run_dir / "checkpoints"
    for path in folder.iterdir():
        path.unlink()
    tab = make_tab()
    tab.view_run(run_dir)
    (folder / "step_000005.safetensors").write_bytes(b"")  # the trainer writes the step first
    tab.poll()
    assert tab.selected_checkpoint() == str(folder / "step_000005.safetensors")
    (folder / "latest.safetensors").write_bytes(b"")
    tab.poll()
    assert tab.selected_checkpoint() == str(folder / "latest.safetensors")

    tab.select_checkpoint(folder / "step_000005.safetensors")
    (folder / "step_000010.safetensors").write_bytes(b"")
    tab.poll()
    assert tab.selected_checkpoint() == str(folder / "step_000005.safetensors")


def test_metrics_tail_reads_only_complete_new_lines_and_restarts_on_a_rewrite(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(tmp_path)
    assert tail.read() == ([], False)
    path.write_text('{"step": 1, "d_total": 1.0}\n{"step": 2, "d_to')
    assert tail.read() == ([{"step": 1, "d_total": 1.0}], False)
    with path.open("a") as f:
        f.write('tal": 2.0}\n')
    assert tail.read() == ([{"step": 2, "d_total": 2.0}], False)
    assert tail.read() == ([], False)

    replacement = tmp_path / "metrics.new"  # a resume rewrites the file atomically
    replacement.write_text('{"step": 1, "d_total": 1.0}\n')
    replacement.replace(path)
    assert tail.read() == ([{"step": 1, "d_total": 1.0}], True)


def test_newest_sample_and_checkpoint_order_follow_the_step(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "checkpoints").mkdir()
    for step in (5, 1000000, 20):
        Image.new("RGB", (4, 4)).save(tmp_path / "samples" / f"step_{step:06d}.png")
        (tmp_path / "checkpoints" / f"step_{step:06d}.safetensors").write_bytes(b"")
    (tmp_path / "checkpoints" / "latest.safetensors").write_bytes(b"")

    assert newest_sample(tmp_path).name == "step_1000000.png"
    assert newest_sample(tmp_path, max_step=999).name == "step_000020.png"
    assert [p.name for p in run_checkpoints(tmp_path)] == [
        "latest.safetensors",
        "step_1000000.safetensors",
        "step_000020.safetensors",
        "step_000005.safetensors",
    ]


def test_the_starting_status_warns_of_the_compilation_only_on_cuda(monkeypatch):
    import torch

    assert "compile" not in starting_status("cpu")
    assert "compile" in starting_status("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "compile" in starting_status("auto") and "compile" in starting_status(None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "compile" not in starting_status("auto")
