"""Tile scheduler: the newest view wins, visible tiles first, the cache in front of the model.

    scheduler = TileScheduler(world, on_tile=show_tile)
    scheduler.request(view, scale, epoch)      # on every viewport change, from the GUI thread
    ...
    scheduler.close()

A request names a view (full-resolution world pixels), a zoom and an epoch. Its tiles
(at `lod_for_scale(scale)`) plus a prefetch ring around them are looked up in the cache
under `TileKey(tile, digest)`, where the digest covers exactly the edits that touch the
tile (DESIGN.md §2); hits are delivered at once, misses become render jobs. A job is a
rectangle of missing tiles rendered as one window and cut into tiles (every window pays
a fixed margin of lattice cells, so one 512 px window is much cheaper than sixteen 128 px
ones):
- on a CPU, the bounding rectangle of the missing tiles of one aligned block of
  `block_tiles` squared tiles: the first tiles near the view's centre come soon;
- on a GPU, the missing tiles of the view as few windows as the world's view budget
  allows (`World.window_fits`, engine.world.view_budget): a 1920 x 1080 view is one window
  (for `paper` on a GPU of 24 GB or more, else two), of the few shapes a view of that size
  can have, so the GPU works on large windows and meets few new shapes.

Threading model:
- One worker thread per render world: the world itself, or `worlds`, replicas of it on
  several devices (engine.tile_workers.replicas(world, ["cuda:0", "cuda:1"])). Each takes
  the next queued job; a tile is a pure function of its inputs, so which worker renders it
  does not change it. A worker is started by the first request that queues work, and
  it ends after `IDLE_EXIT_S` without work (a later request starts a new one) or at
  `close()`, which joins it. It is not a daemon: rendering is never killed half-way.
  On CUDA it waits a minute, not two seconds: cuDNN keeps its execution plans per
  thread, and a new thread plans every convolution of the next view again.
- `on_tile(result)` is called without any lock held, from two threads: synchronously
  inside `request` (on the caller's thread) for tiles found in the cache, and from the
  worker for rendered tiles. A GUI emits a queued signal from it and returns; it must
  not block on the UI thread.
- `request`, `cancel`, `stats`, `wait_idle` and `close` may be called from any thread.

Stale epochs: a request drops every queued job of older requests. A tile is delivered
only while the newest request still wants it, stamped with the newest epoch; results
of work a newer request no longer wants (the job that was in flight when the view
moved on) are cached but not delivered. A tile the newer request wants and that is
already in flight is not rendered twice: it is delivered, stamped with the new epoch,
when it is done. The decision to deliver is taken under the lock but the callback runs
after it, so a result decided just before a new request may reach the GUI just after:
the GUI must discard any result whose epoch is older than its current one.

Edits: the edit log is snapshotted when a request is made; the digests of its cache
lookups and the pixels its jobs render both come from that snapshot, so a cached tile
always holds exactly what its key says even if the log changes while a job renders. The
scheduler does not listen to the world: after an edit the GUI issues a new request (a
new epoch), whose tiles outside the edit's influence keep their digests and come from
the cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.cache import TileCache
from engine.edits import Edit
from engine.tile_workers import on_device
from engine.tiles import (
    TILE_PX,
    Rect,
    TileIndex,
    lod_for_scale,
    lod_rect,
    tiles_by_distance,
    tiles_covering,
)
from engine.world import World, to_uint8

log = logging.getLogger(__name__)

# A worker thread ends after this long without work (by device type; so a scheduler that
# is never closed cannot keep the interpreter from exiting for longer). On an H200 a view
# rendered in 768-px blocks on a thread that had planned their shapes took 0.12 s for
# `paper` and 0.036 s for `lite`, against 0.18 s and 0.11 s on a new thread.
IDLE_EXIT_S = {"cpu": 2.0, "cuda": 60.0}
CPU_BLOCK_TILES = 6  # block side on a CPU: 768 px windows


@dataclass(frozen=True, slots=True)
class TileKey:
    """What a tile's pixels are a function of, beyond the world's weights and seed."""

    tile: TileIndex
    digest: str  # edits_digest of the edits that touch the tile's render window; '' for none


@dataclass(frozen=True, slots=True, eq=False)
class TileResult:
    """One tile for the GUI; errors travel as values, never raised across threads."""

    key: TileKey
    epoch: int  # of the newest request when it was delivered; older ones must be discarded
    rgb: np.ndarray | None  # [TILE_PX, TILE_PX, 3] uint8, read-only; None when error is set
    error: str | None = None
    from_cache: bool = False


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """Counters for a status bar; rendered_* and cache_* count since the scheduler began."""

    queued_tiles: int
    in_flight_tiles: int
    rendered_tiles: int
    rendered_pixels: int  # lod pixels of tiles rendered (window margins not counted)
    render_seconds: float  # wall time of the render calls
    cache_hits: int  # tiles of requests found in the cache
    cache_misses: int

    @property
    def pixels_per_second(self) -> float:
        return self.rendered_pixels / self.render_seconds if self.render_seconds > 0 else 0.0


class _Done(NamedTuple):
    key: TileKey
    rgb: np.ndarray | None  # the cached tile; None when its render failed


@dataclass(frozen=True, slots=True, eq=False)
class _Job:
    """A rectangle of missing tiles of one request, rendered as one window."""

    lod: int
    rect: Rect  # lod pixels: the union of the tiles' rects
    keys: tuple[TileKey, ...]
    edits: tuple[Edit, ...]  # the request's snapshot of the edit log
    prefetch: bool


class TileScheduler:
    """Renders the tiles a view needs on one worker thread per device, newest request first.

    `block_tiles`: side of the aligned blocks that missing tiles are grouped in (one
    render window per block); 0: no blocks, windows as large as the view budget
    allows; default (None) CPU_BLOCK_TILES on CPUs and 0 on GPUs. `prefetch_ring`: tiles around
    the view to render after the visible ones. `batch_max`: jobs of one shape rendered in
    one generator call (never more than the view budget allows, `World.max_batch`).
    `worlds`: the worlds that render, one worker each: replicas of `world` on several
    devices (`engine.tile_workers.replicas`); default: `world` alone.
    """

    def __init__(
        self,
        world: World,
        on_tile: Callable[[TileResult], None],
        *,
        cache: TileCache | None = None,
        block_tiles: int | None = None,
        prefetch_ring: int = 1,
        batch_max: int | None = None,
        worlds: Sequence[World] | None = None,
    ) -> None:
        """`batch_max`: windows per generator call; default 4 on GPUs, 1 on CPUs (where a
        batch is no faster and only costs memory)."""
        kind = "cuda" if world.device.type == "cuda" else "cpu"
        if batch_max is None:
            batch_max = 4 if kind == "cuda" else 1
        if block_tiles is None:
            block_tiles = CPU_BLOCK_TILES if kind == "cpu" else 0
        if block_tiles < 0 or prefetch_ring < 0 or batch_max < 1:
            raise ValueError("need block_tiles >= 0, prefetch_ring >= 0 and batch_max >= 1")
        self.world = world
        self.worlds = [world] if worlds is None else list(worlds)
        if not self.worlds:
            raise ValueError("worlds must hold at least one world")
        self.cache = TileCache() if cache is None else cache
        self._on_tile = on_tile
        self._block_tiles = block_tiles
        self._prefetch_ring = prefetch_ring
        self._batch_max = batch_max
        self._idle_exit_s = IDLE_EXIT_S[kind]
        self._cv = threading.Condition()
        # Everything below is guarded by self._cv.
        self._epoch: int | None = None
        self._queue: list[_Job] = []  # highest priority first
        self._pending: dict[TileIndex, TileKey] = {}  # wanted by the newest request, undelivered
        self._in_flight: dict[int, list[_Job]] = {}  # worker slot -> its batch
        self._in_flight_keys: set[TileKey] = set()  # of every batch in flight
        self._busy: set[int] = set()  # workers holding a batch (rendering or delivering it)
        self._closing = False
        self._workers: dict[int, threading.Thread] = {}  # slot -> the thread taking work
        self._threads: list[threading.Thread] = []  # every worker not yet joined
        self._rendered_tiles = 0
        self._rendered_pixels = 0
        self._render_seconds = 0.0
        self._hits = 0
        self._misses = 0

    # Public API -------------------------------------------------------------------------

    def request(self, view: Rect | tuple[int, int, int, int], scale: float, epoch: int) -> None:
        """Show `view` (full-resolution world pixels) at `scale` (screen px per world px).

        Replaces all earlier requests. Cached tiles are delivered before this returns, on
        the calling thread; the rest follow from the worker. Epochs must not decrease: a
        request older than the newest one is ignored. Does nothing after `close`.
        """
        lod = lod_for_scale(scale)
        area = lod_rect(Rect.of(view), lod)  # lod pixels
        centre = (area.x + area.w / 2, area.y + area.h / 2)
        visible = tiles_by_distance(tiles_covering(area, lod), centre)
        ring = tiles_by_distance(self._ring(visible), centre)
        edits = self.world.edits  # one snapshot for the lookups and the renders
        keys = [TileKey(t, self.world.digest(t.rect, lod, edits)) for t in visible + ring]

        hits: list[TileResult] = []
        with self._cv:
            if self._closing:
                return
            if self._epoch is not None and epoch < self._epoch:
                log.debug("ignoring request of epoch %d, newest is %d", epoch, self._epoch)
                return
            self._epoch = epoch
            self._queue.clear()
            self._pending = {}
            missing: list[TileKey] = []
            missing_ring: list[TileKey] = []
            for i, key in enumerate(keys):
                rgb = self.cache.get(key)
                if rgb is not None:
                    self._hits += 1
                    hits.append(TileResult(key, epoch, rgb, from_cache=True))
                    continue
                self._misses += 1
                self._pending[key.tile] = key
                if key not in self._in_flight_keys:  # else it is delivered when done
                    (missing if i < len(visible) else missing_ring).append(key)
            self._queue += self._jobs(missing, lod, edits, centre, prefetch=False)
            self._queue += self._jobs(missing_ring, lod, edits, centre, prefetch=True)
            if self._queue:
                self._start_worker()
                self._cv.notify_all()
        for result in hits:
            self._deliver(result)

    def cancel(self) -> None:
        """Drop all queued work; a job in flight finishes, and its tiles are only cached."""
        with self._cv:
            self._queue.clear()
            self._pending = {}
            self._cv.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or rendering and every delivery has returned.

        Returns False on timeout. For tests, benchmarks and scripts; never call it from the
        UI thread or from `on_tile`.
        """
        with self._cv:
            return self._cv.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drop queued work, let a job in flight finish (its tiles are cached, not
        delivered) and join the worker. Returns whether the worker has ended.

        Safe from any thread. Called from `on_tile` on the worker thread it cannot join
        itself: it returns False and the worker ends as soon as the callback returns.
        """
        with self._cv:
            self._closing = True
            self._queue.clear()
            self._pending = {}
            threads = list(self._threads)
            self._cv.notify_all()
        if threading.current_thread() in threads:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def stats(self) -> SchedulerStats:
        with self._cv:
            return SchedulerStats(
                queued_tiles=sum(len(job.keys) for job in self._queue),
                in_flight_tiles=sum(len(j.keys) for b in self._in_flight.values() for j in b),
                rendered_tiles=self._rendered_tiles,
                rendered_pixels=self._rendered_pixels,
                render_seconds=self._render_seconds,
                cache_hits=self._hits,
                cache_misses=self._misses,
            )

    def __enter__(self) -> TileScheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Planning ---------------------------------------------------------------------------

    def _ring(self, visible: list[TileIndex]) -> list[TileIndex]:
        """The `prefetch_ring` tiles around the bounding box of `visible`."""
        n = self._prefetch_ring
        if not visible or n == 0:
            return []
        lod = visible[0].lod
        x0, x1 = min(t.tx for t in visible), max(t.tx for t in visible)
        y0, y1 = min(t.ty for t in visible), max(t.ty for t in visible)
        return [
            TileIndex(lod, tx, ty)
            for ty in range(y0 - n, y1 + n + 1)
            for tx in range(x0 - n, x1 + n + 1)
            if not (x0 <= tx <= x1 and y0 <= ty <= y1)
        ]

    def _jobs(
        self,
        keys: list[TileKey],
        lod: int,
        edits: tuple[Edit, ...],
        centre: tuple[float, float],
        *,
        prefetch: bool,
    ) -> list[_Job]:
        """Jobs for the missing tiles `keys`, nearest to `centre` (lod pixels) first."""
        b = self._block_tiles
        blocks: dict[tuple[int, int], list[TileKey]] = {}
        for key in keys:
            block = (key.tile.tx // b, key.tile.ty // b) if b else (0, 0)
            blocks.setdefault(block, []).append(key)
        jobs = []
        for block in blocks.values():
            for part in _rectangles(block):
                pieces = [part] if b else self._within_budget(part, lod)
                for piece in pieces:
                    rect = _bounds(piece)
                    jobs.append(_Job(lod, rect, tuple(piece), edits, prefetch))

        def distance(job: _Job) -> float:
            r = job.rect
            return (r.x + r.w / 2 - centre[0]) ** 2 + (r.y + r.h / 2 - centre[1]) ** 2

        return sorted(jobs, key=distance)

    def _within_budget(self, part: list[TileKey], lod: int) -> list[list[TileKey]]:
        """A full rectangle of tiles cut across its longer side into as few nearly equal
        pieces as keep each window within the world's view budget."""
        columns = len({k.tile.tx for k in part})
        rows = len({k.tile.ty for k in part})

        def line(key: TileKey) -> int:
            return key.tile.tx if columns >= rows else key.tile.ty

        lines = sorted({line(k) for k in part})
        for n in range(1, len(lines) + 1):
            piece_of = {v: i * n // len(lines) for i, v in enumerate(lines)}
            pieces: list[list[TileKey]] = [[] for _ in range(n)]
            for key in part:
                pieces[piece_of[line(key)]].append(key)
            if n == len(lines) or all(self.world.window_fits(_bounds(p), lod) for p in pieces):
                return pieces
        raise AssertionError("a rectangle of tiles has at least one line")

    # Worker -----------------------------------------------------------------------------

    def _start_worker(self) -> None:
        """Start workers that are not running (one per device), at most one per queued job."""
        # Caller holds the lock.
        self._threads = [t for t in self._threads if t.is_alive()]
        idle = [slot for slot in range(len(self.worlds)) if slot not in self._workers]
        for slot in idle[: len(self._queue)]:  # idle ones end after _idle_exit_s
            name = "tile-scheduler" if len(self.worlds) == 1 else f"tile-scheduler-{slot}"
            worker = threading.Thread(target=self._run, args=(slot,), name=name)
            self._workers[slot] = worker
            self._threads.append(worker)
            worker.start()

    def _run(self, slot: int) -> None:
        world = self.worlds[slot]
        with on_device(world):
            self._serve(slot, world)

    def _serve(self, slot: int, world: World) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    if not self._cv.wait(self._idle_exit_s) and not self._queue:
                        del self._workers[slot]  # the next request starts a new one
                        return
                if self._closing:
                    return
                batch = self._take_batch()
                self._in_flight[slot] = batch
                self._in_flight_keys |= {key for job in batch for key in job.keys}
                self._busy.add(slot)
            try:
                for result in self._finish(slot, batch, *self._render(world, batch)):
                    with self._cv:
                        if self._closing:  # nothing is delivered once close() has begun
                            break
                    self._deliver(result)
            finally:
                with self._cv:
                    self._busy.discard(slot)
                    self._cv.notify_all()

    def _take_batch(self) -> list[_Job]:
        """The first queued job and up to batch_max - 1 queued jobs of the same shape."""
        # Caller holds the lock.
        first = self._queue.pop(0)
        batch = [first]
        limit = min(self._batch_max, self.world.max_batch(first.rect, first.lod))
        for job in list(self._queue):
            if len(batch) == limit:
                break
            if (
                job.lod == first.lod
                and (job.rect.w, job.rect.h) == (first.rect.w, first.rect.h)
                and job.prefetch == first.prefetch
                and job.edits is first.edits
            ):
                batch.append(job)
                self._queue.remove(job)
        return batch

    def _render(self, world: World, batch: list[_Job]) -> tuple[list[_Done], float, str | None]:
        """Render the batch on `world` and cache its tiles; on failure, no tiles and the error."""
        first = batch[0]
        start = time.perf_counter()
        try:
            rgb = world.render_lod_float([j.rect for j in batch], first.lod, first.edits)
            images = to_uint8(rgb, pinned=True)  # [B, h, w, 3], copied into the cache
            if images.shape != (len(batch), first.rect.h, first.rect.w, 3):
                raise ValueError(f"render returned {images.shape} for {len(batch)} x {first.rect}")
            seconds = time.perf_counter() - start
            done = []
            for image, job in zip(images, batch, strict=True):
                for key in job.keys:
                    x, y = key.tile.rect.x - job.rect.x, key.tile.rect.y - job.rect.y
                    tile = self.cache.put(key, image[y : y + TILE_PX, x : x + TILE_PX])
                    done.append(_Done(key, tile))
            return done, seconds, None
        except Exception as exc:  # errors travel as values; the worker keeps going
            log.exception("rendering %d window(s) at lod %d failed", len(batch), first.lod)
            return (
                [_Done(k, None) for j in batch for k in j.keys],
                0.0,
                f"{type(exc).__name__}: {exc}",
            )

    def _finish(
        self, slot: int, batch: list[_Job], done: list[_Done], seconds: float, error: str | None
    ) -> list[TileResult]:
        """Book the batch as rendered; return the results the newest request still wants."""
        with self._cv:
            del self._in_flight[slot]
            self._in_flight_keys = {
                k for b in self._in_flight.values() for job in b for k in job.keys
            }
            if error is None:
                self._rendered_tiles += len(done)
                self._rendered_pixels += sum(j.rect.area for j in batch)
                self._render_seconds += seconds
            deliveries = []
            for key, tile in done:
                if self._pending.get(key.tile) == key and self._epoch is not None:
                    del self._pending[key.tile]
                    deliveries.append(TileResult(key, self._epoch, tile, error))
            return deliveries

    def _deliver(self, result: TileResult) -> None:
        try:
            self._on_tile(result)
        except Exception:  # a faulty callback must not stop the worker
            log.exception("on_tile failed for %s", result.key)


def _bounds(keys: list[TileKey]) -> Rect:
    """The union of the tiles' rects (lod pixels)."""
    rect = keys[0].tile.rect
    for key in keys[1:]:
        rect = rect.union(key.tile.rect)
    return rect


def _rectangles(keys: list[TileKey]) -> list[list[TileKey]]:
    """Split tiles into few full rectangles: the whole bounding box when every tile of it is
    there, else runs along rows (or columns, whichever give fewer rectangles), runs of the
    same extent in consecutive rows (columns) merged: a ring of tiles is four rectangles."""
    xs = [k.tile.tx for k in keys]
    ys = [k.tile.ty for k in keys]
    if len(keys) == (max(xs) - min(xs) + 1) * (max(ys) - min(ys) + 1):
        return [keys]
    rows = _merged_runs(keys, lambda t: (t.ty, t.tx))
    columns = _merged_runs(keys, lambda t: (t.tx, t.ty))
    return rows if len(rows) <= len(columns) else columns


def _merged_runs(
    keys: list[TileKey], order: Callable[[TileIndex], tuple[int, int]]
) -> list[list[TileKey]]:
    """Maximal runs of consecutive tiles along the minor axis of `order` (major, minor),
    each merged with the run of the same extent on the previous major line, if any."""
    runs: list[list[TileKey]] = []
    previous: tuple[int, int] | None = None
    for key in sorted(keys, key=lambda k: order(k.tile)):
        major, minor = order(key.tile)
        if previous is not None and previous == (major, minor - 1):
            runs[-1].append(key)
        else:
            runs.append([key])
        previous = (major, minor)
    rectangles: list[list[TileKey]] = []
    last: dict[tuple[int, int], tuple[int, list[TileKey]]] = {}  # extent -> (major, rectangle)
    for run in runs:
        major, first = order(run[0].tile)
        extent = (first, order(run[-1].tile)[1])
        before = last.get(extent)
        if before is not None and before[0] == major - 1:
            before[1].extend(run)
            last[extent] = (major, before[1])
        else:
            rectangles.append(list(run))
            last[extent] = (major, rectangles[-1])
    return rectangles
