"""File → Export…: the dialog exports a rectangle in the background, cancels, resumes."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from app.export_dialog import ExportDialog
from engine.tiles import Rect

WAIT_MS = 30_000


def open_dialog(window) -> ExportDialog:
    window._speed_mps = 1.0  # skip the background speed measurement
    window.export_action.trigger()
    dialog = window.export_dialog
    assert isinstance(dialog, ExportDialog) and dialog.isVisible()
    return dialog


def test_export_action_in_file_menu(make_window):
    window = make_window()
    assert window.export_action.shortcut().toString() == "Ctrl+E"
    file_menu = window.menuBar().actions()[0].menu()
    assert window.export_action in file_menu.actions()
    dialog = open_dialog(window)
    assert dialog.region() == window.canvas.viewport.world_rect()
    assert dialog.view_radio.isChecked()
    assert dialog.export_button.isEnabled()
    assert "px" in dialog.estimate_label.text()


def test_export_png_matches_render(make_window, qtbot, tmp_path):
    window = make_window()
    dialog = open_dialog(window)
    rect = Rect(-230, -170, 200, 150)
    out = tmp_path / "view.png"
    dialog.set_rect(rect)
    dialog.set_format("png")
    dialog.set_output(out)
    assert dialog.region() == rect
    assert "200 × 150 px" in dialog.estimate_label.text()
    with qtbot.waitSignal(dialog.exported, timeout=WAIT_MS):
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
        assert dialog.running
        assert window.isEnabled()  # the window stays usable
    assert dialog.state == "done" and dialog.result_path == out
    assert str(out) in dialog.status_label.text()
    assert out.is_file() and not out.with_name("view.png.part").exists()
    assert str(out) in window.statusBar().currentMessage()
    with Image.open(out) as image:
        got = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(got, window.session.world.render(rect))


def test_invalid_input_disables_export(make_window):
    window = make_window()
    dialog = open_dialog(window)
    dialog.set_format("png")
    dialog.set_output("")
    assert not dialog.export_button.isEnabled()
    assert dialog.error_label.isVisible() and dialog.error_label.text()
    dialog.set_output("/tmp/x.png")
    assert dialog.export_button.isEnabled()
    assert not dialog.error_label.isVisible()
    dialog.set_format("pyramid")  # libvips holds at most 10,000,000 px per side
    dialog.set_rect((0, 0, 100, 20_000_000))
    assert not dialog.export_button.isEnabled()
    assert "at most" in dialog.error_label.text()
    dialog.set_format("tiff")
    assert dialog.export_button.isEnabled()


def test_speed_is_measured_in_background(make_window, qtbot):
    window = make_window()
    dialog = ExportDialog(window.session.world, Rect(0, 0, 300, 200), window)
    qtbot.addWidget(dialog)
    assert "measuring" in dialog.estimate_label.text()
    qtbot.waitUntil(lambda: "about" in dialog.estimate_label.text().split("·")[-1], timeout=WAIT_MS)
    dialog.shutdown()


def test_cancel_leaves_part_then_resume(make_window, qtbot, tmp_path):
    window = make_window()
    dialog = open_dialog(window)
    out = tmp_path / "big.tif"
    dialog.set_rect((-1000, -300, 1400, 900))
    dialog.set_format("tiff")
    dialog.set_output(out)
    dialog.start()
    assert dialog.running
    dialog.cancel()
    qtbot.waitUntil(lambda: dialog.state == "cancelled", timeout=WAIT_MS)
    assert not out.exists()
    assert out.with_name("big.tif.part").exists()
    assert out.with_name("big.tif.part.json").exists()

    # Exporting the same file again offers to resume it.
    dialog.start()
    box = dialog._message
    assert isinstance(box, QMessageBox) and box.isVisible()
    resume = next(b for b in box.buttons() if b.text() == "Resume")
    with qtbot.waitSignal(dialog.exported, timeout=WAIT_MS):
        resume.click()
    assert out.is_file() and not out.with_name("big.tif.part.json").exists()


def test_window_shutdown_cancels_running_export(make_window, tmp_path):
    window = make_window()
    dialog = open_dialog(window)
    out = tmp_path / "slow.tif"
    dialog.set_rect((0, 0, 4000, 2000))
    dialog.set_output(out)
    dialog.start()
    thread = dialog._thread
    assert thread is not None and thread.is_alive()
    window.shutdown()
    assert not thread.is_alive()
    assert not out.exists()


def test_export_error_opens_message_box(make_window, qtbot, tmp_path):
    window = make_window()
    dialog = open_dialog(window)
    dialog.set_rect((0, 0, 64, 64))
    dialog.set_format("png")
    dialog.set_output(tmp_path / "missing" / "folder" / "x.png")
    dialog.start()
    qtbot.waitUntil(lambda: dialog.state in ("failed", "done"), timeout=WAIT_MS)
    assert dialog.state == "failed"
    box = dialog._message
    assert isinstance(box, QMessageBox) and box.isVisible()
    assert box.icon() == QMessageBox.Icon.Critical
    assert dialog.export_button.isEnabled()  # fix the path and try again


def test_a_window_on_two_devices_shows_them_and_exports_the_same_pixels(
    make_window, qtbot, settle, tmp_path
):
    window = make_window(devices=["cpu", "cpu"])
    settle(window)
    assert "2 devices (cpu, cpu)" in window.model_label.text()
    worlds = window.session.render_worlds
    assert worlds[0] is window.session.world and len(worlds) == 2
    assert window.session.feed.scheduler.worlds == worlds
    dialog = open_dialog(window)
    assert dialog.render_worlds == worlds
    rect = Rect(-200, -100, 300, 200)
    out = tmp_path / "two.png"
    dialog.set_rect(rect)
    dialog.set_format("png")
    dialog.set_output(out)
    with qtbot.waitSignal(dialog.exported, timeout=WAIT_MS):
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    with Image.open(out) as image:
        got = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(got, window.session.world.render(rect))
    window.world_panel.deviceChosen.emit("auto")  # one device again
    qtbot.waitUntil(lambda: window.session.render_worlds is None, timeout=WAIT_MS)


def test_compiling_is_offered_and_reaches_the_export(make_window, qtbot, tmp_path, monkeypatch):
    window = make_window()
    dialog = open_dialog(window)
    assert dialog.can_compile and dialog.compile_box.isVisible()  # one CPU device
    assert not dialog.compile_box.isChecked()  # compiling is opt-in
    seen = {}

    def fake_run_export(world, job, **options):
        seen.update(options)
        return job.out

    monkeypatch.setattr("app.export_dialog.run_export", fake_run_export)
    dialog.compile_box.setChecked(True)
    assert "after up to 35 s of compiling" in dialog.estimate_label.text()
    dialog.set_output(tmp_path / "c.tif")
    with qtbot.waitSignal(dialog.exported, timeout=WAIT_MS):
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
        assert dialog.status_label.text() == "Compiling the model…"
    assert seen["compile"] is True
