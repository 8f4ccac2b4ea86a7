"""Style painting in the app: gallery, brush tool, undo, project files and the render CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt

from app.canvas import Tool
from app.cli import main as cli_main
from app.gallery import BASE_ID, StyleGallery, render_thumbnail
from app.main_window import preview_scale, stroke_bounds
from app.project import (
    FORMAT,
    ModelRef,
    Project,
    ProjectError,
    load_project,
    save_project,
    world_of_project,
)
from engine.edits import StyleStroke
from engine.styles import Style
from engine.tiles import Rect

# The gallery --------------------------------------------------------------------------------


def test_gallery_adds_duplicates_renames_and_deletes_but_keeps_the_base_style():
    gallery = StyleGallery()
    gallery, seven = gallery.add_from_seed(7)
    gallery, random = gallery.add_random()
    gallery, copy = gallery.duplicate(seven.id, world_seed=1)
    gallery, base_copy = gallery.duplicate(BASE_ID, world_seed=1)
    assert copy.style == seven.style and base_copy.style == Style.from_seed(1)
    gallery = gallery.rename(copy.id, "  Dusk\n light ")
    assert gallery.get(copy.id).name == "Dusk light"
    gallery = gallery.remove(random.id)
    assert [e.id for e in gallery.entries] == [BASE_ID, seven.id, copy.id, base_copy.id]
    with pytest.raises(ValueError, match="base style cannot be deleted"):
        gallery.remove(BASE_ID)
    assert StyleGallery.from_json(json.loads(json.dumps(gallery.to_json()))) == gallery


@pytest.mark.parametrize(
    ("styles", "message"),
    [
        ([], "non-empty list"),
        ([{"id": 1, "name": "x", "style": {"seed": 2}}], "first style of a gallery"),
        ([{"id": 0, "name": "b", "style": None}, {"id": 0, "name": "c", "style": {"seed": 1}}],
         "ids must be unique"),
        ([{"id": 0, "name": "b", "style": None}, {"id": 1, "name": "c", "style": {"seed": "x"}}],
         "style 2 .'c'.: a style seed must be an integer"),
        ([{"id": 0, "name": "b"}], "exactly an id, a name and a style"),
    ],
)  # fmt: skip
def test_a_bad_gallery_in_a_project_is_a_clear_error(tmp_path, styles, message):
    data = Project(ModelRef.of_preset("tiny")).to_json() | {"styles": styles}
    path = tmp_path / "p.icanvas"
    path.write_text(json.dumps(data))
    with pytest.raises(ProjectError, match=message):
        load_project(path)


def test_a_version_1_project_opens_with_the_default_gallery(tmp_path):
    path = tmp_path / "old.icanvas"
    old = {"format": FORMAT, "version": 1, "model": {"kind": "default"}, "seed": 5, "edits": []}
    path.write_text(json.dumps(old))
    project = load_project(path)
    assert project.seed == 5 and project.gallery == StyleGallery()


def test_thumbnails_show_each_style_on_the_same_landscape(tiny_model):
    from engine.world import World

    world = World(tiny_model.generator, seed=3, precision="fp32")
    base = render_thumbnail(world, None)
    other = render_thumbnail(world, Style.from_seed(8))
    assert base.shape == other.shape and base.shape[1] >= 96
    assert not np.array_equal(base, other)
    assert np.array_equal(base, render_thumbnail(world, Style.from_seed(3)))


# Projects and the render command ----------------------------------------------------------------


def painted_project() -> Project:
    gallery, entry = StyleGallery().add_from_seed(42)
    strokes = (
        StyleStroke(((-40.0, 0.0), (30.0, 12.5)), 30.0, 0.5, 1.0, entry.style),
        StyleStroke(((0.0, 0.0),), 12.0, 0.2, 0.6, None),
    )
    return Project(ModelRef.of_preset("tiny"), seed=9, edits=strokes, gallery=gallery)


def test_save_and_open_reproduce_the_painted_world(tmp_path):
    project = painted_project()
    path = save_project(tmp_path / "painted.icanvas", project)
    assert load_project(path) == project
    world, _ = world_of_project(path, device="cpu", precision="fp32")
    assert world.edits == project.edits
    rect = (-80, -40, 160, 80)
    again, _ = world_of_project(path, device="cpu", precision="fp32")
    assert np.array_equal(world.render(rect), again.render(rect))
    plain = again.restyled(again.base_style).render(rect)
    assert not np.array_equal(world.render(rect), plain)


def test_render_command_reproduces_a_painted_project(tmp_path):
    path = save_project(tmp_path / "painted.icanvas", painted_project())
    out = tmp_path / "painted.png"
    args = ["render", "--project", str(path), "--rect=-80,-40,160,80", "--device", "cpu"]
    assert cli_main([*args, "--precision", "fp32", "--out", str(out)]) == 0
    world, _ = world_of_project(path, device="cpu", precision="fp32")
    assert np.array_equal(np.asarray(Image.open(out)), world.render((-80, -40, 160, 80)))
    assert cli_main([*args, "--seed", "3", "--out", str(out)]) != 0  # the project has a seed


# The window -------------------------------------------------------------------------------------


def drag(qtbot, widget, points: list[QPoint]) -> None:
    target = widget
    qtbot.mousePress(target, Qt.MouseButton.LeftButton, pos=points[0])
    for p in points[1:]:
        qtbot.mouseMove(target, p)
    qtbot.mouseRelease(target, Qt.MouseButton.LeftButton, pos=points[-1])


def test_a_brush_stroke_is_one_undoable_edit_that_repaints_only_its_tiles(
    make_window, settle, grab_array, qtbot
):
    window = make_window(seed=4)
    settle(window)
    before = grab_array(window.canvas)
    panel = window.style_panel
    entry = panel.add_from_seed(11)
    panel.radius_box.setValue(24)
    panel.softness_box.setValue(40)
    panel.opacity_box.setValue(80)
    window.brush_tool_action.trigger()
    assert window.canvas.tool is Tool.BRUSH
    rendered = window.session.feed.stats().rendered_tiles
    drag(qtbot, window.canvas, [QPoint(200, 200), QPoint(230, 210), QPoint(260, 240)])

    (edit,) = window.session.world.edits
    assert isinstance(edit, StyleStroke)
    assert (edit.radius, edit.softness, edit.opacity) == (24.0, 0.4, 0.8)
    assert edit.style == entry.style and len(edit.points) >= 2
    history = window.history_view.model()  # row 0 is the start, row 1 the added style
    assert history.index(1, 0).data() == "Add style Seed 11"
    assert history.index(2, 0).data().startswith("Paint style of seed 11")
    window.pan_tool_action.trigger()  # no brush outline in the pictures compared
    settle(window)
    after = grab_array(window.canvas)
    assert not np.array_equal(before, after)
    visible = len(window.canvas.visible_tiles())
    assert window.session.feed.stats().rendered_tiles - rendered < visible

    window.undo_action.trigger()
    assert window.session.world.edits == ()
    settle(window)
    assert np.array_equal(grab_array(window.canvas), before)
    window.redo_action.trigger()
    settle(window)
    assert np.array_equal(grab_array(window.canvas), after)


def test_a_stroke_shows_its_style_while_it_is_painted(make_window, settle, grab_array, qtbot):
    window = make_window(seed=4)
    settle(window)
    before = grab_array(window.canvas)
    window.style_panel.add_from_seed(11)
    window.style_panel.radius_box.setValue(24)
    window.brush_tool_action.trigger()
    canvas = window.canvas
    left = Qt.MouseButton.LeftButton
    qtbot.mousePress(canvas, left, pos=QPoint(200, 200))
    for p in (QPoint(230, 210), QPoint(260, 240)):
        qtbot.mouseMove(canvas, p)
    whole = stroke_bounds(window._stroke_edit(canvas.stroke_points))
    qtbot.waitUntil(lambda: canvas.stroke_preview_rect == whole, timeout=30_000)
    assert window.session.world.edits == ()  # nothing is painted before the release
    during = grab_array(canvas)
    inside = (slice(205, 215), slice(222, 238))  # on the stroke, away from the cursor
    assert not np.array_equal(during[inside], before[inside])
    assert np.array_equal(during[:60, :60], before[:60, :60])  # far from the stroke
    qtbot.mouseRelease(canvas, left, pos=QPoint(260, 240))
    assert canvas.stroke_preview_rect is None and len(window.session.world.edits) == 1
    window.pan_tool_action.trigger()
    settle(window)
    after = grab_array(canvas)  # at 1:1 the preview is full resolution: the same pixels
    assert np.abs(after[inside].astype(int) - during[inside].astype(int)).max() <= 1


def test_stroke_previews_are_small_and_no_finer_than_the_view():
    edit = StyleStroke(((0.0, 0.0), (1000.0, 10.0)), 64.0, 0.5, 1.0, Style.from_seed(2))
    rect = stroke_bounds(edit)
    assert (rect.x, rect.y, rect.right, rect.bottom) == (-64, -64, 1064, 74)
    assert preview_scale(rect, 1.0) == 0.125  # 1128 px wide -> 141 px
    assert preview_scale(Rect(0, 0, 100, 100), 1.0) == 1.0
    assert preview_scale(Rect(0, 0, 100, 100), 0.3) == 0.5  # a step above the view
    assert preview_scale(Rect(0, 0, 100, 100), 4.0) == 1.0


def test_escape_drops_a_stroke_being_painted(make_window, qtbot):
    window = make_window()
    window.set_tool(Tool.BRUSH)
    canvas = window.canvas
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    qtbot.mouseMove(canvas, QPoint(180, 120))
    assert canvas.stroke_points is not None
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(180, 120))
    assert window.session.world.edits == ()


def test_the_styles_dock_edits_the_gallery_and_shows_thumbnails(make_window, qtbot):
    window = make_window()
    panel = window.style_panel
    assert not panel.delete_button.isEnabled()  # the base style is selected
    entry = panel.add_from_seed(5)
    panel.duplicate_button.click()
    assert [e.name for e in panel.gallery.entries] == ["Base style", "Seed 5", "Seed 5 copy"]
    assert window.isWindowModified()
    panel.select(entry.id)
    panel.rename(entry.id, "Autumn")
    assert panel.list.item(1).text() == "Autumn"
    panel.select(entry.id)
    panel.delete_button.click()
    assert [e.name for e in panel.gallery.entries] == ["Base style", "Seed 5 copy"]
    qtbot.waitUntil(
        lambda: all(panel.has_thumbnail(e.id) for e in panel.gallery.entries), timeout=30_000
    )


def test_gallery_changes_are_undone_and_redone_with_the_edits(make_window):
    window = make_window()
    panel, stack = window.style_panel, window.undo_stack
    entry = panel.add_from_seed(5)
    panel.rename(entry.id, "Autumn")
    panel.select(entry.id)
    window.paint_stroke(((0.0, 0.0), (40.0, 0.0)))
    panel.select(entry.id)
    panel.delete_button.click()
    names = [["Base style"], ["Base style", "Seed 5"], ["Base style", "Autumn"]]
    assert [e.name for e in panel.gallery.entries] == ["Base style"]
    assert stack.count() == 4 and stack.undoText() == "Delete style Autumn"
    stack.undo()
    assert [e.name for e in panel.gallery.entries] == names[2]
    assert panel.current_entry().id == entry.id  # the deleted style is selected again
    stack.undo()  # the stroke
    assert window.session.world.edits == ()
    stack.undo()
    assert [e.name for e in panel.gallery.entries] == names[1]
    stack.undo()
    assert [e.name for e in panel.gallery.entries] == names[0]
    assert not window.isWindowModified()  # back at the saved state
    for _ in range(4):
        stack.redo()
    assert [e.name for e in panel.gallery.entries] == ["Base style"]
    assert len(window.session.world.edits) == 1 and window.isWindowModified()


def test_the_gallery_and_strokes_are_saved_with_the_project(make_window, qtbot, tmp_path):
    window = make_window(seed=6)
    entry = window.style_panel.add_from_seed(21)
    window.style_panel.rename(entry.id, "Night")
    window.style_panel.select(entry.id)
    window.paint_stroke(((0.0, 0.0), (50.0, 5.0)))
    path = tmp_path / "saved.icanvas"
    assert window.save_project_to(path)
    project = load_project(path)
    assert [e.name for e in project.gallery.entries] == ["Base style", "Night"]
    assert project.edits == window.session.world.edits

    other = make_window(seed=1)
    other.open_project(path)
    qtbot.waitUntil(lambda: other.session.world.edits == project.edits, timeout=30_000)
    assert [e.name for e in other.style_panel.gallery.entries] == ["Base style", "Night"]
    assert not other.isWindowModified()


def test_brush_settings_are_remembered_for_the_next_window(make_window):
    window = make_window()
    window.style_panel.set_brush_percent(150, 20, 70)
    window.shutdown()
    again = make_window()
    assert again.style_panel.brush_percent() == (150, 20, 70)
    assert again.canvas.brush_radius == 150.0 and again.canvas.brush_softness == 0.2
