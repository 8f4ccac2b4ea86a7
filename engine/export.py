"""Giant exports: any world rectangle, any size, to disk in constant memory; resumable.

    job = ExportJob(rect=(x, y, w, h), out=Path("valley.tif"), scale=0.5)
    plan = plan_export(world, job, mp_per_s=measure_speed(world, job.lod))  # size, bytes, time
    path = run_export(world, job, on_progress=show, should_stop=cancelled)   # -> valley.tif

**Scale.** A scale of 2**-k renders level of detail k (engine.world): the output is the
lod-k pixels that cover `job.rect` (the rectangle is snapped outward to the 2**k grid;
`plan.rect` is the world rectangle actually exported). Other scales are refused with a
message: the lods are exact and reproducible, a resampled export would be neither; resize
a power-of-two export instead.

**Render tiles.** The job is a list of independent render tiles (`plan.tile_rect(i)`, lod
pixels): a row-major grid anchored at the export's corner, of about the area `World.render`
uses for one generator call (`World.chunk_px`). On a GPU the grid is split evenly and
every tile is rendered as a window of one shape (`plan.render_rect(i)`; the last column
and row are cropped from windows that reach past the export). An export no larger than
one render tile equals `world.render(rect, scale)` byte for byte on the same device and
precision; larger ones may differ from it by one level in rare pixels, as any two tilings
may (DESIGN.md §2). A render thread renders the tiles in the order the writer consumes them
into a small bounded queue (torch, zlib and libjpeg release the GIL, so rendering and
encoding overlap):
- tiled TIFF, where the render tiles are multiples of the TIFF tile (the default grid makes
  them so): each render tile's TIFF tiles are encoded on a thread pool as soon as it
  arrives (`tiff_payloads`), and only compressed tiles wait for the rest of their row;
- otherwise the calling thread assembles full-width bands and hands strips of `job.tile`
  rows to the format writer (engine.export_formats), which encodes them on the pool.
Memory: a row of render tiles (raw bands, or compressed TIFF tiles) and a few tiles and
strips in flight, whatever the export's height. Very wide exports get shorter and wider
render tiles, so that a row stays under BAND_BYTES raw.

**Files.** Output goes to `<out>.part` (a folder for Deep Zoom), renamed to `out` only when
complete (os.replace), so whatever is at `out` is whole. Beside it:
- `<out>.part.json`, the sidecar: the job's identity (world seed, a digest of the model's
  weights, a digest of the edits that touch the rectangle, precision, rect, scale, format,
  tile size, compression, quality, deflate level), the render tile grid, the model
  reference the caller gave (checkpoint path + sha256, or preset) and progress;
- `<out>.part.tiles`, the spill: an append-only file of records (strip index, length,
  crc32, payload), the payload being the strip exactly as encoded for the writer (its row
  of TIFF tiles; its piece of the PNG deflate stream, which for the libvips formats is the
  stream libvips reads); flushed per record, fsync'd by a background thread every
  engine.files.SYNC_SECONDS and when the export stops. It costs no extra compression, and
  disk about the size of the output until the export completes; then spill and sidecar are
  deleted. The output itself is fsync'd the same way while it grows.

**Resume** is the simple robust way. A resumed export checks that the sidecar names the same
job (and refuses, listing the differences, otherwise), verifies the spill's records (a torn
or corrupt record and everything after it are dropped), then writes the output afresh from
the beginning: strips found in the spill are copied from it, and only render tiles that
cover some other strip are rendered. Rendering is deterministic (DESIGN.md §2) and the tile
grid is the sidecar's, so the file is byte-identical to an uninterrupted export. Render
tiles are independent, so they may come from several devices: `renderer` takes an
engine.tile_workers.TileRenderer (TileWorkers: one worker per device on this machine;
engine.ray_tiles.RayTiles: tasks on a Ray cluster), which hands tiles back in the writer's
order with a bounded number in flight; the file is the same as a one-device export's on
devices of the same kind and precision.

Threads: `on_progress` and `should_stop` are called on the calling thread, or for the
libvips formats on a libvips worker thread; both must be quick.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import math
import os
import queue
import shutil
import struct
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import export_formats
from engine.edits import Edit
from engine.export_formats import (
    COMPRESSIONS,
    FORMATS,
    MAX_SIDE,
    ExportError,
    ImageSpec,
)
from engine.files import BackgroundSync, write_text_atomically
from engine.model import Generator
from engine.tile_workers import SingleDevice, TileRenderer
from engine.tile_workers import render_tile as render_window
from engine.tiles import MAX_LOD, Rect, lod_rect
from engine.world import World

log = logging.getLogger(__name__)

__all__ = [
    "ExportCancelled",
    "ExportError",
    "ExportJob",
    "ExportPlan",
    "ExportProgress",
    "UnfinishedExport",
    "export_window",
    "measure_speed",
    "plan_export",
    "run_export",
    "unfinished_export",
    "write_tiles",
]

BAND_BYTES = 64 << 20  # largest row of render tiles held at once, raw (encoded for TIFF)
MAX_STRIP_BYTES = 2 << 30  # exports so wide that one strip exceeds this are refused
QUEUE_TILES = 2  # rendered tiles waiting for the writer
# Encoder jobs queued or running at once (TIFF tiles straight from render tiles): enough
# to keep 16 encoder threads busy, whatever the render tiles' width. Bounded by render
# tiles instead (two besides the newest), 2048-px render tiles kept only 6 threads busy:
# an H200 wrote a `paper` gigapixel in 9.0 s, against 4.0 s with this bound.
ENCODING_JOBS = 24
ENCODE_JOB_PX = 2048  # about the width of a strip's rows that one encoder job compresses
SIDECAR_FORMAT = "infinity-canvas-export"
SIDECAR_VERSION = 1
# Raised whenever the engine's pixels change by float rounding on some device (2: on CUDA,
# G_S's convs as a GEMM and the bias and noise added in one pass; 3: on CUDA, eager exports
# fold the upsampling blur, as views do). A resume of an export begun by an older revision
# warns, as a resume on another kind of device does.
RENDER_REVISION = 3
MIN_TILE, MAX_TILE = 64, 4096


class ExportCancelled(Exception):  # noqa: N818 - a cancellation is not an error
    """`should_stop` returned True: `<out>.part`, its sidecar and spill remain for resume."""


@dataclass(frozen=True)
class ExportJob:
    """Everything an export needs to know besides the world.

    `rect`: world pixels (full resolution), any position. `scale`: 1, 1/2, 1/4, ... 1/256.
    `format`: tiff (tiled BigTIFF), pyramid (pyramidal BigTIFF), dzi (Deep Zoom: NAME.dzi
    and NAME_files/) or png. `tile`: side of the file's tiles (TIFF, DZI) and the rows per
    strip, a multiple of 16. `compression`: per format, see COMPRESSIONS (None: the
    format's default: deflate, or jpeg for dzi). `quality`: JPEG quality 1..100.
    `deflate_level`: zlib level 1..9 of deflate and PNG (default 1, fast; 6: smallest files).
    """

    rect: Rect
    out: Path
    scale: float = 1.0
    format: str = "tiff"
    tile: int = 256
    compression: str | None = None
    quality: int = 90
    deflate_level: int = export_formats.DEFAULT_DEFLATE_LEVEL

    def __post_init__(self) -> None:
        object.__setattr__(self, "rect", Rect.of(self.rect))
        object.__setattr__(self, "out", Path(self.out))
        if self.rect.w <= 0 or self.rect.h <= 0:
            raise ExportError(f"the export rectangle {self.rect.as_tuple()} is empty")
        if self.format not in FORMATS:
            raise ExportError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        choices = COMPRESSIONS[self.format]
        if self.compression is None:
            object.__setattr__(self, "compression", choices[0])
        elif self.compression not in choices:
            raise ExportError(
                f"{self.format} exports cannot use {self.compression!r} compression; "
                f"choose {' or '.join(choices)}"
            )
        if not (MIN_TILE <= self.tile <= MAX_TILE and self.tile % 16 == 0):
            raise ExportError(
                f"tile size must be a multiple of 16 from {MIN_TILE} to {MAX_TILE}, got {self.tile}"
            )
        if not 1 <= self.quality <= 100:
            raise ExportError(f"JPEG quality must be from 1 to 100, got {self.quality}")
        if not 1 <= self.deflate_level <= 9:
            raise ExportError(f"deflate level must be from 1 to 9, got {self.deflate_level}")
        if self.format == "dzi" and self.out.suffix != ".dzi":
            raise ExportError(f"a Deep Zoom export is named NAME.dzi, got {self.out.name}")
        lod_of_scale(self.scale)

    @property
    def lod(self) -> int:
        return lod_of_scale(self.scale)


def lod_of_scale(scale: float) -> int:
    """k for a scale of exactly 2**-k; ExportError for any other scale."""
    if isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0:
        lod = round(-math.log2(scale))
        if 0 <= lod <= MAX_LOD and math.isclose(scale, 2.0**-lod, rel_tol=1e-9):
            return lod
    raise ExportError(
        f"export scale must be 1, 1/2, 1/4, ... or 1/{2**MAX_LOD}, got {scale}: those are "
        "the exact levels of detail; export at the next larger one and resize for others"
    )


@dataclass(frozen=True)
class ExportPlan:
    """The output size, render tiles and estimates of a job (pure arithmetic, no rendering)."""

    job: ExportJob
    lod: int
    source: Rect  # lod pixels exported: output pixel (0, 0) is lod pixel (source.x, source.y)
    tile_w: int  # render tile size, lod pixels (edge tiles are clipped)
    tile_h: int
    estimated_bytes: int  # of the output, rough (compression ratios of natural images)
    spill_bytes: int  # of the resume data kept beside it while the export runs, rough
    estimated_seconds: float | None  # to render it all at the given MP/s; None without one
    one_shape: bool = False  # render edge tiles as whole windows too (`render_rect`)

    @property
    def width(self) -> int:
        return self.source.w

    @property
    def height(self) -> int:
        return self.source.h

    @property
    def pixels(self) -> int:
        return self.source.area

    @property
    def rect(self) -> Rect:
        """The world rectangle (full-resolution pixels) exactly covered by the output."""
        f = 2**self.lod
        s = self.source
        return Rect(s.x * f, s.y * f, s.w * f, s.h * f)

    @property
    def columns(self) -> int:
        return -(-self.width // self.tile_w)

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile_h)

    @property
    def total_tiles(self) -> int:
        return self.columns * self.rows

    @property
    def strips(self) -> int:
        """Strips of `job.tile` rows the writer encodes (and the spill keeps) one by one."""
        return -(-self.height // self.job.tile)

    def strips_of_tile(self, index: int) -> range:
        """The strips that render tile `index` has rows in."""
        top = index // self.columns * self.tile_h
        bottom = min(top + self.tile_h, self.height)
        return range(top // self.job.tile, (bottom - 1) // self.job.tile + 1)

    def tile_rect(self, index: int) -> Rect:
        """Render tile `index` (row-major) in lod pixels."""
        if not 0 <= index < self.total_tiles:
            raise IndexError(f"render tile {index} of {self.total_tiles}")
        row, col = divmod(index, self.columns)
        x, y = col * self.tile_w, row * self.tile_h
        w, h = min(self.tile_w, self.width - x), min(self.tile_h, self.height - y)
        return Rect(self.source.x + x, self.source.y + y, w, h)

    def tile_rects(self) -> Iterator[Rect]:
        return (self.tile_rect(i) for i in range(self.total_tiles))

    @property
    def window_size(self) -> tuple[int, int]:
        """(w, h) of the first render tile's window, and with `one_shape` of every one: the
        grid's tile size, or the export's own size along an axis that one tile covers."""
        return (
            self.tile_w if self.columns > 1 else self.width,
            self.tile_h if self.rows > 1 else self.height,
        )

    def render_rect(self, index: int) -> Rect:
        """The window rendered for render tile `index`: its rect, or with `one_shape` its
        rect grown to `window_size`, so that every window of the export has one shape (the
        windows of the last column and row reach past the export and are cropped). A GPU
        then plans its kernels and captures its CUDA graph once: on an H200 each further
        shape cost about 120 MB of host memory and a second of set-up."""
        rect = self.tile_rect(index)
        return Rect(rect.x, rect.y, *self.window_size) if self.one_shape else rect

    def cropped(self, index: int, window: np.ndarray) -> np.ndarray:
        """Render tile `index`, uint8 [h, w, 3], out of its window's pixels (a view)."""
        rect = self.tile_rect(index)
        return window[: rect.h, : rect.w]


def plan_export(
    world: World,
    job: ExportJob,
    *,
    mp_per_s: float | None = None,
    render_tile: int | tuple[int, int] | None = None,
    one_shape: bool | None = None,
) -> ExportPlan:
    """Check that `job` can be written and work out its render tiles and estimates.

    `mp_per_s`: render speed in megapixels (lod pixels) per second, for example from
    `measure_speed`; without it `estimated_seconds` is None. `render_tile`: side (or
    (width, height)) of the render tiles in lod pixels; default `world.chunk_px(lod)`.
    `one_shape`: render every tile as a window of one shape (`ExportPlan.render_rect`);
    default on CUDA and for a compiled world, where each shape is costly to set up or
    compiles again (elsewhere the clipped edge windows are cheaper). Cheap: a dialog may
    call it on every change of its fields.
    """
    if one_shape is None:
        one_shape = world.device.type == "cuda" or world.is_compiled
    lod = job.lod
    source = lod_rect(job.rect, lod)
    w, h = source.w, source.h
    limit = MAX_SIDE[job.format]
    if w > limit or h > limit:
        raise ExportError(
            f"a {job.format} image holds at most {limit:,} pixels per side; this export is "
            f"{w:,} x {h:,} (choose another format or a smaller scale)"
        )
    if max(job.tile, 128) * w * 3 > MAX_STRIP_BYTES:
        widest = MAX_STRIP_BYTES // (3 * max(job.tile, 128))
        raise ExportError(
            f"this export is {w:,} pixels wide; exports stream in full-width strips and can be "
            f"at most {widest:,} pixels wide (split it, or choose a smaller scale)"
        )
    if render_tile is None:
        tile_h = world.chunk_px(lod)
        if tile_h * w * 3 > BAND_BYTES:  # very wide: shorter render tiles keep a row small
            tile_h = max(128, BAND_BYTES // (3 * w) // 128 * 128)
        aligned = job.format == "tiff" and job.tile <= tile_h  # TIFF tiles in render tiles
        if aligned:
            tile_h = tile_h // job.tile * job.tile
        tile_w = world.chunk_width(lod, tile_h)  # as wide as the area of a square chunk
        if aligned:
            tile_w = tile_w // job.tile * job.tile
        if one_shape:  # edge tiles cost whole windows: spread the grid evenly
            step = job.tile if aligned else 128
            tile_w = _even_side(w, tile_w, step, lambda n: world.window(Rect(0, 0, n, 1), lod).w)
            tile_h = _even_side(h, tile_h, step, lambda n: world.window(Rect(0, 0, 1, n), lod).h)
    elif isinstance(render_tile, int):
        tile_w = tile_h = render_tile
    else:
        tile_w, tile_h = render_tile
    if tile_w < 1 or tile_h < 1:
        raise ExportError(f"render tiles must be at least 1 px, got {tile_w} x {tile_h}")
    raw = w * h * 3
    ratio = export_formats.compressed_ratio(job.format, job.compression, job.quality)
    seconds = None if not mp_per_s else w * h / (mp_per_s * 1e6)
    return ExportPlan(
        job=job,
        lod=lod,
        source=source,
        tile_w=tile_w,
        tile_h=tile_h,
        estimated_bytes=int(raw * ratio) + 4096,
        spill_bytes=int(raw * export_formats.spill_ratio(job.format, job.compression, job.quality)),
        estimated_seconds=seconds,
        one_shape=one_shape,
    )


def _even_side(length: int, most: int, step: int, cells: Callable[[int], int]) -> int:
    """The render tile side along an axis of `length` px: `most` (a multiple of `step`)
    where one tile covers the axis, else the multiple of `step` up to `most` whose tiles,
    all rendered whole (`ExportPlan.render_rect`), cost the fewest lattice cells, with
    `cells(side)` the cells of one window of that side, margins included. 32,768 px in
    tiles of at most 3,840: 16 of 2,048 rather than 9 of 3,840, the last one mostly
    thrown away."""
    fewest = -(-length // most)
    if fewest == 1:
        return most
    best, best_cost = most, fewest * cells(most)
    for count in range(fewest + 1, 2 * fewest + 1):
        side = -(-length // count)
        side = -(-side // step) * step
        cost = -(-length // side) * cells(side)
        if cost < best_cost:
            best, best_cost = side, cost
    return best


GIGAPIXEL_SIDE = 32_768  # lod px: the export whose render windows `measure_speed` renders


def export_window(world: World, lod: int = 0) -> tuple[int, int]:
    """(w, h), lod px, of the render windows of a gigapixel TIFF export at `lod` on `world`."""
    side = GIGAPIXEL_SIDE << lod
    job = ExportJob(Rect(0, 0, side, side), "speed.tif", scale=2.0**-lod)
    return plan_export(world, job).window_size


def measure_speed(
    world: World,
    lod: int = 0,
    *,
    seconds: float = 2.0,
    window: tuple[int, int] | None = None,
) -> float:
    """Render speed for exports on `world`'s device, in megapixels (lod px) per second.

    Renders windows of `window` (w, h) lod px (default `export_window`) far from the origin
    as an export renders them (SingleDevice, each handed back as uint8 host pixels), for
    about `seconds` (at least one window), timed to the last window handed back. Warm-up
    first: one window, two on a GPU, whose second call of a shape captures its CUDA graph.
    """
    w, h = window or export_window(world, lod)
    x0 = 1 << 20
    renderer = SingleDevice(world)
    warm_ups = 2 if world.device.type == "cuda" else 1
    warm_up = [Rect(x0 - i * w, -h // 2, w, h) for i in range(1, warm_ups + 1)]
    for _ in renderer.render_in_order(warm_up, lod, world.edits):
        pass
    windows = (Rect(x0 + i * w, -h // 2, w, h) for i in itertools.count())
    count, start = 0, time.perf_counter()
    for _ in renderer.render_in_order(windows, lod, world.edits):
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return count * w * h / elapsed / 1e6


# Progress -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportProgress:
    """Where a running export stands; `done_tiles` counts render tiles handed to the writer."""

    done_tiles: int
    total_tiles: int
    pixels: int  # output pixels done
    total_pixels: int
    seconds: float  # since this run started
    eta_seconds: float | None  # None until a tile has been rendered in this run
    resumed_tiles: int = 0  # render tiles skipped: all their strips were in the spill

    @property
    def fraction(self) -> float:
        return self.pixels / self.total_pixels if self.total_pixels else 1.0


@dataclass(frozen=True, slots=True)
class UnfinishedExport:
    """An export that was cancelled or interrupted and can be resumed."""

    out: Path
    done_strips: int  # encoded strips in the spill
    total_strips: int
    identity: dict[str, Any]  # the job as the sidecar records it
    updated: str  # ISO time of the sidecar's last update

    @property
    def fraction(self) -> float:
        return self.done_strips / self.total_strips if self.total_strips else 1.0


@dataclass(frozen=True, slots=True)
class ExportPaths:
    out: Path
    part: Path  # the output while it is written (a folder for Deep Zoom)
    sidecar: Path
    spill: Path

    @classmethod
    def of(cls, out: Path) -> ExportPaths:
        part = out.with_name(out.name + ".part")
        return cls(out, part, Path(f"{part}.json"), Path(f"{part}.tiles"))


def unfinished_export(out: str | Path) -> UnfinishedExport | None:
    """The unfinished export that `run_export(..., resume=True)` would continue, if any."""
    paths = ExportPaths.of(Path(out))
    sidecar = _read_sidecar(paths.sidecar)
    if sidecar is None:
        return None
    done = 0
    if paths.spill.exists():
        with open(paths.spill, "rb") as f:
            index, _ = _scan_spill(f, bytes.fromhex(sidecar["key"]))
        done = len(index)
    return UnfinishedExport(
        paths.out,
        done,
        int(sidecar["total_strips"]),
        dict(sidecar["identity"]),
        str(sidecar.get("updated", "")),
    )


# Running ------------------------------------------------------------------------------


def _ignore(progress: ExportProgress) -> None:
    pass


def _never() -> bool:
    return False


def run_export(
    world: World,
    job: ExportJob,
    *,
    resume: bool = False,
    on_progress: Callable[[ExportProgress], None] = _ignore,
    should_stop: Callable[[], bool] = _never,
    model_ref: Mapping[str, Any] | None = None,
    render_tile: int | tuple[int, int] | None = None,
    one_shape: bool | None = None,
    compile: bool = False,
    workers: int | None = None,
    renderer: TileRenderer | None = None,
) -> Path:
    """Render `job` to `job.out` and return that path.

    `resume`: continue the unfinished export at `job.out` (see the module docstring); an
    unfinished export of another job is refused with ExportError, and without one a new
    export starts. Without `resume` an unfinished export at `job.out` is discarded.
    `should_stop`: polled about ten times a second; once it returns True the export stops
    within about one render tile and raises ExportCancelled, leaving nothing at `job.out`.
    `model_ref`: how the caller names the model (e.g. {"checkpoint": path, "sha256": ...} or
    {"preset": "lite"}), recorded in the sidecar; the resume check compares the weights.
    `render_tile`, `one_shape`: see `plan_export` (tests, benchmarks); a resume uses the
    sidecar's tile size.
    `compile`: render through `world.compiled()` (without `renderer`; with `one_shape`, so
    that one shape compiles): compiling takes a throwaway window first (see
    `World.compiled`), then the export runs faster (a `paper` gigapixel on an H200 in
    19.9 s instead of 26.6 s; a 4096 x 4096 `lite` export on a 2-core CPU in 11.5-12.3 s
    instead of 13.1-14.5 s). A resume renders as the export it continues did.
    `workers`: compression threads (default: all cores but two, 1 to 16).
    `renderer`: what renders the tiles (engine.tile_workers; default: `world`'s device,
    one tile after the other). It must render `world`'s model and seed; the caller keeps
    ownership (it is not closed here).

    Raises ExportError (a ValueError) for an unwritable folder, a full disk, an impossible
    size or a mismatched resume; ExportCancelled when stopped.
    """
    paths = ExportPaths.of(job.out)
    _check_folder(job)
    export_formats.require(job.format, job.compression)
    edits = world.edits  # one snapshot: edits made while the export runs do not reach it
    sidecar = _read_sidecar(paths.sidecar) if resume else None
    if sidecar is not None:
        render_tile = (int(sidecar["render_tile"][0]), int(sidecar["render_tile"][1]))
        compile = sidecar.get("compiled") is True
    # A compiled export renders one shape, as plan_export plans for a compiled world (this
    # one compiles only below).
    plan = plan_export(world, job, render_tile=render_tile, one_shape=one_shape or compile)
    identity = _identity(world, plan, edits)
    key = _job_key(identity, plan)
    if sidecar is not None:
        _check_resumable(sidecar, identity, key, paths, world)
    else:
        if resume:
            log.warning("nothing to resume at %s: starting the export from the beginning", job.out)
        _discard(paths)
        sidecar = _new_sidecar(identity, key, plan, world, model_ref)
    _warn_if_short_of_space(plan, paths)
    if renderer is None:
        renderer = SingleDevice(_compiled(world, plan) if compile else world)
        sidecar["compiled"] = renderer.world.is_compiled
    sidecar["updated"] = _now()
    _write_sidecar(paths.sidecar, sidecar)

    spec = _spec(plan, _description(world, plan, identity))
    spill = _Spill(paths.spill, key, resume=resume)
    finished = False
    try:
        pipeline = _Pipeline(renderer, plan, edits, spill, on_progress, should_stop)
        log.info(
            "exporting %d x %d px (%d render tiles, %d of %d strips in the spill) on %s to %s",
            plan.width,
            plan.height,
            plan.total_tiles,
            len(spill),
            plan.strips,
            renderer.label,
            job.out,
        )
        with ThreadPoolExecutor(_workers(workers), thread_name_prefix="export-encode") as pool:
            try:
                export_formats.remove(paths.part)  # a resume writes the output afresh
                pipeline.start()
                _write(plan, pipeline.tiles(), paths.part, spec, pool, spill)
                pipeline.check_complete()
            finally:
                pipeline.stop()
        spill.close(sync=False)  # deleted once the output has its name: no need for the disk
        export_formats.finish(job.format, paths.part, job.out)
        finished = True
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _disk_full(plan, paths) from exc
        raise
    finally:
        try:
            spill.close()
        except OSError:
            log.warning("could not close %s", paths.spill, exc_info=True)
        if finished:
            paths.spill.unlink(missing_ok=True)
            paths.sidecar.unlink(missing_ok=True)
        else:
            sidecar["done_strips"] = len(spill)
            sidecar["updated"] = _now()
            try:
                _write_sidecar(paths.sidecar, sidecar)
            except OSError:
                log.warning("could not update %s", paths.sidecar, exc_info=True)
    log.info("wrote %s", job.out)
    return job.out


class _Pipeline:
    """The render thread and the consumer side that turns its tiles into strips."""

    def __init__(
        self,
        renderer: TileRenderer,
        plan: ExportPlan,
        edits: tuple[Edit, ...],
        spill: _Spill,
        on_progress: Callable[[ExportProgress], None],
        should_stop: Callable[[], bool],
    ) -> None:
        self.renderer, self.plan, self.edits, self.spill = renderer, plan, edits, spill
        self.on_progress, self.should_stop = on_progress, should_stop
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_TILES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="export-render")
        self._start = time.perf_counter()
        self._first_render: float | None = None  # when the first tile to render began
        self._needed = [
            any(s not in spill for s in plan.strips_of_tile(i)) for i in range(plan.total_tiles)
        ]
        self._to_render = sum(
            plan.tile_rect(i).area for i, needed in enumerate(self._needed) if needed
        )
        self._rendered = 0  # lod pixels rendered in this run
        self._done_tiles = 0
        self._done_pixels = 0
        self._resumed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the render thread (it finishes the tile it renders) and join it."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # unblocks a put
            except queue.Empty:
                pass
        if self._thread.ident is not None:
            self._thread.join()

    # Render thread ----------------------------------------------------------------------

    def _produce(self) -> None:
        needed = [self.plan.render_rect(i) for i, n in enumerate(self._needed) if n]
        rendered = self.renderer.render_in_order(
            needed, self.plan.lod, self.edits, self._stop.is_set
        )
        try:
            for index, is_needed in enumerate(self._needed):
                if self._stop.is_set():
                    return
                pixels = None
                if is_needed:
                    if self._first_render is None:
                        self._first_render = time.perf_counter()
                    window = next(rendered, None)  # uint8 [H, W, 3]: plan.render_rect(index)
                    if window is None:  # the renderer saw the stop
                        return
                    pixels = self.plan.cropped(index, window)  # uint8 [h, w, 3]
                self._put((index, pixels))
        except BaseException as exc:  # noqa: B036 - every failure reaches the consumer
            self._put(exc)
        finally:
            close = getattr(rendered, "close", None)
            if close is not None:
                close()  # stops and joins the renderer's workers

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # Consumer ---------------------------------------------------------------------------

    def _get(self) -> Any:
        while True:
            if self.should_stop():
                raise ExportCancelled("export cancelled")
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                continue

    def tiles(self) -> Iterator[tuple[int, np.ndarray | None]]:
        """(index, uint8 [h, w, 3] or None when not needed) of every render tile, in order."""
        for expected in range(self.plan.total_tiles):
            item = self._get()
            if isinstance(item, BaseException):
                raise item
            index, pixels = item
            assert index == expected, (index, expected)
            rect = self.plan.tile_rect(index)
            self._done_tiles += 1
            self._done_pixels += rect.area
            if pixels is None:
                self._resumed += 1
            else:
                self._rendered += rect.area
            self._report()
            yield index, pixels

    def _report(self) -> None:
        now = time.perf_counter()
        eta = None
        if self._rendered and self._first_render is not None:
            rate = self._rendered / max(now - self._first_render, 1e-9)
            eta = (self._to_render - self._rendered) / rate
        self.on_progress(
            ExportProgress(
                done_tiles=self._done_tiles,
                total_tiles=self.plan.total_tiles,
                pixels=self._done_pixels,
                total_pixels=self.plan.pixels,
                seconds=now - self._start,
                eta_seconds=eta,
                resumed_tiles=self._resumed,
            )
        )

    def check_complete(self) -> None:
        if self._done_tiles != self.plan.total_tiles:
            raise RuntimeError(
                f"the writer stopped after {self._done_tiles} of {self.plan.total_tiles} tiles"
            )


def assemble_strips(
    plan: ExportPlan,
    tiles: Iterable[tuple[int, np.ndarray | None]],
    done: Callable[[int], bool] = lambda strip: False,
) -> Iterator[np.ndarray | None]:
    """Full-width strips uint8 [S, W, 3] of `job.tile` rows (the last may be shorter) from
    the render tiles (index, uint8 [h, w, 3]) in row-major order; None for the strips that
    `done` says are already encoded (tiles given as None cover only such strips).

    Holds one band of full-width rows (a render tile row plus fewer than S rows carried
    over); the strips handed on are views of it.
    """
    rows_per_strip = plan.job.tile
    carry = np.empty((0, plan.width, 3), np.uint8)  # rows not yet handed on (< a strip)
    band = carry
    strip = 0
    for index, pixels in tiles:
        row, col = divmod(index, plan.columns)
        rect = plan.tile_rect(index)
        if col == 0:
            band = np.empty((len(carry) + rect.h, plan.width, 3), np.uint8)
            band[: len(carry)] = carry
        if pixels is not None:
            x = col * plan.tile_w
            band[len(carry) :, x : x + rect.w] = pixels
        if col == plan.columns - 1:  # the band is complete
            last = row == plan.rows - 1
            n = len(band) if last else len(band) // rows_per_strip * rows_per_strip
            for y in range(0, n, rows_per_strip):
                yield None if done(strip) else band[y : y + rows_per_strip]
                strip += 1
            carry = band[n:]


def write_tiles(
    plan: ExportPlan,
    tiles: Iterable[np.ndarray],
    path: str | Path,
    *,
    workers: int | None = None,
    description: str = "",
) -> Path:
    """Write already rendered render tiles (uint8 [h, w, 3], plan order) as the plan's
    format at `path`, directly (no .part, no spill). For benchmarks, and for tiles rendered
    elsewhere."""
    job, path = plan.job, Path(path)
    export_formats.require(job.format, str(job.compression))
    spec = _spec(plan, description)
    with ThreadPoolExecutor(_workers(workers), thread_name_prefix="export-encode") as pool:
        _write(plan, enumerate(tiles), path, spec, pool, export_formats.NullStore())
    return path


def _write(
    plan: ExportPlan,
    tiles: Iterable[tuple[int, np.ndarray | None]],
    path: Path,
    spec: ImageSpec,
    pool: ThreadPoolExecutor,
    store: export_formats.StripStore,
) -> None:
    """Write the render tiles (index, uint8 [h, w, 3], or None where `store` has all its
    strips), in plan order, as the plan's format at `path`."""
    if tiles_are_tiff_aligned(plan):
        payloads = tiff_payloads(plan, tiles, spec, pool, store)
        export_formats.write_tiff_payloads(path, payloads, spec)
    else:
        strips = assemble_strips(plan, tiles, done=store.__contains__)
        export_formats.write_image(plan.job.format, path, strips, spec, pool, store)


def tiles_are_tiff_aligned(plan: ExportPlan) -> bool:
    """Whether every TIFF tile lies inside one render tile, so tiles encode as they arrive."""
    side = plan.job.tile
    return plan.job.format == "tiff" and plan.tile_w % side == 0 and plan.tile_h % side == 0


def tiff_payloads(
    plan: ExportPlan,
    tiles: Iterable[tuple[int, np.ndarray | None]],
    spec: ImageSpec,
    pool: ThreadPoolExecutor,
    store: export_formats.StripStore,
) -> Iterator[export_formats.Payload]:
    """The payload of every strip of a TIFF whose tiles lie inside render tiles, in order.

    Each render tile's rows of each strip are encoded on the pool as soon as the tile
    arrives, and the tile is let go once they are: no band of raw pixels is assembled, and
    what waits for the end of a render tile row is compressed. At most about ENCODING_JOBS
    encoder jobs are queued or running at once. Strips the store has are taken from it.
    """
    side = plan.job.tile
    job_px = max(1, ENCODE_JOB_PX // side) * side  # the width one pool job encodes
    encode = export_formats.tiff_tile_encoder(spec)
    rows: deque[_TiffRow] = deque()  # render tile rows whose strips are not handed on yet
    encoding: deque[list[Future]] = deque()  # the futures of each tile still encoding

    def ready(wait: bool) -> Iterator[export_formats.Payload]:
        """The strips of the complete rows at the front whose tiles are encoded (or all the
        complete rows' strips, waiting for their tiles, when `wait`)."""
        while rows and rows[0].complete and (wait or rows[0].encoded()):
            row = rows.popleft()
            for strip in row.strips:
                if strip in row.pieces:
                    tiles = [t for future in row.pieces.pop(strip) for t in future.result()]
                    payload = export_formats.tiff_payload(tiles)
                    store.put(strip, payload)
                else:
                    payload = store.get(strip)
                yield payload

    for index, pixels in tiles:
        row_index, col = divmod(index, plan.columns)
        if col == 0:
            rows.append(_TiffRow(plan.strips_of_tile(index)))
        row = rows[-1]
        if pixels is not None:
            top = row_index * plan.tile_h
            futures = []
            for strip in row.strips:
                if strip not in store:
                    rows_of_strip = pixels[strip * side - top : (strip + 1) * side - top]
                    for x in range(0, rows_of_strip.shape[1], job_px):  # [S, <= job_px, 3]
                        futures.append(pool.submit(encode, rows_of_strip[:, x : x + job_px]))
                        row.pieces.setdefault(strip, []).append(futures[-1])
            encoding.append(futures)
        row.complete = col == plan.columns - 1
        while sum(map(len, encoding)) > ENCODING_JOBS:  # the oldest tile's jobs finish
            for future in encoding.popleft():
                future.result()
        yield from ready(wait=False)
    yield from ready(wait=True)


@dataclass
class _TiffRow:
    """One render tile row of a `tiff_payloads` export: its strips' encoded pieces."""

    strips: range
    pieces: dict[int, list[Future]] = field(default_factory=dict)  # strip -> left to right
    complete: bool = False  # every tile of the row has been handed in

    def encoded(self) -> bool:
        return all(future.done() for futures in self.pieces.values() for future in futures)


def _spec(plan: ExportPlan, description: str) -> ImageSpec:
    job = plan.job
    return ImageSpec(
        plan.width,
        plan.height,
        tile=job.tile,
        compression=str(job.compression),
        quality=job.quality,
        deflate_level=job.deflate_level,
        description=description,
    )


def _workers(workers: int | None) -> int:
    """Compression threads: all CPU cores but two (one renders, one writes), 1 to 16. Idle
    while the render is the bottleneck; behind a GPU they are what keeps up with it (on an
    H200 with 16 cores, a gigapixel's writer takes 2.7 s with 14 of them, 4.1 s with 8)."""
    return workers or max(1, min(16, (os.cpu_count() or 2) - 2))


# The spill: encoded strips kept for resume ---------------------------------------------

_SPILL_MAGIC = b"ICSPILL2"
_SPILL_HEADER = struct.Struct("<8s32s")  # magic, job key (sha256)
_RECORD = struct.Struct("<4sQQI")  # b"STRP", strip index, payload bytes, crc32 of the payload


def _scan_spill(f: Any, key: bytes) -> tuple[dict[int, tuple[int, int]], int]:
    """Index {strip: (payload offset, payload bytes)} of the spill's whole, intact records,
    and the offset where they end (a torn or corrupt record ends them); ({}, 0) if the
    spill belongs to another job. Reads every payload to check its crc32."""
    f.seek(0)
    head = f.read(_SPILL_HEADER.size)
    if len(head) < _SPILL_HEADER.size or _SPILL_HEADER.unpack(head) != (_SPILL_MAGIC, key):
        return {}, 0
    index: dict[int, tuple[int, int]] = {}
    offset = _SPILL_HEADER.size
    while True:
        record = f.read(_RECORD.size)
        if len(record) < _RECORD.size:
            break
        tag, strip, length, crc = _RECORD.unpack(record)
        if tag != b"STRP":
            break
        payload = f.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        index[strip] = (offset + _RECORD.size, length)
        offset += _RECORD.size + length
    return index, offset


class _Spill:
    """Append-only file of encoded strips (see the module docstring): the writer `put`s each
    strip's payload as it writes it and `get`s the ones a resume does not encode again.
    Safe to call from several threads. A BackgroundSync fsyncs it while it changes, so no
    writer ever waits for the disk; what a power cut loses of the tail is found by the crc
    check of the next resume."""

    def __init__(self, path: Path, key: bytes, *, resume: bool) -> None:
        self.path = path
        self._index: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()
        end = 0
        if resume and path.exists():
            with open(path, "rb") as f:
                self._index, end = _scan_spill(f, key)
        self._file = open(path, "r+b" if end else "wb")  # noqa: SIM115 - closed in close()
        if end:
            self._file.truncate(end)  # drops a record torn by a crash, and what follows it
            self._file.seek(end)
        else:
            self._file.write(_SPILL_HEADER.pack(_SPILL_MAGIC, key))
        self._closed = False
        self._syncer = BackgroundSync(self._file.fileno(), path.name)

    def __contains__(self, strip: object) -> bool:
        return strip in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, index: int) -> export_formats.Payload:
        with self._lock:
            offset, length = self._index[index]
            end = self._file.tell()
            self._file.seek(offset)
            payload = self._file.read(length)
            self._file.seek(end)
        if len(payload) != length:
            raise OSError(errno.EIO, f"the resume data {self.path.name} was cut short")
        return [payload]

    def put(self, index: int, payload: export_formats.Payload) -> None:
        length, crc = 0, 0
        for piece in payload:
            length, crc = length + len(piece), zlib.crc32(piece, crc)
        with self._lock:
            offset = self._file.tell()
            self._file.write(_RECORD.pack(b"STRP", index, length, crc))
            for piece in payload:
                self._file.write(piece)
            self._file.flush()  # in the page cache: a crash of this process loses nothing
            self._index[index] = (offset + _RECORD.size, length)
        self._syncer.changed()

    def close(self, *, sync: bool = True) -> None:
        """Stop the sync thread, fsync (unless `sync` is False: a spill about to be
        deleted) and close (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._syncer.stop()
        try:
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        finally:
            self._file.close()


# Identity, sidecar, checks --------------------------------------------------------------


def weights_digest(generator: Generator) -> str:
    """sha256 of a generator's config and weights: the same model wherever its file lives."""
    h = hashlib.sha256(generator.config.to_json().encode())
    for name, tensor in sorted(generator.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()};".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


_IDENTITY_LABELS = {
    "seed": "world seed",
    "model": "model (weights)",
    "edits": "edits",
    "precision": "precision",
    "rect": "rectangle",
    "scale": "scale",
    "format": "format",
    "tile": "tile size",
    "compression": "compression",
    "quality": "JPEG quality",
    "deflate_level": "deflate level",
}


def _compiled(world: World, plan: ExportPlan) -> World:
    """`world.compiled()`, compiled for the plan's windows by a throwaway render far away;
    `world` itself where compiling fails (logged: the export then renders eagerly)."""
    compiled = world.compiled()
    if compiled is world:
        return world
    log.info("compiling the generator for %d x %d px windows", *plan.window_size)
    try:
        render_window(compiled, Rect(1 << 24, 0, *plan.window_size), plan.lod, ())
    except Exception:  # torch.compile reports a missing compiler or backend many ways
        log.warning("compiling the generator failed: the export renders without it", exc_info=True)
        return world
    return compiled


def _identity(world: World, plan: ExportPlan, edits: tuple[Edit, ...]) -> dict[str, Any]:
    """What the output's bytes are a function of; a resume must match all of it."""
    job = plan.job
    return {
        "seed": world.seed,
        "model": weights_digest(world.generator),
        "edits": world.digest(plan.source, plan.lod, edits) or "none",
        "precision": str(world.dtype).removeprefix("torch."),
        "rect": list(job.rect.as_tuple()),
        "scale": job.scale,
        "format": job.format,
        "tile": job.tile,
        "compression": job.compression,
        "quality": job.quality,
        "deflate_level": job.deflate_level,
    }


def _job_key(identity: Mapping[str, Any], plan: ExportPlan) -> bytes:
    text = json.dumps([identity, [plan.tile_w, plan.tile_h]], sort_keys=True)
    return hashlib.sha256(text.encode()).digest()


def _new_sidecar(
    identity: dict[str, Any],
    key: bytes,
    plan: ExportPlan,
    world: World,
    model_ref: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "identity": identity,
        "key": key.hex(),
        "render_tile": [plan.tile_w, plan.tile_h],
        "output": {"width": plan.width, "height": plan.height},
        "total_tiles": plan.total_tiles,
        "total_strips": plan.strips,
        "done_strips": 0,
        "model_ref": dict(model_ref) if model_ref else None,
        "device": world.device.type,
        "render_revision": RENDER_REVISION,
        "created": _now(),
        "updated": _now(),
    }


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's contents; None when there is none; ExportError when it is unusable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"cannot resume: {path} is unreadable ({exc}); export without resume to start over"
        ) from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ExportError(f"cannot resume: {path} is not an export sidecar")
    if data.get("version") != SIDECAR_VERSION:
        raise ExportError(
            f"cannot resume: {path} was written by another version of Infinity Canvas "
            f"(sidecar version {data.get('version')}); export without resume to start over"
        )
    tile = data.get("render_tile")
    if (
        not isinstance(data.get("identity"), dict)
        or not isinstance(data.get("key"), str)
        or len(data["key"]) != 64
        or not (isinstance(tile, list) and len(tile) == 2 and all(type(v) is int for v in tile))
        or type(data.get("total_strips")) is not int
    ):
        raise ExportError(f"cannot resume: {path} is damaged; export without resume to start over")
    return data


def _check_resumable(
    sidecar: Mapping[str, Any],
    identity: Mapping[str, Any],
    key: bytes,
    paths: ExportPaths,
    world: World,
) -> None:
    recorded = sidecar["identity"]
    differences = [
        f"{label} {_show(recorded.get(name))} -> {_show(identity[name])}"
        for name, label in _IDENTITY_LABELS.items()
        if recorded.get(name) != identity[name]
    ]
    if differences or sidecar.get("key") != key.hex():
        raise ExportError(
            f"cannot resume {paths.out.name}: the unfinished export is of another job "
            f"({'; '.join(differences) or 'different render tiles'}). Export without resume "
            f"to start over (this discards {paths.part.name} and its resume data)"
        )
    if sidecar.get("device") != world.device.type:
        log.warning(
            "resuming on %s an export begun on %s: tiles may differ by float rounding",
            world.device.type,
            sidecar.get("device"),
        )
    elif sidecar.get("render_revision", 1) != RENDER_REVISION:
        log.warning(
            "resuming an export begun by an older version of Infinity Canvas: "
            "tiles may differ by float rounding"
        )


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "…"  # a digest
    return json.dumps(value)


def _write_sidecar(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomically(path, json.dumps(data, indent=1))


def _discard(paths: ExportPaths) -> None:
    export_formats.remove(paths.part)
    paths.spill.unlink(missing_ok=True)
    paths.sidecar.unlink(missing_ok=True)


def _check_folder(job: ExportJob) -> None:
    folder = job.out.parent
    if not folder.exists():
        raise ExportError(f"cannot export to {job.out}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise ExportError(f"cannot export to {job.out}: {folder} is not a folder")
    if job.out.is_dir():
        raise ExportError(f"cannot export to {job.out}: it is a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ExportError(
            f"cannot export to {job.out}: the folder {folder} is not writable "
            f"({exc.strerror or exc})"
        ) from None


def _warn_if_short_of_space(plan: ExportPlan, paths: ExportPaths) -> None:
    free = shutil.disk_usage(paths.out.parent).free
    need = plan.estimated_bytes + plan.spill_bytes
    if free < need:
        log.warning(
            "%s has %s free; this export may need about %s",
            paths.out.parent,
            _size(free),
            _size(need),
        )


def _disk_full(plan: ExportPlan, paths: ExportPaths) -> ExportError:
    folder = paths.out.parent
    free = shutil.disk_usage(folder).free
    return ExportError(
        f"disk full while exporting {paths.out.name}: the export needed about "
        f"{_size(plan.estimated_bytes + plan.spill_bytes)} in {folder} "
        f"({_size(plan.estimated_bytes)} for the image and {_size(plan.spill_bytes)} of resume "
        f"data until it completes) and {_size(free)} is free. Free some space and resume "
        "the export: the tiles rendered so far are kept"
    )


def _size(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _description(world: World, plan: ExportPlan, identity: Mapping[str, Any]) -> str:
    """Provenance stored in the file; a function of the job, so a resume writes the same."""
    return json.dumps(
        {
            "software": "Infinity Canvas",
            "seed": world.seed,
            "world_rect": list(plan.rect.as_tuple()),
            "scale": plan.job.scale,
            "model_sha256": identity["model"],
            "edits": identity["edits"],
        }
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
