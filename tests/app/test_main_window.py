"""The explorer window: menus, status bar, edits with undo, projects, models, recovery."""

from __future__ import annotations

import json
import math
import os
import threading
import time

import numpy as np
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QMessageBox

from app.about import APP_NAME, DESCRIPTION, app_version
from app.canvas import Tool
from app.project import ModelRef, load_project, save_project
from app.settings import Settings
from app.viewport import Viewport
from engine.edits import RerollRegion
from engine.tiles import Rect

OFFICIAL = "tests/fixtures/official/official_small.pth.tar"


def click(box: QMessageBox, text: str) -> None:
    button = next(b for b in box.buttons() if b.text() == text)
    button.click()


def test_main_window_opens_and_closes(make_window):
    window = make_window()
    assert APP_NAME in window.windowTitle()
    assert window.windowTitle().startswith("Untitled[*]")
    assert window.statusBar().isVisible()
    assert window.close()
    assert not window.isVisible()


def test_menu_bar_has_file_edit_view_world_and_help_menus(make_window):
    window = make_window()
    titles = [action.text() for action in window.menuBar().actions()]
    assert titles == ["&File", "&Edit", "&View", "&World", "&Help"]


def test_quit_action_is_ctrl_q_and_closes_the_window(make_window, qtbot):
    window = make_window()
    assert window.quit_action.shortcut() == QKeySequence("Ctrl+Q")
    window.quit_action.trigger()
    qtbot.waitUntil(lambda: not window.isVisible())


def test_about_box_shows_version_and_description_without_blocking(make_window, qtbot):
    window = make_window()
    box = window.show_about()
    qtbot.waitUntil(box.isVisible)
    assert app_version() in box.text()
    assert DESCRIPTION in box.text()
    box.accept()
    qtbot.waitUntil(lambda: not box.isVisible())


def test_untrained_model_is_shown_in_title_and_status_bar(make_window, qtbot):
    window = make_window()
    assert "untrained model" in window.windowTitle()
    assert "random weights" in window.model_label.text()
    assert "cpu" in window.model_label.text()
    window.canvas.zoom_out()
    assert window.zoom_label.text() == "1:2"


def test_status_bar_shows_world_coordinates_under_the_cursor(make_window, qtbot):
    window = make_window()
    canvas = window.canvas
    canvas.set_viewport(Viewport(1000 + canvas.width() / 2, -40 + canvas.height() / 2, 1.0))
    qtbot.mouseMove(canvas, QPoint(25, 30))
    qtbot.waitUntil(lambda: window.coords_label.text() == "x 1,025  y -10")


def test_undo_and_redo_restore_identical_pixels_after_a_reroll(
    make_window, settle, grab_array, qtbot
):
    window = make_window(seed=4)
    settle(window)
    before = grab_array(window.canvas)
    window.set_tool(Tool.REROLL)
    canvas = window.canvas
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    qtbot.mouseMove(canvas, QPoint(300, 250))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(300, 250))
    assert len(window.session.world.edits) == 1
    assert window.isWindowModified()
    settle(window)
    after = grab_array(canvas)
    assert not np.array_equal(before, after)

    window.undo_action.trigger()
    assert window.session.world.edits == ()
    settle(window)
    assert np.array_equal(grab_array(canvas), before)
    assert not window.isWindowModified()

    window.redo_action.trigger()
    settle(window)
    assert np.array_equal(grab_array(canvas), after)


def test_undo_shortcuts(make_window):
    window = make_window()
    assert window.undo_action.shortcut() == QKeySequence("Ctrl+Z")
    redo = [s.toString() for s in window.redo_action.shortcuts()]
    assert redo == ["Ctrl+Shift+Z", "Ctrl+Y"]


def test_history_panel_lists_edits_and_clicking_one_goes_back_to_it(make_window):
    window = make_window()
    for i in range(3):
        window.reroll(Rect(i, 0, 2, 2), salt=i)
    model = window.history_view.model()
    assert model.rowCount() == 4  # "Start" and three edits
    assert model.index(1, 0).data() == "Re-roll 2×2 cells at (0, 0)"
    window.history_view.setCurrentIndex(model.index(1, 0))
    assert [e.salt for e in window.session.world.edits] == [0]
    window.history_view.setCurrentIndex(model.index(3, 0))
    assert [e.salt for e in window.session.world.edits] == [0, 1, 2]


def test_seed_change_rebuilds_the_world_and_keeps_edits_and_undo(make_window):
    window = make_window(seed=1)
    window.reroll(Rect(0, 0, 2, 2), salt=1)
    window.reroll(Rect(5, 0, 2, 2), salt=2)
    window.undo_stack.undo()
    old_generation = window.session.generation
    window.world_panel.seed_box.setValue(77)
    assert window.session.seed == 77
    assert window.session.generation == old_generation + 1
    assert [e.salt for e in window.session.world.edits] == [1]
    assert window.isWindowModified()
    window.undo_stack.redo()
    assert [e.salt for e in window.session.world.edits] == [1, 2]


def test_project_round_trip_shows_identical_pixels_in_a_fresh_window(
    make_window, settle, grab_array, tmp_path
):
    first = make_window(seed=11)
    first.reroll(Rect(-4, -3, 6, 5), salt=5)
    first.canvas.center_on(-30.5, 12.0, 2.0)
    settle(first)
    expected = grab_array(first.canvas)
    path = tmp_path / "walk.icanvas"
    assert first.save_project_to(path)
    assert not first.isWindowModified()
    assert first.windowTitle().startswith("walk[*]")

    second = make_window(seed=99)
    assert second.canvas.size() == first.canvas.size()
    second.open_project(path)
    assert second.session.seed == 11
    assert second.session.world.edits == (RerollRegion(-4, -3, 6, 5, 5),)
    settle(second)
    assert np.array_equal(grab_array(second.canvas), expected)
    assert not second.isWindowModified()
    assert second.undo_stack.canUndo()  # opened edits can be undone


def test_saved_project_records_model_seed_view_and_edits(make_window, tmp_path):
    window = make_window(seed=21)
    window.reroll(Rect(1, 2, 3, 4), salt=9)
    window.canvas.center_on(100, -20, 0.5)
    path = tmp_path / "p.icanvas"
    window.save_project_to(path)
    project = load_project(path)
    assert project.model == ModelRef.of_preset("tiny")
    assert project.seed == 21
    assert (project.view.center_x, project.view.center_y, project.view.zoom) == (100, -20, 0.5)
    assert project.edits == (RerollRegion(1, 2, 3, 4, 9),)
    assert Settings(window.settings.store).recent("projects")[0] == path


def test_opening_a_bad_project_shows_why(make_window, tmp_path, qtbot):
    window = make_window()
    path = tmp_path / "bad.icanvas"
    path.write_text("{oops")
    window.open_project(path)
    box = window._dialog
    qtbot.waitUntil(box.isVisible)
    assert "could not be opened" in box.text()
    assert "not valid JSON" in box.informativeText()


def test_project_with_a_missing_model_offers_the_default_model(make_window, tmp_path, qtbot):
    window = make_window()
    project = load_project(save_project(tmp_path / "p.icanvas", window.current_project()))
    data = json.loads((tmp_path / "p.icanvas").read_text())
    data["model"] = {"kind": "file", "path": str(tmp_path / "gone.safetensors"), "sha256": None}
    data["seed"] = 31
    (tmp_path / "p.icanvas").write_text(json.dumps(data))
    window.open_project(tmp_path / "p.icanvas")
    qtbot.waitUntil(lambda: isinstance(window._dialog, QMessageBox) and window._dialog.isVisible())
    box = window._dialog
    assert "was not found" in box.text()
    click(box, "Use Default Model")
    qtbot.waitUntil(lambda: window.session.seed == 31, timeout=30_000)
    assert window.session.model.ref == ModelRef.default()
    assert project.seed != 31


def test_opening_an_unusable_checkpoint_shows_a_clear_error(make_window, tmp_path, qtbot):
    window = make_window()
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a checkpoint at all")
    generation = window.session.generation
    window.open_checkpoint(path)
    qtbot.waitUntil(lambda: isinstance(window._dialog, QMessageBox) and window._dialog.isVisible())
    assert "could not be loaded" in window._dialog.text()
    assert "broken.safetensors" in window._dialog.informativeText()
    assert window.session.generation == generation
    assert window.world_panel.isEnabled()


def test_official_checkpoint_is_converted_on_request(make_window, paths, qtbot):
    window = make_window()
    window.open_checkpoint(OFFICIAL)
    box = window._dialog
    qtbot.waitUntil(box.isVisible)
    assert "official InfinityGAN checkpoint" in box.text()
    click(box, "Convert")
    target = paths.checkpoints_dir / "official_small.safetensors"
    qtbot.waitUntil(lambda: window.session.model.ref.kind == "file", timeout=60_000)
    assert window.session.model.ref.path == target
    assert target.is_file()
    assert window.isWindowModified()


def test_autosave_is_offered_for_recovery_after_a_crash(make_window, paths, settings_file, qtbot):
    window = make_window(seed=5)
    window.reroll(Rect(0, 0, 3, 3), salt=3)
    saved = window.autosave()
    assert saved is not None and saved.is_file()
    # A crashed session leaves its file behind, named after a process that is gone.
    crashed = saved.with_name("autosave-999999999.icanvas")
    crashed.write_bytes(saved.read_bytes())
    Settings(QSettings(settings_file, QSettings.Format.IniFormat)).store.setValue(
        "session/clean_exit", time.time() - 60
    )

    other = make_window(seed=6)
    box = other.offer_recovery()
    assert box is not None
    qtbot.waitUntil(box.isVisible)
    click(box, "Recover")
    qtbot.waitUntil(lambda: other.session.seed == 5)
    assert [e.salt for e in other.session.world.edits] == [3]
    assert other.isWindowModified()
    assert other.project_path is None
    assert not crashed.exists()


def test_no_recovery_is_offered_after_a_clean_exit(make_window, paths):
    window = make_window()
    window.reroll(Rect(0, 0, 3, 3), salt=3)
    saved = window.autosave()
    saved.rename(saved.with_name("autosave-999999999.icanvas"))
    window.shutdown()  # a clean exit after the autosave was written
    os.utime(paths.autosave_dir / "autosave-999999999.icanvas", (1, 1))
    assert make_window().offer_recovery() is None


def test_window_layout_and_cache_size_are_restored(make_window, qtbot):
    window = make_window(size=(820, 640))
    window.world_panel.cache_box.setValue(256)
    window.history_dock.hide()
    window.close()
    again = make_window(size=(300, 300))
    again.hide()
    again._restore_layout()
    again.show()
    assert abs(again.size().width() - 820) <= 30  # restored (window frames vary)
    assert not again.history_dock.isVisible()
    assert again.world_panel.cache_box.value() == 256
    assert again.session.feed.cache.max_bytes == 256 * 2**20


def test_navigator_click_moves_the_view(make_window, qtbot):
    window = make_window()
    nav = window.navigator
    target = nav.viewport.to_world(10, 10)
    qtbot.mouseClick(nav, Qt.MouseButton.LeftButton, pos=QPoint(10, 10))
    vp = window.canvas.viewport
    assert (vp.center_x, vp.center_y) == target


def test_go_to_dialog_moves_the_view(make_window, qtbot):
    window = make_window()
    dialog = window.go_to_dialog()
    qtbot.waitUntil(dialog.isVisible)
    dialog.x_box.setValue(5000)
    dialog.y_box.setValue(-64)
    dialog.accept()
    vp = window.canvas.viewport
    assert (vp.center_x, vp.center_y) == (5000, -64)


def test_shutdown_joins_every_worker_thread(make_window, settle):
    window = make_window()
    settle(window)
    window.canvas.pan_by(-500, 0)
    window.shutdown()
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if "tile" in n or "request" in n or "feeds" in n], names


def test_open_in_canvas_from_the_training_tab_swaps_the_model(make_window, qtbot, tmp_path):
    from engine import load_generator, save_checkpoint
    from engine.checkpoint import Provenance

    window = make_window()
    path = save_checkpoint(
        tmp_path / "trained.safetensors",
        load_generator(preset="tiny", seed=5, device="cpu"),
        Provenance(preset="tiny", steps=3),
    )
    window.tabs.setCurrentIndex(1)
    window.training.open_in_canvas.emit(str(path))
    assert window.tabs.currentWidget() is window.canvas
    qtbot.waitUntil(lambda: "trained" in window.model_label.text(), timeout=30_000)


def test_export_tool_opens_the_export_dialog_on_the_dragged_rectangle(make_window, qtbot):
    window = make_window()
    window.set_tool(Tool.EXPORT)
    canvas = window.canvas
    a = canvas.viewport.to_world(100, 100)
    b = canvas.viewport.to_world(300, 250)
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    qtbot.mouseMove(canvas, QPoint(300, 250))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(300, 250))
    dialog = window.export_dialog
    assert dialog is not None and dialog.isVisible()
    x, y, w, h = dialog.region().as_tuple()
    assert (x, y) == (math.floor(a[0]), math.floor(a[1]))
    assert (x + w - 1, y + h - 1) == (math.floor(b[0]), math.floor(b[1]))
    assert window.session.world.edits == ()  # exporting is not an edit


def test_the_window_fits_a_laptop_screen_and_the_brush_shows_its_dock(make_window, qtbot):
    window = make_window()
    assert window.minimumSizeHint().height() <= 700  # a 1366 x 768 screen with a taskbar
    assert window.tabifiedDockWidgets(window.styles_dock) == [window.photo_dock]
    window.photo_dock.raise_()
    window.set_tool(Tool.BRUSH)
    qtbot.waitUntil(lambda: not window.styles_dock.visibleRegion().isEmpty())
