"""Threads between the UI and the engine: tile feeds and one-off background tasks.

The UI thread never renders, never waits for a render and never converts a tile:

- `TileFeed` owns a `TileScheduler` and a `RequestThread`. A view change hands the
  newest (view, scale, epoch) to the request thread, which calls `scheduler.request`
  (cache lookups and digests cost milliseconds per call). Tiles reach `_on_tile` on the
  request thread (cache hits) or the scheduler's worker (renders); there the uint8 array
  is copied into a QImage and sent to the UI thread by a queued signal, as `TileImage`.
- `TaskRunner` runs a function (load a model, convert a checkpoint, hash a file) on a
  Python thread and calls back on the UI thread with its result or its exception.

Shutdown: `TileFeed.close` and `TaskRunner.shutdown` join their threads, and the main
window calls them before the event loop ends (Qt aborts a process whose QThreads are
still running; we use Python threads, joined, so none outlives the application).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QImage

from engine.cache import TileCache
from engine.scheduler import SchedulerStats, TileResult, TileScheduler
from engine.tiles import Rect, TileIndex
from engine.world import World

log = logging.getLogger(__name__)


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """uint8 [H, W, 3] -> a QImage (RGB32) that owns a copy of the pixels."""
    h, w, _ = rgb.shape
    rgb = np.ascontiguousarray(rgb)
    view = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    # convertToFormat allocates the new image: nothing refers to `rgb` afterwards, and
    # RGB32 is what the raster paint engine draws without another conversion.
    return view.convertToFormat(QImage.Format.Format_RGB32)


@dataclass(frozen=True, slots=True, eq=False)
class TileImage:
    """A tile ready for the UI thread (the engine's TileResult with its pixels as a QImage)."""

    tile: TileIndex
    digest: str
    epoch: int
    generation: int  # of the feed that produced it; a rebuilt world starts a new generation
    image: QImage | None  # None when error is set
    error: str | None = None


class RequestThread:
    """Passes the newest view request to a scheduler, off the UI thread (drains to newest)."""

    def __init__(self, scheduler: TileScheduler, name: str = "view-requests") -> None:
        self._scheduler = scheduler
        self._cv = threading.Condition()
        self._pending: tuple[Rect, float, int] | None = None
        self._closing = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name)
        self._thread.start()

    def submit(self, view: Rect, scale: float, epoch: int) -> None:
        with self._cv:
            self._pending = (view, scale, epoch)
            self._cv.notify_all()

    @property
    def idle(self) -> bool:
        with self._cv:
            return self._pending is None and not self._busy

    def drop_pending(self) -> None:
        """Forget a request not yet passed on to the scheduler."""
        with self._cv:
            self._pending = None

    def close(self, timeout: float | None = None) -> None:
        with self._cv:
            self._closing = True
            self._pending = None
            self._cv.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending is not None or self._closing)
                if self._closing:
                    return
                item, self._pending = self._pending, None
                self._busy = True
            try:
                assert item is not None
                self._scheduler.request(*item)
            except Exception:  # keep serving requests; the scheduler logs its own errors
                log.exception("tile request failed")
            finally:
                with self._cv:
                    self._busy = False


class TileFeed(QObject):
    """One TileScheduler on a world, with its results delivered to the UI thread.

    Emits `tileReady(TileImage)` on the UI thread. Create it on the UI thread; call
    `close` (joins every thread it started) before dropping it.
    """

    tileReady = Signal(object)

    def __init__(
        self,
        world: World,
        generation: int,
        *,
        cache: TileCache,
        block_tiles: int | None = None,  # the scheduler's choice for the device
        prefetch_ring: int = 1,
        batch_max: int | None = None,  # the scheduler's choice for the device
        worlds: Sequence[World] | None = None,  # replicas on several devices (TileScheduler)
        name: str = "tiles",
    ) -> None:
        super().__init__()
        self.world = world
        self.generation = generation
        self.scheduler = TileScheduler(
            world,
            self._on_tile,
            cache=cache,
            block_tiles=block_tiles,
            prefetch_ring=prefetch_ring,
            batch_max=batch_max,
            worlds=worlds,
        )
        self._requests = RequestThread(self.scheduler, name=f"{name}-requests")
        self._closed = False
        # Set by the view: tiles it already shows up to date are not converted or sent.
        self.skip: Callable[[TileIndex, str], bool] | None = None

    @property
    def cache(self) -> TileCache:
        return self.scheduler.cache

    def request(self, view: Rect, scale: float, epoch: int) -> None:
        """Ask for `view` (world px) at `scale`; returns at once."""
        if not self._closed:
            self._requests.submit(view, scale, epoch)

    def stats(self) -> SchedulerStats:
        return self.scheduler.stats()

    @property
    def idle(self) -> bool:
        """Nothing waiting to be requested, queued or rendering (deliveries may be in transit)."""
        stats = self.scheduler.stats()
        return self._requests.idle and stats.queued_tiles == 0 and stats.in_flight_tiles == 0

    def cancel(self) -> None:
        """Stop asking for tiles: pending requests and queued renders are dropped."""
        self._closed = True
        self._requests.drop_pending()
        self.scheduler.cancel()

    def close(self, timeout: float | None = None) -> bool:
        """Drop queued work and join the request thread and the scheduler's worker."""
        self._closed = True
        self._requests.close(timeout)
        return self.scheduler.close(timeout)

    def _on_tile(self, result: TileResult) -> None:
        # Any thread but the UI's (request thread or scheduler worker): convert here.
        skip = self.skip
        if result.rgb is not None and skip is not None and skip(result.key.tile, result.key.digest):
            return  # shown already: every request delivers its cached tiles again
        image = None if result.rgb is None else rgb_to_qimage(result.rgb)
        self.tileReady.emit(
            TileImage(
                result.key.tile,
                result.key.digest,
                result.epoch,
                self.generation,
                image,
                result.error,
            ),
        )


class TaskRunner(QObject):
    """Runs functions on Python threads; their results come back on the UI thread.

    `run(fn, on_done, on_error)`: `fn()` runs on a new thread; then `on_done(result)` or
    `on_error(exception)` is called on the UI thread (errors travel as values).
    """

    _finished = Signal(object, object, object)  # callback, value, is_error

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._threads: list[threading.Thread] = []
        self._finished.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)
        self._closing = False

    def run(
        self,
        fn: Callable[[], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        name: str = "task",
    ) -> threading.Thread:
        def body() -> None:
            try:
                value = fn()
            except Exception as exc:  # errors travel as values
                log.debug("background task %s failed", name, exc_info=True)
                if not self._closing:
                    self._finished.emit(on_error, exc, True)
                return
            if not self._closing:
                self._finished.emit(on_done, value, False)

        self._threads = [t for t in self._threads if t.is_alive()]
        thread = threading.Thread(target=body, name=name)
        self._threads.append(thread)
        thread.start()
        return thread

    @property
    def busy(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def shutdown(self, timeout: float | None = None) -> None:
        """Join every task thread; their callbacks are no longer called."""
        self._closing = True
        for thread in self._threads:
            thread.join(timeout)

    @Slot(object, object, object)
    def _dispatch(self, callback: Callable[[Any], None], value: Any, is_error: bool) -> None:
        if not self._closing:
            callback(value)


def close_in_background(feeds: list[TileFeed], reaper: list[threading.Thread]) -> None:
    """Close feeds without blocking the UI thread: queued work is dropped at once, and a
    thread (kept in `reaper` so shutdown can join it) waits for renders in flight."""
    for feed in feeds:
        feed.cancel()

    def close_all() -> None:
        for feed in feeds:
            feed.close()

    thread = threading.Thread(target=close_all, name="close-feeds")
    reaper[:] = [t for t in reaper if t.is_alive()]
    reaper.append(thread)
    thread.start()
