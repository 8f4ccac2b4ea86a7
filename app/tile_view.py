"""A widget that shows a world through a TileFeed: the pixmap store and tile painting.

`TileView` is the common base of the canvas and the navigator. It keeps a `Viewport`,
asks its feed for the visible tiles on every view change (at most one request per
`request_interval_ms`, each with a new epoch), turns each arriving tile's QImage into a
QPixmap once, keeps the pixmaps in a bounded `PixmapStore`, and paints.

Which tiles are painted (coarse under fine): the tiles of the view's lod that are in the
store are drawn as they are. Where one is missing, the nearest coarser tile that covers
it (lod + 1, + 2, ...) is drawn scaled up into its place, and any finer tiles (lod - 1,
- 2, left from zooming out) on top, so a change of zoom never shows a blank area or flickers:
the old picture stays until the new tiles replace it. After an edit or a rebuilt world,
stored tiles are marked stale rather than dropped, for the same reason: they stay on
screen until their replacements arrive.

Epochs: each request carries a new epoch. A result of the current epoch is always kept.
A result of an older epoch is kept only when its tile is still part of the current view
(its pixels are right; the scheduler stamps deliveries with the newest epoch anyway), and
never when an edit or a new world came after its request (`_min_epoch`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QRect, QRectF, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPixmap, QResizeEvent
from PySide6.QtWidgets import QWidget

from app.viewport import Viewport, snap
from app.workers import TileFeed, TileImage
from engine.tiles import MAX_LOD, TILE_PX, Rect, TileIndex, lod_for_scale, lod_rect, tiles_covering

BACKGROUND = QColor(40, 42, 46)
FALLBACK_LEVELS = 6  # coarser lods searched for a stand-in tile
FINER_LEVELS = 2  # finer lods searched (each level has four times the tiles to draw)


@dataclass(slots=True)
class StoredTile:
    pixmap: QPixmap
    digest: str
    stale: bool = False
    used: int = 0  # paint tick of the last time it was drawn or stored


class PixmapStore:
    """Tile pixmaps keyed by TileIndex, at most about `max_tiles` (UI thread only).

    Eviction drops the least recently used tiles that `protect` does not claim (the
    visible ones), so memory stays bounded however far the user travels.

    `has_fresh(tile, digest)` may be called from any thread: a feed asks it before
    converting a tile, so a cached tile that every request delivers again is converted
    and sent to the UI thread only when the store does not already show it.
    """

    def __init__(self, max_tiles: int = 1500) -> None:
        self.max_tiles = max_tiles
        self._items: dict[TileIndex, StoredTile] = {}
        self._fresh: set[tuple[TileIndex, str]] = set()  # stored and not stale
        self._lock = threading.Lock()  # guards _fresh, read by feed threads
        self.tick = 0

    def get(self, tile: TileIndex) -> StoredTile | None:
        return self._items.get(tile)

    def has_fresh(self, tile: TileIndex, digest: str) -> bool:
        with self._lock:
            return (tile, digest) in self._fresh

    def put(self, tile: TileIndex, pixmap: QPixmap, digest: str) -> None:
        old = self._items.get(tile)
        self._items[tile] = StoredTile(pixmap, digest, False, self.tick)
        with self._lock:
            if old is not None:
                self._fresh.discard((tile, old.digest))
            self._fresh.add((tile, digest))

    def mark_stale(self, world_rect: Rect | None = None) -> None:
        """Mark tiles touching `world_rect` (full-resolution px; None: all) as stale."""
        with self._lock:
            for tile, item in self._items.items():
                if world_rect is None or tile.world_rect.intersects(world_rect):
                    item.stale = True
                    self._fresh.discard((tile, item.digest))

    def evict(self, protect: Callable[[TileIndex], bool]) -> int:
        """Drop old tiles once over the bound (to 90 % of it); returns how many went."""
        if len(self._items) <= self.max_tiles:
            return 0
        target = int(self.max_tiles * 0.9)
        candidates = sorted(
            (item.used, tile) for tile, item in self._items.items() if not protect(tile)
        )
        drop = candidates[: max(0, len(self._items) - target)]
        with self._lock:
            for _, tile in drop:
                item = self._items.pop(tile)
                self._fresh.discard((tile, item.digest))
        return len(drop)

    def clear(self) -> None:
        self._items.clear()
        with self._lock:
            self._fresh.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, tile: object) -> bool:
        return tile in self._items


class TileView(QWidget):
    """Shows `viewport` of a world, tile by tile, from a TileFeed."""

    viewportChanged = Signal(object)  # Viewport
    renderError = Signal(str)
    debounce = False  # True: request once the view has been still for request_interval_ms

    def __init__(self, parent: QWidget | None = None, *, request_interval_ms: int = 16) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._viewport = Viewport(width=max(1, self.width()), height=max(1, self.height()))
        self.store = PixmapStore()
        self.feed: TileFeed | None = None
        self._generation = -1
        self._epoch = 0
        self._min_epoch = 0
        self._wanted: tuple[int, int, int, int, int] | None = None  # lod, tile range + ring
        self._request_interval_ms = request_interval_ms
        self._last_request = 0.0
        self._request_timer = QTimer(self)
        self._request_timer.setSingleShot(True)
        self._request_timer.timeout.connect(self._issue_request)
        self.requests_issued = 0
        self.tiles_received = 0
        self.frame_hook: Callable[[], None] | None = None  # called after every paint (bench)
        # Other views' stores of the same world, searched for coarser stand-in tiles (the
        # canvas borrows the navigator's overview while it zooms out).
        self.stand_in_stores: list[PixmapStore] = []

    # View -------------------------------------------------------------------------------

    @property
    def viewport(self) -> Viewport:
        return self._viewport

    def set_viewport(self, viewport: Viewport) -> None:
        viewport = viewport.resized(max(1, self.width()), max(1, self.height()))
        if viewport == self._viewport:
            return
        self._viewport = viewport
        self.update()
        self.schedule_request()
        self.viewportChanged.emit(viewport)

    @property
    def scale(self) -> float:
        """Device pixels per world pixel: the zoom the tiles are rendered for."""
        return self._viewport.zoom * self.devicePixelRatioF()

    @property
    def lod(self) -> int:
        return lod_for_scale(self.scale)

    def visible_tiles(self) -> list[TileIndex]:
        lod = self.lod
        return tiles_covering(lod_rect(self._viewport.world_rect(), lod), lod)

    def is_complete(self) -> bool:
        """Every visible tile of the current lod is stored, up to date (not stale)."""
        for tile in self.visible_tiles():
            item = self.store.get(tile)
            if item is None or item.stale:
                return False
        return True

    def tile_screen_rect(self, tile: TileIndex) -> QRect:
        """Where `tile` is drawn (widget px); neighbours share their edges exactly."""
        r = tile.world_rect
        ox, oy = self._viewport.origin
        z = self._viewport.zoom
        x0, y0 = snap((r.x - ox) * z), snap((r.y - oy) * z)
        x1, y1 = snap((r.right - ox) * z), snap((r.bottom - oy) * z)
        return QRect(x0, y0, x1 - x0, y1 - y0)

    # Feed -------------------------------------------------------------------------------

    def set_feed(self, feed: TileFeed | None) -> None:
        """Show a (new) world's tiles. The pixels on screen stay, marked stale, until
        the new world's tiles replace them."""
        if self.feed is not None:
            self.feed.tileReady.disconnect(self._on_tile_image)
            self.feed.skip = None
        self.feed = feed
        self.store.mark_stale()
        self._min_epoch = self._epoch + 1
        if feed is not None:
            self._generation = feed.generation
            feed.skip = self.store.has_fresh
            feed.tileReady.connect(self._on_tile_image)
            self.schedule_request(now=True)
        self.update()

    def invalidate(self, world_rect: Rect) -> None:
        """The world changed inside `world_rect` (an edit, an undo): re-request those tiles."""
        self.store.mark_stale(world_rect)
        self._min_epoch = self._epoch + 1
        self.schedule_request(now=True)

    def schedule_request(self, now: bool = False) -> None:
        """Request the view soon: at most once per `request_interval_ms` (the canvas
        throttles), or once things settle (`debounce` subclasses restart the timer)."""
        if self.feed is None:
            return
        if now:
            self._request_timer.start(0)
            return
        if self.debounce:
            self._request_timer.start(self._request_interval_ms)
            return
        if self._request_timer.isActive():
            return
        elapsed_ms = (time.monotonic() - self._last_request) * 1000
        self._request_timer.start(max(0, int(self._request_interval_ms - elapsed_ms)))

    @Slot()
    def _issue_request(self) -> None:
        if self.feed is None or not self.isVisible():
            return
        self._last_request = time.monotonic()
        self._epoch += 1
        self.requests_issued += 1
        lod = self.lod
        view = self._viewport.world_rect()
        tiles = lod_rect(view, lod)
        t0x, t0y = tiles.x // TILE_PX - 1, tiles.y // TILE_PX - 1
        t1x, t1y = (tiles.right - 1) // TILE_PX + 1, (tiles.bottom - 1) // TILE_PX + 1
        self._wanted = (lod, t0x, t0y, t1x, t1y)
        self.feed.request(view, self.scale, self._epoch)
        # Visible tiles plus the ring, three times over: panning back finds its pixmaps.
        self.store.max_tiles = max(1500, 3 * (t1x - t0x + 1) * (t1y - t0y + 1))
        self.store.evict(self._protected)

    def _protected(self, tile: TileIndex) -> bool:
        wanted = self._wanted
        if wanted is None:
            return False
        lod, t0x, t0y, t1x, t1y = wanted
        return tile.lod == lod and t0x <= tile.tx <= t1x and t0y <= tile.ty <= t1y

    @Slot(object)
    def _on_tile_image(self, item: TileImage) -> None:
        if item.generation != self._generation or item.epoch < self._min_epoch:
            return
        if item.epoch < self._epoch and not self._protected(item.tile):
            return  # an old view's tile that the current view does not show
        if item.image is None:
            self.renderError.emit(item.error or "render failed")
            return
        self.tiles_received += 1
        self.store.put(item.tile, QPixmap.fromImage(item.image), item.digest)
        self.update(self.tile_screen_rect(item.tile).intersected(self.rect()))

    # Qt events --------------------------------------------------------------------------

    def sizeHint(self) -> QSize:
        return QSize(640, 480)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.set_viewport(self._viewport.resized(self.width(), self.height()))

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.schedule_request(now=True)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        area = event.rect()
        painter.fillRect(area, BACKGROUND)
        self.store.tick += 1
        smooth = self.scale < 1
        for tile in self._tiles_in(area):
            target = self.tile_screen_rect(tile)
            item = self.store.get(tile)
            if item is None:
                self._paint_stand_in(painter, tile, target)
                continue
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, smooth)
            painter.drawPixmap(target, item.pixmap)
            item.used = self.store.tick
        self.paint_overlay(painter)
        painter.end()
        if self.frame_hook is not None:
            self.frame_hook()

    def paint_overlay(self, painter: QPainter) -> None:
        """Subclasses draw on top of the tiles here."""

    def _tiles_in(self, area: QRect) -> list[TileIndex]:
        vp = self._viewport
        x0, y0 = vp.to_world(area.left(), area.top())
        x1, y1 = vp.to_world(area.right() + 1, area.bottom() + 1)
        world = Rect(
            math.floor(x0),
            math.floor(y0),
            max(1, math.ceil(x1) - math.floor(x0)),
            max(1, math.ceil(y1) - math.floor(y0)),
        )
        lod = self.lod
        return tiles_covering(lod_rect(world, lod), lod)

    def _paint_stand_in(self, painter: QPainter, tile: TileIndex, target: QRect) -> None:
        """Paint what we have for a missing tile: a coarser tile scaled up, finer ones on top."""
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        for lod in range(tile.lod + 1, min(MAX_LOD, tile.lod + FALLBACK_LEVELS) + 1):
            f = 2 ** (lod - tile.lod)
            index = TileIndex(lod, tile.tx // f, tile.ty // f)
            coarse = self.store.get(index)
            for store in self.stand_in_stores:
                coarse = coarse or store.get(index)
            if coarse is None:
                continue
            side = TILE_PX / f
            source = QRectF((tile.tx % f) * side, (tile.ty % f) * side, side, side)
            painter.drawPixmap(QRectF(target), coarse.pixmap, source)
            coarse.used = self.store.tick
            break
        self._paint_finer(painter, tile, FINER_LEVELS)

    def _paint_finer(self, painter: QPainter, tile: TileIndex, depth: int) -> None:
        """Draw the stored tiles of up to `depth` finer lods inside `tile` (left over from
        a zoom-out), the finest where several are stored."""
        if tile.lod == 0 or depth == 0:
            return
        for dy in (0, 1):
            for dx in (0, 1):
                child = TileIndex(tile.lod - 1, 2 * tile.tx + dx, 2 * tile.ty + dy)
                fine = self.store.get(child)
                if fine is not None:
                    painter.drawPixmap(self.tile_screen_rect(child), fine.pixmap)
                    fine.used = self.store.tick
                else:
                    self._paint_finer(painter, child, depth - 1)
