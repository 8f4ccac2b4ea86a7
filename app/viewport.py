"""What a canvas shows, as a small Qt-free value type: centre, zoom and widget size.

Units: world coordinates are full-resolution pixels (x right, y down, y = 0 the middle of
the horizon band); screen coordinates are widget (logical) pixels with (0, 0) at the top
left. `zoom` is screen pixels per world pixel. Screen x of world x is
`(x - origin_x) * zoom`, where the origin is the world point at the widget's top-left
corner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from engine.tiles import Rect

MIN_ZOOM = 1 / 64
MAX_ZOOM = 16.0


def clamp_zoom(zoom: float) -> float:
    return min(MAX_ZOOM, max(MIN_ZOOM, zoom))


def snap(value: float) -> int:
    """Screen coordinate -> pixel edge; floor(v + 0.5) rounds every edge the same way, so
    neighbouring tiles share their edges exactly (Python's round() would not: banker's)."""
    return math.floor(value + 0.5)


def zoom_label(zoom: float) -> str:
    """'1:1', '2:1', '1:4', '1:2.8' for a status bar."""
    if zoom >= 1:
        n = zoom
        text = f"{n:.0f}" if abs(n - round(n)) < 0.05 else f"{n:.1f}"
        return f"{text}:1"
    n = 1 / zoom
    text = f"{n:.0f}" if abs(n - round(n)) < 0.05 else f"{n:.1f}"
    return f"1:{text}"


@dataclass(frozen=True, slots=True)
class Viewport:
    """The world point at the widget's centre, the zoom and the widget's size (screen px)."""

    center_x: float = 0.0
    center_y: float = 0.0
    zoom: float = 1.0
    width: int = 1
    height: int = 1

    @property
    def origin(self) -> tuple[float, float]:
        """World point at the widget's top-left corner."""
        return (
            self.center_x - self.width / 2 / self.zoom,
            self.center_y - self.height / 2 / self.zoom,
        )

    def to_world(self, sx: float, sy: float) -> tuple[float, float]:
        ox, oy = self.origin
        return ox + sx / self.zoom, oy + sy / self.zoom

    def to_screen(self, wx: float, wy: float) -> tuple[float, float]:
        ox, oy = self.origin
        return (wx - ox) * self.zoom, (wy - oy) * self.zoom

    def world_rect(self) -> Rect:
        """The smallest integer world rectangle that covers the widget."""
        ox, oy = self.origin
        x0, y0 = math.floor(ox), math.floor(oy)
        x1 = math.ceil(ox + self.width / self.zoom)
        y1 = math.ceil(oy + self.height / self.zoom)
        return Rect(x0, y0, max(1, x1 - x0), max(1, y1 - y0))

    def resized(self, width: int, height: int) -> Viewport:
        return replace(self, width=max(1, width), height=max(1, height))

    def centered(self, wx: float, wy: float) -> Viewport:
        return replace(self, center_x=wx, center_y=wy)

    def panned(self, dx: float, dy: float) -> Viewport:
        """The content moves by (dx, dy) screen pixels (a drag to the right shows what is left)."""
        return replace(
            self, center_x=self.center_x - dx / self.zoom, center_y=self.center_y - dy / self.zoom
        )

    def zoomed(self, factor: float, anchor: tuple[float, float] | None = None) -> Viewport:
        """Zoom by `factor` (clamped to MIN_ZOOM..MAX_ZOOM) keeping the world point under
        `anchor` (screen px; default the centre) where it is on screen."""
        zoom = clamp_zoom(self.zoom * factor)
        return self.with_zoom(zoom, anchor)

    def with_zoom(self, zoom: float, anchor: tuple[float, float] | None = None) -> Viewport:
        """Set the zoom (not clamped) keeping the world point under `anchor` in place."""
        if anchor is None:
            return replace(self, zoom=zoom)
        sx, sy = anchor
        wx, wy = self.to_world(sx, sy)
        # After the change, screen (sx, sy) must still show (wx, wy).
        cx = wx - (sx - self.width / 2) / zoom
        cy = wy - (sy - self.height / 2) / zoom
        return replace(self, center_x=cx, center_y=cy, zoom=zoom)
