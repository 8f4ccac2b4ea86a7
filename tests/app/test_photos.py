"""Placing photos in the window: load, position, invert in the background with progress and
Cancel, accept / re-roll / undo, fill between, bad files, projects and the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from app.cli import main as cli_main
from app.project import load_project, world_of_project
from engine.placement import FillBetween, PhotoPlacement

STEPS = 12  # the GUI tests check the workflow, not the fit (tests/engine does)


@pytest.fixture
def photo_file(tmp_path) -> Path:
    yy, xx = np.mgrid[0:40, 0:48]
    rgb = np.stack([xx * 5, yy * 6, np.full_like(xx, 120)], -1).astype(np.uint8)
    path = tmp_path / "beach.png"
    Image.fromarray(rgb).save(path)
    return path


def _placed(window, qtbot, photo_file: Path, centre=(0.0, 0.0), steps: int = STEPS):
    placer = window.placer
    placer.settings = dataclasses.replace(placer.settings, steps=steps)
    window.place_photo(photo_file, centre)
    qtbot.waitUntil(lambda: placer.pending is not None, timeout=10_000)
    assert placer.invert()
    qtbot.waitUntil(lambda: not placer.inverting and placer.result is not None, timeout=60_000)
    return placer.result


def test_place_invert_accept_reroll_and_undo(make_window, qtbot, photo_file, tmp_path):
    window = make_window()
    placer, panel = window.placer, window.photo_panel
    window.place_photo(photo_file, (100.0, -20.0))
    qtbot.waitUntil(lambda: placer.pending is not None, timeout=10_000)
    rect = placer.pending.rect
    assert (rect.w, rect.h) == (96, 80)  # the 48 x 40 photo at twice its size, centred
    assert abs(rect.x + rect.w / 2 - 100) <= 1 and abs(rect.y + rect.h / 2 + 20) <= 1
    panel.size_box.setValue(64)
    assert max(placer.pending.rect.w, placer.pending.rect.h) == 64
    # Drag the floating photo on the canvas by 16 screen pixels (1:1).
    start = placer.pending.rect
    vp = window.canvas.viewport
    sx, sy = vp.to_screen(start.x + 10, start.y + 10)
    qtbot.mousePress(window.canvas, Qt.MouseButton.LeftButton, pos=QPoint(round(sx), round(sy)))
    qtbot.mouseMove(window.canvas, QPoint(round(sx) + 16, round(sy)))
    qtbot.mouseRelease(
        window.canvas, Qt.MouseButton.LeftButton, pos=QPoint(round(sx) + 16, round(sy))
    )
    assert placer.pending.rect.x == start.x + 16
    window.grab().save(str(tmp_path / "pending.png"))

    placer.settings = dataclasses.replace(placer.settings, steps=STEPS)
    assert placer.invert()
    assert panel.cancel_button.isVisibleTo(panel) and not panel.invert_button.isEnabled()
    qtbot.waitUntil(lambda: placer.result is not None, timeout=60_000)
    assert panel.progress_label.text().startswith(f"Step {STEPS} of {STEPS}")
    placement = placer.result
    assert window.session.world.edits == (placement,)
    assert panel.list.count() == 1 and panel.reroll_button.isEnabled()

    rerolled = placer.reroll()
    assert window.session.world.edits == (rerolled,) and rerolled.salt != placement.salt
    window.undo_stack.undo()  # undoes the re-roll only
    assert window.session.world.edits == (placement,)
    window.undo_stack.redo()
    placer.undo_result()  # the panel's Undo: the placement and its re-roll go
    assert window.session.world.edits == ()
    window.undo_stack.redo()
    assert window.session.world.edits == (placement,)


def test_cancel_stops_the_inversion_and_changes_nothing(make_window, qtbot, photo_file):
    window = make_window()
    placer = window.placer
    placer.settings = dataclasses.replace(placer.settings, steps=5000)
    window.place_photo(photo_file)
    qtbot.waitUntil(lambda: placer.pending is not None, timeout=10_000)
    placer.invert()
    qtbot.waitUntil(lambda: placer.last_progress is not None, timeout=30_000)
    window.photo_panel.cancel_button.click()
    qtbot.waitUntil(lambda: not placer.inverting, timeout=5_000)
    assert placer.last_progress.step < 5000
    assert window.session.world.edits == () and window.undo_stack.count() == 0
    assert placer.pending is not None  # the photo still floats, ready to try again


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"GIF89a not really", "not an image"), (b"\x89PNG\r\n\x1a\n\0\0", "")],
    ids=["zero-size", "non-image", "truncated"],
)
def test_a_bad_photo_opens_a_clear_error_and_changes_nothing(
    make_window, qtbot, tmp_path, content, message
):
    window = make_window()
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    errors = []
    window.placer.failed.connect(lambda title, text: errors.append(text))
    window.place_photo(path)
    qtbot.waitUntil(lambda: bool(errors), timeout=10_000)
    assert "bad.png" in errors[0] and message in errors[0]
    assert window.placer.pending is None and window.session.world.edits == ()


def test_a_dropped_photo_floats_where_it_was_dropped(make_window, qtbot, photo_file):
    window = make_window()
    canvas = window.canvas
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(photo_file))])
    at = QPointF(canvas.width() / 2 + 50, canvas.height() / 2)
    event = QDropEvent(
        at, Qt.DropAction.CopyAction, data, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    canvas.dropEvent(event)
    qtbot.waitUntil(lambda: window.placer.pending is not None, timeout=10_000)
    r = window.placer.pending.rect
    wx, _ = canvas.viewport.to_world(at.x(), at.y())
    assert abs(r.x + r.w / 2 - wx) <= 1


def test_fill_between_and_show_photo_are_undoable_and_saved(
    make_window, qtbot, photo_file, tmp_path
):
    window = make_window()
    first = _placed(window, qtbot, photo_file, (-300.0, 0.0))
    window.placer.accept()
    second = _placed(window, qtbot, photo_file, (300.0, 0.0))
    panel = window.photo_panel
    assert panel.list.count() == 2
    for i in range(2):
        panel.list.item(i).setSelected(True)
    assert panel.fill_button.isEnabled()
    panel.fill_button.click()
    fill = window.session.world.edits[-1]
    assert isinstance(fill, FillBetween)
    panel.list.clearSelection()
    panel.list.item(0).setSelected(True)
    panel.show_photo_box.click()
    shown = window.session.world.edits[0]
    assert isinstance(shown, PhotoPlacement) and shown.show_photo
    assert panel.selected() == [shown] and panel.style_button.isEnabled()
    panel.style_button.click()  # the photo's inverted style joins the Styles dock
    entry = window.style_panel.current_entry()
    assert entry.name == "Photo: beach" and entry.style == shown.style
    window.grab().save(str(tmp_path / "placed.png"))

    path = tmp_path / "photos.icanvas"
    assert window.save_project_to(path)
    project = load_project(path)
    assert [e.digest() for e in project.edits] == [e.digest() for e in window.session.world.edits]
    world, _ = world_of_project(path, device="cpu", precision="fp32")
    rect = (first.rect[0] - 40, -60, second.rect[2] + 640, 120)
    np.testing.assert_array_equal(world.render(rect), window.session.world.render(rect))
    window.undo_stack.undo()  # the style added to the gallery
    assert [e.name for e in window.style_panel.gallery.entries] == ["Base style"]
    window.undo_stack.undo()
    assert not window.session.world.edits[0].show_photo


def test_outpaint_command_inverts_and_render_reproduces_it(tmp_path, photo_file):
    project = tmp_path / "p.icanvas"
    out = tmp_path / "around.png"
    status = cli_main(
        [
            "outpaint", "--photo", str(photo_file), "--at=-24,-20,48,40", "--preset", "tiny",
            "--seed", "5", "--steps", str(STEPS), "--project-out", str(project),
            "--render", " -72,-60,144,120", str(out),
        ]
    )  # fmt: skip
    assert status == 0 and out.exists()
    again = tmp_path / "again.png"
    status = cli_main(
        ["render", "--project", str(project), "--rect=-72,-60,144,120", "--device", "cpu",
         "--out", str(again)]
    )  # fmt: skip
    assert status == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    placement = load_project(project).edits[0]
    assert isinstance(placement, PhotoPlacement) and placement.rect == (-24, -20, 48, 40)


def test_outpaint_command_reports_bad_photos_and_rectangles(tmp_path, photo_file, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    args = ["--preset", "tiny", "--project-out", str(tmp_path / "p.icanvas")]
    assert cli_main(["outpaint", "--photo", str(bad), "--at", "0,0", *args]) == 2
    assert "bad.jpg" in capsys.readouterr().err
    assert cli_main(["outpaint", "--photo", str(photo_file), "--at", "0,0,0,5", *args]) == 2
    assert "--at" in capsys.readouterr().err
    assert not (tmp_path / "p.icanvas").exists()
