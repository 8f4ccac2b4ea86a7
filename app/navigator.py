"""The navigator: a low-detail overview around the canvas's view; click or drag to jump.

It shows `ZOOM_OUT` times the canvas's extent, rendered by its own TileScheduler (with a
small cache of its own) on the same World, at a lod that much coarser. It re-centres only
when the canvas's view nears its edge, and asks for tiles only once the view has been
still for a moment, so it stays out of the way of the canvas's renders.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QWidget

from app.tile_view import TileView
from app.viewport import Viewport

ZOOM_OUT = 8.0  # the navigator shows this many times the canvas's width
MIN_NAV_ZOOM = 1 / 128  # coarser overviews cost too much to render on a CPU
RECENTER_MARGIN = 0.2  # re-centre when the view's centre is this close to an edge (fraction)


class Navigator(TileView):
    """Emits `jumpRequested(x, y)`: the world point the canvas should centre on."""

    jumpRequested = Signal(float, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, request_interval_ms=200)
        self.setMinimumSize(160, 100)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Overview: click or drag to move the view")
        self._main = Viewport()
        self._dragging = False

    debounce = True

    def sizeHint(self) -> QSize:
        return QSize(280, 180)

    def follow(self, main: Viewport) -> None:
        """Track the canvas's viewport (re-centre only when needed, not while dragging)."""
        self._main = main
        zoom = max(MIN_NAV_ZOOM, min(1.0, main.zoom / ZOOM_OUT))
        vp = self.viewport
        if zoom != vp.zoom:
            vp = vp.with_zoom(zoom)
            vp = vp.centered(main.center_x, main.center_y)
        elif not self._dragging:
            sx, sy = vp.to_screen(main.center_x, main.center_y)
            mx, my = vp.width * RECENTER_MARGIN, vp.height * RECENTER_MARGIN
            if not (mx <= sx <= vp.width - mx and my <= sy <= vp.height - my):
                vp = vp.centered(main.center_x, main.center_y)
        if vp == self.viewport:
            self.update()
        else:
            self.set_viewport(vp)

    def paint_overlay(self, painter: QPainter) -> None:
        main, vp = self._main, self.viewport
        ox, oy = main.origin
        x0, y0 = vp.to_screen(ox, oy)
        x1, y1 = vp.to_screen(ox + main.width / main.zoom, oy + main.height / main.zoom)
        view = QRectF(QPointF(x0, y0), QPointF(x1, y1))
        if view.width() < 4 or view.height() < 4:  # keep a tiny view findable
            view = QRectF(view.center() - QPointF(2, 2), QSize(4, 4).toSizeF())
        shade = QPainterPath()
        shade.addRect(QRectF(self.rect()))
        inner = QPainterPath()
        inner.addRect(view)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.fillPath(shade.subtracted(inner), QColor(0, 0, 0, 90))
        painter.setPen(QPen(QColor(0, 0, 0, 150), 3))
        painter.drawRect(view)
        painter.setPen(QPen(QColor(255, 255, 255), 1.5))
        painter.drawRect(view)

    def _jump(self, event: QMouseEvent) -> None:
        pos = event.position()
        self.jumpRequested.emit(*self.viewport.to_world(pos.x(), pos.y()))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._dragging = True
            self._jump(event)
            event.accept()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._dragging:
            self._jump(event)
            event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._dragging:
            self._dragging = False
            self.follow(self._main)
            event.accept()
