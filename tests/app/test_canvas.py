"""The canvas: exact panning and zooming, the real engine's pixels on screen, stale work dropped.

The first tests drive a fake feed (tiles of one flat colour, delivered by hand) to check
the display rules; the others run the real tiny engine in a main window.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QObject, QPoint, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QWheelEvent
from PySide6.QtWidgets import QApplication

from app.canvas import Canvas, Tool, cells_under
from app.viewport import Viewport
from app.workers import TileImage
from engine.tiles import TILE_PX, TileIndex


class FakeFeed(QObject):
    """Duck-typed TileFeed: records requests; tests deliver tiles with `deliver`."""

    tileReady = Signal(object)

    def __init__(self, generation: int = 1) -> None:
        super().__init__()
        self.generation = generation
        self.requests: list[tuple] = []

    def request(self, view, scale, epoch) -> None:
        self.requests.append((view, scale, epoch))

    def deliver(self, tile: TileIndex, colour: QColor, epoch: int | None = None) -> None:
        image = QImage(TILE_PX, TILE_PX, QImage.Format.Format_RGB32)
        image.fill(colour)
        epoch = self.requests[-1][2] if epoch is None else epoch
        self.tileReady.emit(TileImage(tile, "", epoch, self.generation, image))


@pytest.fixture
def canvas(qtbot):
    widget = Canvas()
    qtbot.addWidget(widget)
    widget.resize(256, 256)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_viewport(Viewport(128, 128, 1.0))  # world (0, 0) at the top-left corner
    feed = FakeFeed()
    widget.set_feed(feed)
    qtbot.waitUntil(lambda: bool(feed.requests))
    return widget


def pixel(widget, x: int, y: int) -> tuple[int, int, int]:
    return widget.grab().toImage().pixelColor(x, y).getRgb()[:3]


def test_view_change_requests_the_visible_rect_with_a_new_epoch(canvas, qtbot):
    feed = canvas.feed
    view, scale, epoch = feed.requests[-1]
    assert (view.x, view.y, view.w, view.h) == (0, 0, 256, 256)
    assert scale == 1.0
    canvas.pan_by(-10, 0)
    qtbot.waitUntil(lambda: feed.requests[-1][2] > epoch)
    assert feed.requests[-1][0].x == 10


def test_many_view_changes_in_one_event_loop_turn_make_one_request(canvas, qtbot):
    feed = canvas.feed
    before = len(feed.requests)
    for _ in range(50):
        canvas.pan_by(-3, 0)
    qtbot.wait(50)
    assert len(feed.requests) == before + 1
    assert feed.requests[-1][0].x == 150


def test_result_of_an_older_epoch_outside_the_view_is_never_painted(canvas, qtbot):
    feed = canvas.feed
    old_epoch = feed.requests[-1][2]
    canvas.pan_by(-2000, 0)  # far away: tiles 0..1 are no longer in view
    qtbot.waitUntil(lambda: feed.requests[-1][2] > old_epoch)
    feed.deliver(TileIndex(0, 0, 0), QColor("red"), epoch=old_epoch)
    assert TileIndex(0, 0, 0) not in canvas.store


def test_result_of_an_older_epoch_for_a_tile_still_in_view_is_kept(canvas, qtbot):
    feed = canvas.feed
    old_epoch = feed.requests[-1][2]
    canvas.pan_by(-10, 0)
    qtbot.waitUntil(lambda: feed.requests[-1][2] > old_epoch)
    feed.deliver(TileIndex(0, 1, 0), QColor("red"), epoch=old_epoch)
    assert TileIndex(0, 1, 0) in canvas.store


def test_result_requested_before_an_edit_is_dropped(canvas, qtbot):
    feed = canvas.feed
    old_epoch = feed.requests[-1][2]
    canvas.invalidate(TileIndex(0, 0, 0).world_rect)
    feed.deliver(TileIndex(0, 0, 0), QColor("red"), epoch=old_epoch)
    assert TileIndex(0, 0, 0) not in canvas.store


def test_coarser_tile_stands_in_until_the_finer_one_arrives(canvas, qtbot):
    feed = canvas.feed
    canvas.store.put(TileIndex(1, 0, 0), _pixmap(QColor(200, 0, 0)), "")
    canvas.update()
    qtbot.wait(10)
    # Lod-1 tile (0, 0) covers world 0..255: the whole canvas, scaled up.
    assert pixel(canvas, 10, 10) == (200, 0, 0)
    assert pixel(canvas, 200, 200) == (200, 0, 0)
    feed.deliver(TileIndex(0, 0, 0), QColor(0, 200, 0))
    qtbot.wait(10)
    assert pixel(canvas, 10, 10) == (0, 200, 0)
    assert pixel(canvas, 200, 200) == (200, 0, 0)  # tile (1, 1) of lod 0 still missing


def test_finer_tiles_stay_on_screen_when_zooming_out(canvas, qtbot):
    for tx in range(2):
        for ty in range(2):
            canvas.store.put(TileIndex(0, tx, ty), _pixmap(QColor(0, 0, 180)), "")
    canvas.set_viewport(canvas.viewport.with_zoom(0.5, (0, 0)))  # lod 1 now, none stored
    qtbot.wait(10)
    assert canvas.lod == 1
    assert pixel(canvas, 20, 20) == (0, 0, 180)
    assert pixel(canvas, 200, 200) != (0, 0, 180)  # outside the finer tiles: background


def test_stale_tile_stays_on_screen_until_replaced(canvas, qtbot):
    feed = canvas.feed
    feed.deliver(TileIndex(0, 0, 0), QColor(0, 0, 200))
    canvas.invalidate(TileIndex(0, 0, 0).world_rect)
    qtbot.wait(10)
    assert canvas.store.get(TileIndex(0, 0, 0)).stale
    assert pixel(canvas, 5, 5) == (0, 0, 200)
    assert not canvas.is_complete()


def test_drag_moves_the_view_by_exactly_the_drag_distance(canvas, qtbot):
    for zoom in (1.0, 2.0):
        canvas.set_viewport(canvas.viewport.with_zoom(zoom))
        before = canvas.viewport.to_screen(37.0, 91.0)
        qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
        qtbot.mouseMove(canvas, QPoint(120, 90))
        qtbot.mouseMove(canvas, QPoint(131, 77))
        qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(131, 77))
        after = canvas.viewport.to_screen(37.0, 91.0)
        assert after[0] - before[0] == pytest.approx(31, abs=1e-9)
        assert after[1] - before[1] == pytest.approx(-23, abs=1e-9)


def test_middle_button_pans_even_with_the_reroll_tool(canvas, qtbot):
    canvas.set_tool(Tool.REROLL)
    before = canvas.viewport.center_x
    qtbot.mousePress(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(100, 100))
    qtbot.mouseMove(canvas, QPoint(60, 100))
    qtbot.mouseRelease(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(60, 100))
    assert canvas.viewport.center_x == before + 40


def wheel(widget, pos: QPointF, notches: float) -> None:
    event = QWheelEvent(
        pos,
        widget.mapToGlobal(pos),
        QPoint(),
        QPoint(0, round(120 * notches)),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, event)


@pytest.mark.parametrize("notches", [1, -1, 3, -2])
def test_wheel_zoom_keeps_the_world_point_under_the_cursor(canvas, notches):
    pos = QPointF(57.0, 201.0)
    world = canvas.viewport.to_world(pos.x(), pos.y())
    zoom = canvas.viewport.zoom
    wheel(canvas, pos, notches)
    assert canvas.viewport.zoom != zoom
    sx, sy = canvas.viewport.to_screen(*world)
    assert abs(sx - pos.x()) < 0.5 and abs(sy - pos.y()) < 0.5


def test_zoom_is_clamped_to_its_range(canvas):
    for _ in range(40):
        wheel(canvas, QPointF(10, 10), -1)
    assert canvas.viewport.zoom == pytest.approx(1 / 64)
    for _ in range(40):
        wheel(canvas, QPointF(10, 10), 1)
    assert canvas.viewport.zoom == pytest.approx(16)


def test_arrow_keys_pan(canvas, qtbot):
    x = canvas.viewport.center_x
    qtbot.keyClick(canvas, Qt.Key.Key_Right)
    assert canvas.viewport.center_x > x


def test_reroll_drag_selects_the_cells_under_it(canvas, qtbot):
    canvas.cell_px = 8
    canvas.set_tool(Tool.REROLL)
    with qtbot.waitSignal(canvas.regionSelected) as blocker:
        qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(20, 30))
        qtbot.mouseMove(canvas, QPoint(50, 41))
        qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(50, 41))
    cells = blocker.args[0]
    assert (cells.x, cells.y, cells.w, cells.h) == (2, 3, 5, 3)  # px 20..50 x 30..41


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0), (7, 7), (0, 0, 1, 1)),
        ((-1, -1), (0, 0), (-1, -1, 2, 2)),
        ((30, 5), (-9, -20), (-2, -3, 6, 4)),
    ],
)
def test_cells_under_floors_negative_coordinates(a, b, expected):
    cells = cells_under(QPointF(*a), QPointF(*b), 8)
    assert (cells.x, cells.y, cells.w, cells.h) == expected


def _pixmap(colour: QColor):
    from PySide6.QtGui import QPixmap

    pixmap = QPixmap(TILE_PX, TILE_PX)
    pixmap.fill(colour)
    return pixmap


# The real engine ----------------------------------------------------------------------


def test_screen_pixels_equal_world_render_at_zoom_1(make_window, settle, grab_array):
    window = make_window(seed=5)
    canvas = window.canvas
    w, h = canvas.width(), canvas.height()
    canvas.set_viewport(Viewport(-300 + w / 2, -170 + h / 2, 1.0))  # origin (-300, -170)
    settle(window)
    shot = grab_array(canvas)
    world = window.session.world
    for sx, sy in [(0, 0), (5, 170), (w - 1, h - 1), (w // 2, h // 3), (129, 255)]:
        expected = world.render((-300 + sx, -170 + sy, 1, 1))[0, 0]
        got = shot[sy, sx]
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, (sx, sy)


def test_burst_of_fast_pans_renders_the_newest_view_and_drops_stale_tiles(
    make_window, settle, grab_array, qtbot
):
    window = make_window(seed=8)
    settle(window)
    canvas = window.canvas
    feed = window.session.feed
    rendered_before = feed.stats().rendered_tiles
    requests_before = canvas.requests_issued
    burst_total = 0  # tiles a renderer that finished every view would render
    for _ in range(25):
        canvas.pan_by(-160, 0)
        burst_total += len(canvas.visible_tiles())
        qtbot.wait(8)
    settle(window)
    assert canvas.requests_issued - requests_before >= 10  # the burst made many epochs
    rendered = feed.stats().rendered_tiles - rendered_before
    assert rendered < burst_total / 4, (rendered, burst_total)
    # The newest view is complete and right.
    ox, oy = canvas.viewport.origin
    shot = grab_array(canvas)
    sx, sy = canvas.width() // 2, canvas.height() // 2
    # Screen pixel s shows world pixel ceil(origin + s - 0.5) (tile edges snap half up).
    wx, wy = math.ceil(ox + sx - 0.5), math.ceil(oy + sy - 0.5)
    expected = window.session.world.render((wx, wy, 1, 1))[0, 0]
    assert np.abs(shot[sy, sx].astype(int) - expected.astype(int)).max() <= 1
