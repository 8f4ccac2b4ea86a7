"""The explorer canvas: pan, zoom, and the re-roll, export and brush tools over an endless world.

Controls: drag with the left button (pan tool) or the middle button (any tool) to pan;
the wheel zooms about the cursor (a touchpad's two-finger scroll pans, its pinch zooms);
arrow keys pan (Shift: further). With the re-roll tool, a left drag selects a rectangle
of lattice cells, emitted as `regionSelected(cells)`; with the export tool, a left drag
selects a rectangle of world pixels, emitted as `areaSelected(rect)`. With the brush, a
left drag paints a stroke, under an outline of the brush: it is emitted as it grows as
`strokeChanged(points)` (the window answers with `set_stroke_preview`, the new style
rendered coarse, shown inside the brush's path) and on release as `strokeFinished(points)`,
in world pixels; Escape drops the stroke.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QNativeGestureEvent,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QWheelEvent,
)
from PySide6.QtWidgets import QWidget

from app.tile_view import TileView
from app.viewport import MAX_ZOOM, MIN_ZOOM, Viewport, clamp_zoom, snap
from engine.tiles import Rect

WHEEL_STEP = 2**0.5  # zoom factor of one wheel notch (120 units): two notches double
KEY_ZOOM_STEP = 2.0
KEY_PAN_FRACTION = 0.1  # of the widget's size per arrow key press (Shift: 0.5)


MAX_STROKE_POINTS = 4000  # a longer drag ends the stroke there (strokes stay small data)
STROKE_COLOUR = QColor(120, 200, 255, 70)


class Tool(enum.Enum):
    PAN = "pan"
    REROLL = "reroll"
    EXPORT = "export"
    BRUSH = "brush"


class CanvasInteraction(Protocol):
    """Something floating over the canvas that takes the mouse first (a photo being placed).

    Points are world pixels; each handler returns True when it took the event."""

    def press(self, world: tuple[float, float]) -> bool: ...

    def drag(self, world: tuple[float, float]) -> None: ...

    def release(self) -> None: ...

    def wheel(self, steps: float, world: tuple[float, float]) -> bool: ...

    def key(self, key: int) -> bool: ...

    def paint(self, painter: QPainter, viewport: Viewport) -> None: ...


class Canvas(TileView):
    """The main view. Emits `cursorMoved(x, y)` in world pixels (`cursorLeft()` off it)."""

    cursorMoved = Signal(float, float)
    cursorLeft = Signal()
    regionSelected = Signal(object)  # Rect of lattice cells
    areaSelected = Signal(object)  # Rect of world pixels
    strokeFinished = Signal(object)  # tuple of (x, y) world pixels along the brush stroke
    strokeChanged = Signal(object)  # the same, while the stroke is being painted
    filesDropped = Signal(object, float, float)  # list of Paths, world point of the drop

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, request_interval_ms=16)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setMinimumSize(160, 120)
        self.cell_px = 8  # lattice cell size of the current model (world px)
        self._tool = Tool.PAN
        self._pan_from: QPointF | None = None
        self._band: tuple[QPointF, QPointF] | None = None  # world points
        self.brush_radius = 64.0  # world pixels
        self.brush_softness = 0.5  # fraction of the radius that fades
        self._stroke: list[tuple[float, float]] | None = None  # world points being painted
        self._stroke_preview: tuple[Rect, QImage] | None = None  # world rect, its pixels
        self._hover: QPointF | None = None  # widget position of the mouse (brush outline)
        self.interaction: CanvasInteraction | None = None
        self._interacting = False
        self.setAcceptDrops(True)
        self._update_cursor()

    # Tools ------------------------------------------------------------------------------

    @property
    def tool(self) -> Tool:
        return self._tool

    def set_tool(self, tool: Tool) -> None:
        self._tool = tool
        self._band = None
        self._stroke = None
        self._hover = None
        self._update_cursor()
        self.update()

    def set_brush(self, radius: float, softness: float) -> None:
        """Brush radius (world px) and softness (0..1) for the outline and the stroke preview."""
        self.brush_radius, self.brush_softness = float(radius), float(softness)
        self.update()

    def _update_cursor(self) -> None:
        if self._pan_from is not None:
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self._tool in (Tool.REROLL, Tool.EXPORT, Tool.BRUSH):
            self.setCursor(Qt.CursorShape.CrossCursor)
        else:
            self.setCursor(Qt.CursorShape.OpenHandCursor)

    # View commands ----------------------------------------------------------------------

    def pan_by(self, dx: float, dy: float) -> None:
        """Move the content by (dx, dy) screen pixels."""
        self.set_viewport(self.viewport.panned(dx, dy))

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom by `factor` about `anchor` (widget px; default the centre), clamped to
        MIN_ZOOM..MAX_ZOOM."""
        zoom = clamp_zoom(self.viewport.zoom * factor)
        point = None if anchor is None else (anchor.x(), anchor.y())
        self.set_viewport(self.viewport.with_zoom(zoom, point))

    def zoom_in(self) -> None:
        self.zoom_by(KEY_ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom_by(1 / KEY_ZOOM_STEP)

    def actual_size(self) -> None:
        """1:1 about the centre."""
        self.set_viewport(self.viewport.with_zoom(1.0))

    def reset_view(self) -> None:
        """Back to the world's origin (the horizon band at x = 0) at 1:1."""
        self.set_viewport(Viewport(0.0, 0.0, 1.0, self.width(), self.height()))

    def center_on(self, x: float, y: float, zoom: float | None = None) -> None:
        vp = self.viewport.centered(x, y)
        if zoom is not None:
            vp = vp.with_zoom(clamp_zoom(zoom))
        self.set_viewport(vp)

    @property
    def can_zoom_in(self) -> bool:
        return self.viewport.zoom < MAX_ZOOM

    @property
    def can_zoom_out(self) -> bool:
        return self.viewport.zoom > MIN_ZOOM

    # Re-roll band -----------------------------------------------------------------------

    def _band_unit(self) -> int:
        """World pixels per unit of the band: lattice cells to re-roll, pixels to export."""
        return self.cell_px if self._tool is Tool.REROLL else 1

    def band_cells(self) -> Rect | None:
        """The rectangle being dragged, in units of `_band_unit` (None when none)."""
        if self._band is None:
            return None
        return cells_under(self._band[0], self._band[1], self._band_unit())

    def paint_overlay(self, painter: QPainter) -> None:
        if self.interaction is not None:
            self.interaction.paint(painter, self.viewport)
        self._paint_brush(painter)
        cells = self.band_cells()
        if cells is None:
            return
        c = self._band_unit()
        vp = self.viewport
        x0, y0 = vp.to_screen(cells.x * c, cells.y * c)
        x1, y1 = vp.to_screen(cells.right * c, cells.bottom * c)
        rect = QRect(snap(x0), snap(y0), snap(x1) - snap(x0), snap(y1) - snap(y0))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.fillRect(rect, QColor(255, 200, 40, 50))
        painter.setPen(QPen(QColor(0, 0, 0, 160), 3))
        painter.drawRect(rect.adjusted(0, 0, -1, -1))
        pen = QPen(QColor(255, 210, 60), 1, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.drawRect(rect.adjusted(0, 0, -1, -1))

    # Brush ------------------------------------------------------------------------------

    @property
    def stroke_points(self) -> tuple[tuple[float, float], ...] | None:
        """The stroke being painted (world px), None when none."""
        return None if self._stroke is None else tuple(self._stroke)

    def _add_stroke_point(self, pos: QPointF) -> None:
        assert self._stroke is not None
        x, y = self.viewport.to_world(pos.x(), pos.y())
        last = self._stroke[-1]
        # Points closer than a quarter radius add nothing a smooth brush could show.
        if math.hypot(x - last[0], y - last[1]) >= max(0.5, self.brush_radius / 4):
            self._stroke.append((x, y))
            self.strokeChanged.emit(tuple(self._stroke))

    def set_stroke_preview(self, rect: Rect, image: QImage) -> None:
        """Show `image` (the world rectangle `rect` as the stroke being painted will make
        it) inside the brush's path until the stroke ends; ignored when none is painted."""
        if self._stroke is not None:
            self._stroke_preview = (rect, image)
            self.update()

    @property
    def stroke_preview_rect(self) -> Rect | None:
        """The world rectangle of the preview shown, None when none is."""
        return None if self._stroke_preview is None else self._stroke_preview[0]

    def _end_stroke(self) -> tuple[tuple[float, float], ...]:
        points = tuple(self._stroke or ())
        self._stroke, self._stroke_preview = None, None
        self.update()
        return points

    def _paint_brush(self, painter: QPainter) -> None:
        if self._tool is not Tool.BRUSH:
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        z = self.viewport.zoom
        if self._stroke is not None:
            pen = QPen(STROKE_COLOUR, max(1.0, 2 * self.brush_radius * z))
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
            points = [QPointF(*self.viewport.to_screen(x, y)) for x, y in self._stroke]
            if len(points) == 1:
                points.append(points[0])
            if self._stroke_preview is not None:  # the new style, inside the brush's path
                stroker = QPainterPathStroker(pen)
                rect, image = self._stroke_preview
                x0, y0 = self.viewport.to_screen(rect.x, rect.y)
                x1, y1 = self.viewport.to_screen(rect.right, rect.bottom)
                painter.save()
                painter.setClipPath(stroker.createStroke(_open_path(points)))
                painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
                painter.drawImage(QRectF(x0, y0, x1 - x0, y1 - y0), image)
                painter.restore()
            else:
                painter.setPen(pen)
                painter.drawPolyline(points)
        if self._hover is None:
            return
        r = self.brush_radius * z
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for colour, width in ((QColor(0, 0, 0, 170), 3), (QColor(255, 255, 255, 220), 1)):
            painter.setPen(QPen(colour, width))
            painter.drawEllipse(self._hover, r, r)
        core = r * (1 - self.brush_softness)
        if core > 2 and self.brush_softness > 0:
            painter.setPen(QPen(QColor(255, 255, 255, 160), 1, Qt.PenStyle.DashLine))
            painter.drawEllipse(self._hover, core, core)

    # Qt events --------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button = event.button()
        pos = event.position()
        world = self.viewport.to_world(pos.x(), pos.y())
        if (
            button == Qt.MouseButton.LeftButton
            and self.interaction
            and self.interaction.press(world)
        ):
            self._interacting = True
            event.accept()
            return
        if button == Qt.MouseButton.MiddleButton or (
            button == Qt.MouseButton.LeftButton and self._tool is Tool.PAN
        ):
            self._pan_from = pos
            self._update_cursor()
            event.accept()
        elif button == Qt.MouseButton.LeftButton and self._tool is Tool.BRUSH:
            self._stroke = [self.viewport.to_world(pos.x(), pos.y())]
            self.update()
            event.accept()
        elif button == Qt.MouseButton.LeftButton and self._tool in (Tool.REROLL, Tool.EXPORT):
            point = QPointF(*self.viewport.to_world(pos.x(), pos.y()))
            self._band = (point, point)
            self.update()
            event.accept()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        if self._interacting and self.interaction is not None:
            self.interaction.drag(self.viewport.to_world(pos.x(), pos.y()))
            self.update()
            event.accept()
            return
        if self._pan_from is not None:
            delta = pos - self._pan_from
            self._pan_from = pos
            self.pan_by(delta.x(), delta.y())
        elif self._band is not None:
            self._band = (self._band[0], QPointF(*self.viewport.to_world(pos.x(), pos.y())))
            self.update()
        elif self._stroke is not None:
            self._add_stroke_point(pos)
            if len(self._stroke) >= MAX_STROKE_POINTS:
                self._finish_stroke()
        if self._tool is Tool.BRUSH:
            self._hover = QPointF(pos)
            self.update()
        self.cursorMoved.emit(*self.viewport.to_world(pos.x(), pos.y()))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._interacting:
            self._interacting = False
            if self.interaction is not None:
                self.interaction.release()
            event.accept()
            return
        if self._pan_from is not None and event.button() in (
            Qt.MouseButton.LeftButton,
            Qt.MouseButton.MiddleButton,
        ):
            self._pan_from = None
            self._update_cursor()
        elif self._stroke is not None and event.button() == Qt.MouseButton.LeftButton:
            self._add_stroke_point(event.position())
            self._finish_stroke()
        elif self._band is not None and event.button() == Qt.MouseButton.LeftButton:
            pos = event.position()
            self._band = (self._band[0], QPointF(*self.viewport.to_world(pos.x(), pos.y())))
            cells = self.band_cells()
            self._band = None
            self.update()
            if cells is not None and self._tool is Tool.EXPORT:
                self.areaSelected.emit(cells)
            elif cells is not None:
                self.regionSelected.emit(cells)
        event.accept()

    def _finish_stroke(self) -> None:
        points = self._end_stroke()
        if points:
            self.strokeFinished.emit(points)

    def leaveEvent(self, event: QEvent) -> None:
        if self._hover is not None:
            self._hover = None
            self.update()
        self.cursorLeft.emit()
        super().leaveEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        pixels = event.pixelDelta()
        ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        if ctrl and self.interaction is not None and event.angleDelta().y():
            pos = event.position()
            world = self.viewport.to_world(pos.x(), pos.y())
            if self.interaction.wheel(event.angleDelta().y() / 120, world):
                self.update()
                event.accept()
                return
        if not pixels.isNull() and not ctrl:  # a touchpad's two-finger scroll pans
            self.pan_by(pixels.x(), pixels.y())
        else:
            steps = event.angleDelta().y() / 120
            if steps:
                self.zoom_by(WHEEL_STEP**steps, event.position())
        event.accept()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.NativeGesture:
            assert isinstance(event, QNativeGestureEvent)
            kind = event.gestureType()
            if kind == Qt.NativeGestureType.ZoomNativeGesture:
                self.zoom_by(math.exp(event.value()), event.position())
                return True
            if kind == Qt.NativeGestureType.SmartZoomNativeGesture:
                self.actual_size()
                return True
        return super().event(event)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if not paths:
            event.ignore()
            return
        pos = event.position()
        self.filesDropped.emit(paths, *self.viewport.to_world(pos.x(), pos.y()))
        event.acceptProposedAction()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if self.interaction is not None and self.interaction.key(event.key()):
            self.update()
            event.accept()
            return
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        fraction = 0.5 if shift else KEY_PAN_FRACTION
        dx, dy = self.width() * fraction, self.height() * fraction
        moves = {
            Qt.Key.Key_Left: (dx, 0),
            Qt.Key.Key_Right: (-dx, 0),
            Qt.Key.Key_Up: (0, dy),
            Qt.Key.Key_Down: (0, -dy),
        }
        move = moves.get(Qt.Key(event.key()))
        if move is not None:
            self.pan_by(*move)
            event.accept()
            return
        if event.key() == Qt.Key.Key_Escape and (self._band or self._stroke) is not None:
            self._band = None
            self._end_stroke()
            event.accept()
            return
        super().keyPressEvent(event)


def _open_path(points: list[QPointF]) -> QPainterPath:
    path = QPainterPath(points[0])
    for point in points[1:]:
        path.lineTo(point)
    return path


def cells_under(a: QPointF | QPoint, b: QPointF | QPoint, cell_px: int) -> Rect:
    """Lattice cells (cell = floor(px / cell_px)) touched by the world rectangle a..b."""
    x0, x1 = sorted((a.x(), b.x()))
    y0, y1 = sorted((a.y(), b.y()))
    cx0, cy0 = math.floor(x0 / cell_px), math.floor(y0 / cell_px)
    cx1, cy1 = math.floor(x1 / cell_px), math.floor(y1 / cell_px)
    return Rect(cx0, cy0, cx1 - cx0 + 1, cy1 - cy0 + 1)
